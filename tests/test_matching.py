"""Routes bound to topics: ``Match(topic=...)``, the index by topic and type, unconsumed topics."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.actions import SignalWithStart
from bridge.events import Event
from bridge.exceptions import RouteDefinitionError
from bridge.matching import MatchIndex
from bridge.routing import Match, Route, Router


def ev(type_: str = "order.placed", **kw: Any) -> Event:
    kw.setdefault("id", "e-1")
    kw.setdefault("source", "shop/eu")
    return Event(type=type_, **kw)


def route(name: str, match: Match) -> Route:
    return Route(name, match, SignalWithStart(workflow="Saga", task_queue="q", workflow_id="{id}"))


def names(router: Router, event: Event, topic: str | None) -> list[str]:
    return [r.name for r in router.match(event, topic)]


# --- declaring a binding ------------------------------------------------------------------------


def test_one_topic_several_or_globs() -> None:
    assert Match(topic="orders").topics == ("orders",)
    assert Match(topic=["orders", "returns", "orders"]).topics == ("orders", "returns")
    assert Match(topic=("orders.*",)).topics == ("orders.*",)
    assert Match().topics == ()
    assert Match(type="a", topic=["orders", "eu.*"]).describe() == "type=a topic=orders|eu.*"


@pytest.mark.parametrize("topic", ["", " ", [], (), ["orders", ""], [1], 7])
def test_a_bad_topic_is_refused_when_the_match_is_built(topic: Any) -> None:
    with pytest.raises(RouteDefinitionError, match="match: topic"):
        Match(type="a", topic=topic)


@pytest.mark.parametrize(
    ("bound", "topic", "expected"),
    [
        ("orders", "orders", True),
        ("orders", "orders2", False),
        (["orders", "returns"], "returns", True),
        ("orders.*", "orders.eu", True),
        ("orders.*", "orders", False),
        ("orders.?", "orders.eu", False),
        ("Orders", "orders", False),  # case-sensitive, as Kafka topics are
        (None, "anything", True),  # unbound: any consumed topic
    ],
)
def test_matches_checks_the_topic_it_is_given(bound: Any, topic: str, expected: bool) -> None:
    match = Match(type="order.placed", topic=bound)
    assert match.matches(ev(), topic) is expected
    assert match.matches(ev()) is True  # topic unknown: the binding is not checked
    assert match.matches(ev("order.paid"), topic) is False  # the other conditions still hold


# --- the router -----------------------------------------------------------------------------------


def test_bound_routes_match_only_their_topics_and_fan_out_keeps_declaration_order() -> None:
    router = Router([
        route("orders-exact", Match(type="order.placed", topic="orders")),
        route("any-topic", Match(type="order.placed")),
        route("orders-glob", Match(type_prefix="order.", topic="ord*")),
        route("returns", Match(type="order.placed", topic=["returns", "refunds"])),
        route("overlapping", Match(type="order.placed", topic=["orders", "or*", "o?ders"])),
        route("source", Match(source="shop/*", topic="orders")),
    ])
    event = ev()
    assert names(router, event, "orders") == [
        "orders-exact", "any-topic", "orders-glob", "overlapping", "source",
    ]
    assert names(router, event, "returns") == ["any-topic", "returns"]
    assert names(router, event, "refunds") == ["any-topic", "returns"]
    assert names(router, event, "ordinals") == ["any-topic", "orders-glob", "overlapping"]
    assert names(router, event, "elsewhere") == ["any-topic"]
    assert names(router, ev(source="other"), "orders") == [
        "orders-exact", "any-topic", "orders-glob", "overlapping",
    ]
    # Without a topic (a unit test, a tool that resolves events by hand): bindings unchecked.
    assert names(router, event, None) == [r.name for r in router.routes]


def test_resolve_takes_the_topic() -> None:
    router = Router([route("orders", Match(type="order.placed", topic="orders"))])
    assert [i.route for i in router.resolve(ev(), topic="orders")] == ["orders"]
    assert router.resolve(ev(), topic="payments") == []
    assert router.routes[0].resolve(ev(), topic="payments") is None
    assert router.routes[0].resolve(ev(), topic="orders") is not None


def test_a_route_added_after_a_lookup_is_found() -> None:
    router = Router([route("a", Match(type="x", topic="t"))])
    assert names(router, ev("x"), "t") == ["a"]
    router.add(route("b", Match(type="x", topic="t*")))
    router.add(route("c", Match(type="x")))
    assert names(router, ev("x"), "t") == ["a", "b", "c"]
    assert names(router, ev("x"), "u") == ["c"]


def test_many_topics_seen_stay_correct() -> None:
    index: MatchIndex[str] = MatchIndex()
    index.add(Match(type="x", topic="t-1"), "one")
    index.add(Match(type="x", topic="t-*"), "glob")
    for n in range(5000):  # more than the remembered topics
        expected = ["one", "glob"] if n == 1 else ["glob"]
        assert index.lookup(ev("x"), f"t-{n}") == expected


def test_unconsumed_names_each_bound_topic_that_no_consumed_topic_fits() -> None:
    router = Router([
        route("ok", Match(type="a", topic="orders")),
        route("typo", Match(type="a", topic=["orders", "ordres"])),
        route("glob-ok", Match(type="a", topic="pay*")),
        route("glob-none", Match(type="a", topic="ship*")),
        route("unbound", Match(type="a")),
    ])
    assert router.unconsumed(["orders", "payments"]) == [
        ("typo", "ordres"), ("glob-none", "ship*"),
    ]
    assert router.unconsumed(["orders", "payments", "ordres", "shipping"]) == []


# --- the index agrees with a linear scan ------------------------------------------------------------

_TOPIC_BINDINGS = st.sampled_from(
    [None, "t1", ("t1", "t2"), "t*", ("t?", "t1"), "x", ("x", "t1*")]
)


@st.composite
def _matches(draw: st.DrawFn) -> Match:
    kind = draw(st.sampled_from(["type", "type_prefix", "type_glob", "none"]))
    source = draw(st.none() | st.sampled_from(["s1", "s*"]))
    topic = draw(_TOPIC_BINDINGS)
    if kind == "none":
        return Match(source=source, topic=topic)
    value = draw(st.sampled_from(["a", "a.b", "b", "ab.a"]))
    if kind == "type_glob":
        return Match(type_glob=value + draw(st.sampled_from(["", "*", "?"])), topic=topic)
    if kind == "type_prefix":
        return Match(type_prefix=value[: draw(st.integers(1, len(value)))], topic=topic)
    return Match(type=value, source=source, topic=topic)


@settings(max_examples=300, deadline=None)
@given(
    matches=st.lists(_matches(), max_size=25),
    events=st.lists(
        st.tuples(
            st.sampled_from(["a", "a.b", "b", "ab.a", "a.bc"]),
            st.sampled_from(["s1", "s2"]),
            st.sampled_from([None, "t1", "t2", "t10", "x", "y"]),
        ),
        min_size=1,
        max_size=10,
    ),
)
def test_index_equals_linear_scan(
    matches: list[Match], events: list[tuple[str, str, str | None]]
) -> None:
    routes = [route(f"r{i}", m) for i, m in enumerate(matches)]
    router = Router(routes)
    for event_type, source, topic in events:
        event = ev(event_type, source=source)
        assert router.match(event, topic) == [r for r in routes if r.match.matches(event, topic)]
