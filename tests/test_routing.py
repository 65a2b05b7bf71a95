"""Routes and the router: matching, templates, references, invocations, the type index."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from flows.routing_flows import OrderSaga, Other
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from bridge._ids import request_id, update_id
from bridge.actions import (
    ActionKind,
    Cancel,
    MissingWorkflowPolicy,
    Signal,
    SignalWithStart,
    StartWorkflow,
    UnmatchedPolicy,
    UpdateWithStart,
)
from bridge.events import CORRELATION, EVENT_SIGNAL, EVENT_UPDATE, Event
from bridge.exceptions import DataValidationError, RouteDefinitionError, TemplateError
from bridge.routing import REPLY_ROUTE, Match, Route, Router

# --- what names resolve from: the real workflows in flows.routing_flows, and a non-workflow ---


class NotAWorkflow:
    async def run(self) -> None:
        pass


class Item(BaseModel):
    sku: str
    qty: int


class OrderPlaced(BaseModel):
    order_id: str
    amount: int
    items: list[Item] = []
    note: str | None = None
    customer: Item | None = None


def ev(type_: str = "order.placed", **kw: Any) -> Event:
    kw.setdefault("id", "e-1")
    kw.setdefault("source", "shop/eu")
    return Event(type=type_, **kw)


def swc(**kw: Any) -> SignalWithStart:
    kw.setdefault("workflow", OrderSaga)
    kw.setdefault("task_queue", "orders")
    kw.setdefault("workflow_id", "order-{data.order_id}")
    return SignalWithStart(**kw)


def route(name: str, match: Match | str, **kw: Any) -> Route:
    data = kw.pop("data", None)
    return Route(name, match, swc(**kw), data=data)


ORDER = {"order_id": "o-42", "amount": 120, "items": [{"sku": "A", "qty": 2}]}


# --- matching -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("match", "matching", "other"),
    [
        (Match(type="order.placed"), "order.placed", "order.placed.v2"),
        (Match(type_prefix="order."), "order.paid", "orders.paid"),
        (Match(type_glob="order.*.failed"), "order.payment.failed", "order.payment.ok"),
        (Match(type_glob="order.*"), "order.x.y", "order"),
        (Match(type_glob="order.placed"), "order.placed", "order.placedx"),
        (Match(type_glob="order.?"), "order.a", "order.ab"),
        (Match(type_glob="Order.*"), "Order.a", "order.a"),  # case-sensitive
    ],
)
def test_type_conditions(match: Match, matching: str, other: str) -> None:
    router = Router([Route("r", match, swc(workflow_id="{id}"))])
    assert [r.name for r in router.match(ev(matching))] == ["r"]
    assert router.match(ev(other)) == []
    assert match.matches(ev(matching))
    assert not match.matches(ev(other))


def test_source_subject_and_extensions() -> None:
    router = Router(
        [
            Route("src", Match(source="shop/eu"), swc(workflow_id="{id}")),
            Route("src-glob", Match(source="shop/*"), swc(workflow_id="{id}")),
            Route("subj", Match(subject="orders/o-1"), swc(workflow_id="{id}")),
            Route("subj-glob", Match(subject="orders/*"), swc(workflow_id="{id}")),
            Route("tenant", Match(extensions={"tenant": "acme"}), swc(workflow_id="{id}")),
            Route("any-tenant", Match(extensions={"tenant": "*"}), swc(workflow_id="{id}")),
            Route("flag", Match(extensions={"urgent": "true"}), swc(workflow_id="{id}")),
        ]
    )

    def names(event: Event) -> list[str]:
        return [r.name for r in router.match(event)]

    assert names(ev(source="shop/eu")) == ["src", "src-glob"]
    assert names(ev(source="shop/us")) == ["src-glob"]
    assert names(ev(source="shop/eu2")) == ["src-glob"]  # exact is exact, not a prefix
    assert names(ev(source="bank", subject="orders/o-1")) == ["subj", "subj-glob"]
    assert names(ev(source="bank", subject="orders/o-2")) == ["subj-glob"]
    assert names(ev(source="bank")) == []  # no subject: subject conditions never match
    assert names(ev(source="bank", extensions={"tenant": "acme"})) == ["tenant", "any-tenant"]
    assert names(ev(source="bank", extensions={"tenant": "umbrella"})) == ["any-tenant"]
    assert names(ev(source="bank", extensions={"urgent": True})) == ["flag"]
    assert names(ev(source="bank", extensions={"urgent": False})) == []


def test_all_conditions_must_hold() -> None:
    match = Match(type="order.placed", source="shop/*", extensions={"tenant": "acme"})
    assert match.matches(ev(extensions={"tenant": "acme"}))
    assert not match.matches(ev(extensions={"tenant": "other"}))
    assert not match.matches(ev(source="bank", extensions={"tenant": "acme"}))
    assert not match.matches(ev("order.paid", extensions={"tenant": "acme"}))


def test_fan_out_in_declaration_order_across_index_buckets() -> None:
    routes = [
        Route("catch-all", Match(source="shop/*"), swc(workflow_id="{id}")),
        Route("glob", Match(type_glob="*.placed"), swc(workflow_id="{id}")),
        Route("exact", Match(type="order.placed"), swc(workflow_id="{id}")),
        Route("prefix", Match(type_prefix="order"), swc(workflow_id="{id}")),
        Route("exact-2", "order.placed", swc(workflow_id="{source}")),
        Route("prefix-glob", Match(type_glob="order.*"), swc(workflow_id="{id}")),
        Route("elsewhere", Match(type="order.paid"), swc(workflow_id="{id}")),
    ]
    router = Router(routes)
    expected = ["catch-all", "glob", "exact", "prefix", "exact-2", "prefix-glob"]
    assert [r.name for r in router.match(ev())] == expected
    invocations = router.resolve(ev(data=ORDER))
    assert [i.route for i in invocations] == expected
    assert len({i.request_id for i in invocations}) == len(expected)


def test_unmatched_event_resolves_to_nothing() -> None:
    router = Router([route("placed", "order.placed", data=OrderPlaced)])
    assert router.match(ev("order.cancelled")) == []
    assert router.resolve(ev("order.cancelled", data={"bad": 1})) == []
    assert router.unmatched is UnmatchedPolicy.DEAD_LETTER
    assert Router(unmatched=UnmatchedPolicy.SKIP).unmatched is UnmatchedPolicy.SKIP
    assert [p.value for p in UnmatchedPolicy] == ["dead-letter", "skip", "fail"]


def test_predicate_on_typed_data() -> None:
    seen: list[Any] = []

    def big(order: OrderPlaced) -> bool:
        seen.append(order)
        return order.amount >= 100

    router = Router(
        [
            route("big", Match(type="order.placed", where=big), data=OrderPlaced),
            route("all", "order.placed", data=OrderPlaced),
        ]
    )
    assert [i.route for i in router.resolve(ev(data=ORDER))] == ["big", "all"]
    assert [i.route for i in router.resolve(ev(data={**ORDER, "amount": 5}))] == ["all"]
    assert all(isinstance(order, OrderPlaced) for order in seen)
    # Route.resolve returns None when the predicate is false.
    assert router.routes[0].resolve(ev(data={**ORDER, "amount": 5})) is None
    assert router.routes[0].resolve(ev(data=ORDER)) is not None
    assert router.routes[0].resolve(ev("order.paid", data=ORDER)) is None


def test_predicate_false_everywhere_is_unmatched() -> None:
    router = Router([route("never", Match(type="order.placed", where=lambda d: False))])
    assert router.match(ev(data=ORDER)) != []
    assert router.resolve(ev(data=ORDER)) == []


def test_predicate_that_raises_is_bad_input() -> None:
    router = Router([route("boom", Match(type="order.placed", where=lambda d: d["nope"]))])
    with pytest.raises(DataValidationError, match=r"'boom'.*KeyError"):
        router.resolve(ev(data=ORDER))


def test_bad_input_names_the_route_that_refused_it() -> None:
    # The dead-letter record's loom-dlq-route header and log line come from the error's route.
    router = Router([
        route("any", "order.placed"),
        route("placed", "order.placed", data=OrderPlaced),
        route("templated", "order.paid", workflow_id="order-{data.missing}"),
    ])
    with pytest.raises(DataValidationError) as refused:
        router.resolve(ev(data={"order_id": "o-1", "amount": "lots"}))
    assert refused.value.route == "placed"
    with pytest.raises(TemplateError) as missing:
        router.resolve(ev("order.paid", data=ORDER))
    assert missing.value.route == "templated"


def test_match_declaration_errors() -> None:
    with pytest.raises(RouteDefinitionError, match="at most one"):
        Match(type="a", type_prefix="a.")
    with pytest.raises(RouteDefinitionError, match="non-empty"):
        Match(type="")
    with pytest.raises(RouteDefinitionError, match="core attribute"):
        Match(extensions={"subject": "x"})
    with pytest.raises(RouteDefinitionError, match="callable"):
        Match(where="amount > 3")  # type: ignore[arg-type]


# --- data validation --------------------------------------------------------------------------


def test_data_validated_from_dict_and_bytes() -> None:
    r = route("placed", "order.placed", data=OrderPlaced, args=lambda e, d: (d,))
    from_dict = r.resolve(ev(data=ORDER))
    from_bytes = r.resolve(ev(data=b'{"order_id": "o-42", "amount": 120}'))
    assert from_dict is not None
    assert from_bytes is not None
    assert from_dict.workflow_id == from_bytes.workflow_id == "order-o-42"
    assert isinstance(from_bytes.args[0], OrderPlaced)


def test_invalid_data_raises_with_pydantic_summary() -> None:
    r = route("placed", "order.placed", data=OrderPlaced)
    with pytest.raises(DataValidationError, match=r"'placed'.*OrderPlaced.*amount") as info:
        r.resolve(ev(data={"order_id": "o-1", "amount": "lots"}))
    assert "items" not in str(info.value)
    with pytest.raises(DataValidationError, match="OrderPlaced"):
        r.resolve(ev(data=b"not json"))
    with pytest.raises(DataValidationError):
        r.resolve(ev(data=None))


# --- templates --------------------------------------------------------------------------------


def test_template_roots() -> None:
    when = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    event = ev(
        subject="orders/o-42",
        time=when,
        datacontenttype="application/json",
        dataschema="urn:schema",
        extensions={"tenant": "acme", "n": 7},
        data=ORDER,
    )
    template = (
        "{id}|{source}|{type}|{subject}|{time}|{specversion}|{datacontenttype}|{dataschema}"
        "|{data.order_id}|{data.items.0.sku}|{data.amount:05d}|{ext.tenant}|{ext.n}|{{lit}}"
    )
    for data in (None, OrderPlaced):
        inv = Route("t", "order.placed", swc(workflow_id=template), data=data).resolve(event)
        assert inv is not None
        assert inv.workflow_id == (
            "e-1|shop/eu|order.placed|orders/o-42|2025-01-02T03:04:05+00:00|1.0|"
            "application/json|urn:schema|o-42|A|00120|acme|7|{lit}"
        )


@pytest.mark.parametrize(
    ("template", "event"),
    [
        ("{subject}", ev(data=ORDER)),
        ("{ext.tenant}", ev(data=ORDER)),
        ("{data.customer}", ev(data=ORDER)),
        ("{data.nope}", ev(data=ORDER)),
        ("{data.items.3}", ev(data=ORDER)),
        ("{data.items.x}", ev(data=ORDER)),
        ("{data.order_id.x}", ev(data=ORDER)),
        ("{data.order_id}", ev(data=b"raw bytes")),
        ("{data.order_id}", ev(data=None)),
        ("{data.amount:%Y}", ev(data=ORDER)),
    ],
)
def test_missing_field_at_runtime_raises_template_error(template: str, event: Event) -> None:
    r = Route("t", "order.placed", swc(workflow_id=template))
    with pytest.raises(TemplateError, match="route 't'"):
        r.resolve(event)


def test_missing_model_field_that_is_none_raises_template_error() -> None:
    r = Route("t", "order.placed", swc(workflow_id="{data.note}"), data=OrderPlaced)
    with pytest.raises(TemplateError, match=r"data\.note"):
        r.resolve(ev(data=ORDER))


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{subjet}", "unknown field"),
        ("{tenant}", "unknown field"),
        ("{}", "positional"),
        ("{0}", "positional"),
        ("{data[0]}", "index brackets"),
        ("{ext.a.b}", "ext.<name>"),
        ("{ext.Tenant}", "ext.<name>"),
        ("{id.x}", "has no fields"),
        ("{data.__class__}", "bad path step"),
        ("{data._secret}", "bad path step"),
        ("order-{id", "order-"),
        ("constant", "references no field"),
        ("{id:{width}}", "nested"),
        ("{data.order_idd}", "OrderPlaced has no field 'order_idd'"),
        ("{data.customer.name}", "Item has no field 'name'"),
    ],
)
def test_bad_template_fails_at_construction(template: str, message: str) -> None:
    with pytest.raises(RouteDefinitionError, match="route 'bad'") as info:
        Route("bad", "order.placed", swc(workflow_id=template), data=OrderPlaced)
    assert message in str(info.value)


def test_model_paths_beyond_models_are_not_checked() -> None:
    class Loose(BaseModel):
        model_config = ConfigDict(extra="allow")
        meta: dict[str, Any] = {}

    Route("ok", "x", swc(workflow_id="{data.meta.anything}"), data=Loose)
    Route("ok2", "x", swc(workflow_id="{data.whatever}"), data=Loose)
    Route("ok3", "x", swc(workflow_id="{data.items.0.sku}"), data=OrderPlaced)
    with pytest.raises(RouteDefinitionError, match="memo\\['k'\\]"):
        Route("bad", "x", swc(memo={"k": "{data.nope}"}), data=OrderPlaced)


def test_memo_and_search_attributes() -> None:
    r = route(
        "placed",
        "order.placed",
        data=OrderPlaced,
        memo={"amount": "{data.amount}", "label": "order {data.order_id}", "n": lambda e, d: 1},
        search_attributes={"OrderId": "{data.order_id}", "Tenant": "{ext.tenant}"},
    )
    inv = r.resolve(ev(data=ORDER, extensions={"tenant": "acme"}))
    assert inv is not None
    # A single-field template keeps the value's type; anything else renders a string.
    assert inv.memo == {"amount": 120, "label": "order o-42", "n": 1}
    assert inv.search_attributes == {"OrderId": "o-42", "Tenant": "acme"}
    with pytest.raises(TemplateError, match=r"search_attributes\['Tenant'\]"):
        r.resolve(ev(data=ORDER))


def test_callables_for_values_and_arguments() -> None:
    r = route(
        "placed",
        "order.placed",
        data=OrderPlaced,
        workflow_id=lambda e, d: f"{e.source}:{d.order_id}",
        args=lambda e, d: [d.order_id, d.amount],
        start_args=lambda e, d: (d.model_dump(),),
    )
    inv = r.resolve(ev(data=ORDER))
    assert inv is not None
    assert inv.workflow_id == "shop/eu:o-42"
    assert inv.args == ("o-42", 120)
    assert inv.start_args == (OrderPlaced.model_validate(ORDER).model_dump(),)
    assert (
        r.describe()["workflow_id"] == "test_callables_for_values_and_arguments.<locals>.<lambda>"
    )


@pytest.mark.parametrize(
    "kw",
    [
        {"workflow_id": lambda e, d: 1 / 0},
        {"workflow_id": lambda e, d: 42},
        {"workflow_id": lambda e, d: ""},
        {"args": lambda e, d: "not-a-tuple"},
        {"start_args": lambda e, d: d["missing"]},
    ],
)
def test_failing_callables_raise_template_error(kw: dict[str, Any]) -> None:
    r = route("cb", "order.placed", **kw)
    with pytest.raises(TemplateError, match="route 'cb'"):
        r.resolve(ev(data=ORDER))


# --- workflow and handler references ------------------------------------------------------------


@pytest.mark.parametrize("ref", ["OrderSaga", OrderSaga, OrderSaga.run])
def test_workflow_refs_resolve_to_type_name(ref: Any) -> None:
    assert route("r", "x", workflow=ref).workflow_type == "OrderSaga"
    assert route("r", "x", workflow=Other).workflow_type == "Other"


def test_handler_refs_resolve_to_names() -> None:
    assert route("r", "x").handler == EVENT_SIGNAL
    assert route("r", "x", signal=OrderSaga.payment).handler == "payment-received"
    assert route("r", "x", signal="custom").handler == "custom"
    upd = Route(
        "u",
        "x",
        UpdateWithStart(workflow=OrderSaga, task_queue="q", workflow_id="{id}"),
    )
    assert upd.handler == EVENT_UPDATE
    upd = Route(
        "u",
        "x",
        UpdateWithStart(
            workflow=OrderSaga.run, task_queue="q", workflow_id="{id}", update=OrderSaga.reserve
        ),
    )
    assert upd.handler == "reserve-stock"
    sig = Route("s", "x", Signal(workflow_id="{subject}", signal=Other.poke))
    assert sig.handler == "poke"
    assert sig.workflow_type is None


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (SignalWithStart(workflow=NotAWorkflow, task_queue="q", workflow_id="{id}"), "defn"),
        (SignalWithStart(workflow=NotAWorkflow.run, task_queue="q", workflow_id="{id}"), "defn"),
        (SignalWithStart(workflow="", task_queue="q", workflow_id="{id}"), "empty"),
        (SignalWithStart(workflow=OrderSaga, task_queue="", workflow_id="{id}"), "task_queue"),
        (
            SignalWithStart(
                workflow=OrderSaga, task_queue="q", workflow_id="{id}", signal=OrderSaga.reserve
            ),
            "it is an @workflow.update handler",
        ),
        (
            SignalWithStart(
                workflow=OrderSaga, task_queue="q", workflow_id="{id}", signal=Other.poke
            ),
            "workflow 'OrderSaga' has no signal 'poke'",
        ),
        (
            UpdateWithStart(
                workflow=OrderSaga, task_queue="q", workflow_id="{id}", update=OrderSaga.payment
            ),
            "it is an @workflow.signal handler",
        ),
        (
            UpdateWithStart(workflow=OrderSaga, task_queue="q", workflow_id="{id}", reply_type="t"),
            "reply_topic",
        ),
        (Signal(workflow_id="{id}", signal=NotAWorkflow.run), "@workflow.signal"),
        ("signal it", "action must be"),
    ],
)
def test_bad_references_fail_at_construction(action: Any, message: str) -> None:
    with pytest.raises(RouteDefinitionError, match="route 'bad'") as info:
        Route("bad", "x", action)
    assert message in str(info.value)


def test_bad_route_names_and_models() -> None:
    with pytest.raises(RouteDefinitionError, match="name"):
        Route("", "x", swc())
    with pytest.raises(RouteDefinitionError, match="reserved"):
        Route(REPLY_ROUTE, "x", swc())
    with pytest.raises(RouteDefinitionError, match="pydantic"):
        Route("r", "x", swc(), data=dict)  # type: ignore[arg-type]


# --- invocations ----------------------------------------------------------------------------------


def test_signal_with_start_invocation() -> None:
    event = ev(data=ORDER)
    inv = route("placed", "order.placed", data=OrderPlaced).resolve(event)
    assert inv is not None
    assert inv.kind is ActionKind.SIGNAL_WITH_START
    assert (inv.workflow_id, inv.workflow_type, inv.task_queue) == (
        "order-o-42",
        "OrderSaga",
        "orders",
    )
    assert inv.name == EVENT_SIGNAL
    assert inv.args == (event.to_payload(),)
    assert inv.start_args == ()
    assert inv.id_reuse_policy is WorkflowIDReusePolicy.REJECT_DUPLICATE
    assert inv.id_conflict_policy is WorkflowIDConflictPolicy.USE_EXISTING
    assert inv.update_id is None
    assert inv.reply_topic is None
    assert inv.event is event
    assert inv.route == "placed"


def test_start_signal_and_update_invocations() -> None:
    event = ev(data=ORDER)
    start = Route(
        "start",
        "order.placed",
        StartWorkflow(workflow=OrderSaga, task_queue="q", workflow_id="{source}/{id}"),
    ).resolve(event)
    assert start is not None
    assert (start.kind, start.name, start.workflow_id) == (ActionKind.START, None, "shop/eu/e-1")
    assert start.args == (event.to_payload(),)
    assert start.id_conflict_policy is WorkflowIDConflictPolicy.FAIL

    sig = Route(
        "sig",
        "order.placed",
        Signal(workflow_id="order-{data.order_id}", if_missing=MissingWorkflowPolicy.SKIP),
    ).resolve(event)
    assert sig is not None
    assert (sig.kind, sig.workflow_type, sig.task_queue) == (ActionKind.SIGNAL, None, None)
    assert sig.if_missing is MissingWorkflowPolicy.SKIP
    assert sig.name == EVENT_SIGNAL

    upd_route = Route(
        "upd",
        "order.placed",
        UpdateWithStart(
            workflow=OrderSaga, task_queue="q", workflow_id="{id}", reply_topic="replies"
        ),
    )
    upd = upd_route.resolve(event)
    assert upd is not None
    assert upd.kind is ActionKind.UPDATE_WITH_START
    assert upd.reply_topic == "replies"
    assert upd.reply_type == "order.placed.reply"
    assert upd.update_id == update_id("upd", event) != upd.request_id
    again = upd_route.resolve(ev(data={"other": "data"}))
    assert again is not None
    assert again.update_id == upd.update_id


class Cancelled(BaseModel):
    order_id: str
    reason: str | None = None


def test_cancel_invocation() -> None:
    event = ev("order.cancelled", data={"order_id": "o-42", "reason": "changed my mind"})
    r = Route("cancel", "order.cancelled", Cancel(workflow_id="order-{data.order_id}"))
    inv = r.resolve(event)
    assert inv is not None
    assert (inv.kind, inv.workflow_id, inv.workflow_type, inv.task_queue, inv.name) == (
        ActionKind.CANCEL, "order-o-42", None, None, None,
    )
    assert inv.reason == "order.cancelled from shop/eu (id e-1)"
    assert inv.if_missing is MissingWorkflowPolicy.SKIP  # cancelling a finished workflow: no-op
    assert inv.request_id == request_id("cancel", event)
    assert inv.args == ()
    assert r.describe()["action"] == "cancel"


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("{data.reason}", "changed my mind"),
        ("the customer asked", "the customer asked"),  # a constant: no field needed
        ("{{literal}} braces", "{literal} braces"),
        ("{type} by {source}", "order.cancelled by shop/eu"),
        (lambda event, data: f"{data.order_id} withdrawn", "o-42 withdrawn"),
    ],
)
def test_cancel_reason(reason: Any, expected: str) -> None:
    r = Route(
        "cancel",
        "order.cancelled",
        Cancel(workflow_id="order-{data.order_id}", reason=reason,
               if_missing=MissingWorkflowPolicy.DEAD_LETTER),
        data=Cancelled,
    )
    inv = r.resolve(ev("order.cancelled", data={"order_id": "o-42", "reason": "changed my mind"}))
    assert inv is not None
    assert inv.reason == expected
    assert inv.if_missing is MissingWorkflowPolicy.DEAD_LETTER


def test_cancel_reason_errors() -> None:
    with pytest.raises(RouteDefinitionError, match=r"route 'c': reason: .*'nope'"):
        Route("c", "x", Cancel(workflow_id="{id}", reason="{data.nope}"), data=Cancelled)
    with pytest.raises(RouteDefinitionError, match="route 'c': reason: template"):
        Route("c", "x", Cancel(workflow_id="{id}", reason="unclosed {"))
    with pytest.raises(RouteDefinitionError, match="route 'c': if_missing must be"):
        Route("c", "x", Cancel(workflow_id="{id}", if_missing="skip"))  # type: ignore[arg-type]
    r = Route("c", "x", Cancel(workflow_id="{id}", reason="{data.reason}"), data=Cancelled)
    with pytest.raises(TemplateError, match="route 'c': reason"):  # None at runtime
        r.resolve(ev("x", data={"order_id": "o"}))
    wrong = Route("c", "x", Cancel(workflow_id="{id}", reason=lambda event, data: 42))
    with pytest.raises(TemplateError, match="reason must be a str, got 42"):
        wrong.resolve(ev("x"))


def test_request_id_is_deterministic() -> None:
    r = route("placed", "order.placed")
    first = r.resolve(ev(data=ORDER))
    second = r.resolve(ev(data={**ORDER, "amount": 1}))
    assert first is not None
    assert second is not None
    assert first.request_id == second.request_id
    # The namespace is pinned: changing it would change every id, and redeliveries across an
    # upgrade would no longer be recognised by the server.
    namespace = uuid.UUID("6f1d3c1e-55a8-5c3e-9a0e-6c6f6f6d0001")
    expected = uuid.uuid5(namespace, "placed\x1fshop/eu\x1fe-1")
    assert first.request_id == str(expected) == request_id("placed", ev())
    assert request_id("placed", ev(id="e-2")) != first.request_id
    assert request_id("placed", ev(source="shop/us")) != first.request_id
    assert request_id("other", ev()) != first.request_id
    # The separator keeps ("a/b", "c") and ("a", "b/c") apart.
    assert request_id("r", ev(source="a/b", id="c")) != request_id("r", ev(source="a", id="b/c"))


# --- router -----------------------------------------------------------------------------------------


def test_router_add_routes_and_duplicates() -> None:
    router = Router([route("a", "x")])
    added = router.add(route("b", "x"))
    assert added.name == "b"
    assert [r.name for r in router.routes] == ["a", "b"] == [r.name for r in router]
    assert len(router) == 2
    with pytest.raises(RouteDefinitionError, match="'a'"):
        router.add(route("a", "y"))
    with pytest.raises(RouteDefinitionError, match="'a'"):
        Router([route("a", "x"), route("a", "y")])
    with pytest.raises(RouteDefinitionError, match="expected a Route"):
        router.add("a")  # type: ignore[arg-type]


def test_describe() -> None:
    router = Router(
        [
            route(
                "placed",
                Match(type="order.placed", source="shop/*", extensions={"tenant": "acme"}),
                data=OrderPlaced,
                signal=OrderSaga.payment,
            ),
            Route("poke", Match(type_prefix="order."), Signal(workflow_id="{subject}")),
        ]
    )
    assert router.describe() == [
        {
            "name": "placed",
            "match": "type=order.placed source=shop/* ext.tenant=acme",
            "data": "OrderPlaced",
            "action": "signal-with-start",
            "workflow_type": "OrderSaga",
            "workflow_id": "order-{data.order_id}",
            "task_queue": "orders",
            "handler": "payment-received",
            "coalesce": "off: not a LoomWorkflow with its own inbox handlers",
        },
        {
            "name": "poke",
            "match": "type^=order.",
            "data": None,
            "action": "signal",
            "workflow_type": None,
            "workflow_id": "{subject}",
            "task_queue": None,
            "handler": EVENT_SIGNAL,
            "coalesce": "off: signal route (coalesce=True turns it on)",
        },
    ]
    assert Match().describe() == "*"


def test_reply_events_signal_the_correlated_workflow() -> None:
    router = Router([route("placed", "order.placed", data=OrderPlaced)])
    reply = ev("payment.authorized", data={"ok": True}, extensions={CORRELATION: "order-o-42"})
    [inv] = router.resolve(reply)
    assert inv.kind is ActionKind.SIGNAL
    assert inv.route == REPLY_ROUTE
    assert inv.workflow_id == "order-o-42"
    assert inv.name == EVENT_SIGNAL
    assert inv.args == (reply.to_payload(),)
    assert inv.if_missing is MissingWorkflowPolicy.DEAD_LETTER
    assert inv.request_id == request_id(REPLY_ROUTE, reply)
    # A route that applies wins over the correlation; disabled replies are unmatched.
    routed = ev(data=ORDER, extensions={CORRELATION: "order-o-42"})
    assert [i.route for i in router.resolve(routed)] == ["placed"]
    assert Router(replies=False).resolve(reply) == []
    assert router.resolve(ev("x", extensions={CORRELATION: ""})) == []


def test_models_validate_once_per_event_across_routes() -> None:
    calls: list[Any] = []

    class Counted(BaseModel):
        order_id: str

        def model_post_init(self, context: Any) -> None:
            calls.append(self)

    router = Router([route(f"r{i}", "order.placed", data=Counted) for i in range(3)])
    assert len(router.resolve(ev(data=ORDER))) == 3
    assert len(calls) == 1


# --- the index agrees with a linear scan ------------------------------------------------------------

_SEGMENTS = st.sampled_from(["a", "b", "ab", "order", ""])
_TYPES = st.lists(_SEGMENTS, min_size=1, max_size=4).map(".".join).filter(bool)


@st.composite
def _matches(draw: st.DrawFn) -> Match:
    kind = draw(st.sampled_from(["type", "type_prefix", "type_glob", "none"]))
    source = draw(st.none() | st.sampled_from(["s1", "s*"]))
    if kind == "none":
        return Match(source=source)
    if kind == "type_glob":
        base = draw(_TYPES)
        pattern = "".join(
            draw(st.sampled_from([char, char, "*", "?"])) if char != "." else char for char in base
        )
        return Match(type_glob=pattern + draw(st.sampled_from(["", "*"])), source=source)
    value = draw(_TYPES)
    if kind == "type_prefix":
        return Match(type_prefix=value[: draw(st.integers(1, len(value)))], source=source)
    return Match(type=value, source=source)


@settings(max_examples=300, deadline=None)
@given(
    matches=st.lists(_matches(), max_size=25),
    events=st.lists(
        st.tuples(_TYPES, st.sampled_from(["s1", "s2", "s10"])), min_size=1, max_size=10
    ),
)
def test_index_equals_linear_scan(matches: list[Match], events: list[tuple[str, str]]) -> None:
    routes = [Route(f"r{i}", m, swc(workflow_id="{id}")) for i, m in enumerate(matches)]
    router = Router(routes)
    for event_type, source in events:
        event = ev(event_type, source=source)
        assert router.match(event) == [r for r in routes if r.match.matches(event)]


class _Box(BaseModel):
    inner: dict[str, Any]


def test_template_steps_through_each_kind_of_value_the_same_on_every_event() -> None:
    # The step rule is found once per type (bridge/_templates.py): mappings that are no dict,
    # sequences, models and scalars must keep their own rule on the first and the later events.
    from collections import OrderedDict
    from types import MappingProxyType

    from bridge._templates import compile_template

    cases: list[tuple[str, Any, str | None]] = [
        ("{data.a.b}", {"a": MappingProxyType({"b": "proxy"})}, "proxy"),
        ("{data.a.b}", {"a": OrderedDict(b="ordered")}, "ordered"),
        ("{data.a.1}", {"a": ("x", "tuple")}, "tuple"),
        ("{data.a.1}", {"a": ["x", "list"]}, "list"),
        ("{data.a.inner.k}", {"a": _Box(inner={"k": "model"})}, "model"),
        ("{data.a.b}", {"a": "a string has no fields"}, None),
        ("{data.a.b}", {"a": 7}, None),
        ("{data.a.x}", {"a": ["no", "name"]}, None),
    ]
    for _ in range(2):
        for source, data, expected in cases:
            template = compile_template(source)
            event = Event(id="1", source="s", type="t", data=data)
            if expected is None:
                with pytest.raises(TemplateError):
                    template.render(event, data)
            else:
                assert template.render(event, data) == expected
