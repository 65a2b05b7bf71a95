"""Correlation by the CloudEvents standard: ``correlationid`` and ``causationid`` on what the
loom emits and replies, the reply path, malformed values, and ids that replay identically."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import (
    ActivityInboundInterceptor,
    Interceptor,
    Replayer,
    StartActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

with workflow.unsafe.imports_passed_through():
    # hypothesis reads the working directory when imported: not in the workflow sandbox.
    from hypothesis import given
    from hypothesis import strategies as st

from flows.correlated import CorrelatedWorkflow

from bridge._reply import REPLY_ROUTE, reply_invocation, reply_target
from bridge.actions import ActionKind, Invocation
from bridge.events import (
    CAUSATION,
    CAUSATION_ID,
    CORRELATION,
    CORRELATION_ID,
    MAX_LINK_BYTES,
    Event,
    link_value,
)
from bridge.sidecar.replies import reply_event
from bridge.testing import loom_worker
from bridge.workflow import PUBLISH_ACTIVITY, PublishRequest, PublishResult

# --- pure logic --------------------------------------------------------------------------------


def ev(**extensions: Any) -> Event:
    return Event(id="e-1", source="test://s", type="x.happened", extensions=extensions)


@given(st.text(min_size=1, max_size=MAX_LINK_BYTES // 4))
def test_a_short_nonempty_string_links(value: str) -> None:
    assert link_value(value) == value


@pytest.mark.parametrize(
    "value",
    [None, "", 7, ["a"], {"a": 1}, "x" * (MAX_LINK_BYTES + 1), "é" * (MAX_LINK_BYTES // 2 + 1)],
)
def test_malformed_values_do_not_link(value: Any) -> None:
    assert link_value(value) is None


def test_a_value_of_exactly_the_bound_links_and_surrogates_are_measured() -> None:
    assert link_value("x" * MAX_LINK_BYTES) == "x" * MAX_LINK_BYTES
    # A lone surrogate takes 3 bytes (surrogatepass): measured, never an exception.
    assert link_value("\ud800" * (MAX_LINK_BYTES // 3 + 1)) is None


def test_the_standard_names_win_over_the_deprecated_ones() -> None:
    both = ev(**{CORRELATION_ID: "flow", CORRELATION: "wf", CAUSATION_ID: "c", CAUSATION: "old"})
    assert (both.correlation, both.causation) == ("flow", "c")
    legacy = ev(**{CORRELATION: "wf", CAUSATION: "old"})
    assert (legacy.correlation, legacy.causation) == ("wf", "old")
    malformed = ev(**{CORRELATION_ID: "", CAUSATION_ID: 3, CAUSATION: "old"})
    assert (malformed.correlation, malformed.causation) == (None, "old")


def test_reply_path_legacy_address_then_correlation_of_a_reply() -> None:
    assert reply_target(ev(**{CORRELATION: "order-1"})) == "order-1"
    assert reply_target(ev(**{CORRELATION_ID: "order-1", CAUSATION_ID: "cmd-1"})) == "order-1"
    # Not a reply: names no cause. Or a malformed correlation: ignored for linking.
    assert reply_target(ev(**{CORRELATION_ID: "order-1"})) is None
    assert reply_target(ev(**{CORRELATION_ID: "", CAUSATION_ID: "cmd-1"})) is None
    assert reply_target(ev(**{CORRELATION_ID: "x" * 2000, CAUSATION_ID: "c"})) is None
    inv = reply_invocation(ev(**{CORRELATION_ID: "order-1", CAUSATION_ID: "cmd-1"}))
    assert inv is not None and (inv.route, inv.workflow_id) == (REPLY_ROUTE, "order-1")


def _update(event: Event) -> Invocation:
    return Invocation(
        kind=ActionKind.UPDATE_WITH_START, route="quote", event=event, workflow_id="quote-9",
        reply_topic="replies", reply_type="quote.given", request_id="r-1",
    )


def test_an_update_reply_names_its_request_by_both_names() -> None:
    reply = reply_event(_update(ev(**{CORRELATION_ID: "flow-3"})), {"ok": True}, "g")
    assert reply.extensions[CAUSATION_ID] == reply.extensions[CAUSATION] == "e-1"
    assert reply.extensions[CORRELATION_ID] == "flow-3"
    # No (or a malformed) correlation on the request: the workflow id.
    reply = reply_event(_update(ev(**{CORRELATION_ID: ""})), None, "g")
    assert reply.extensions[CORRELATION_ID] == "quote-9"


# --- in a workflow, and across a replay -------------------------------------------------------------

PUBLISHED: list[dict[str, Any]] = []
REPLAYED: list[dict[str, Any]] = []


@activity.defn(name=PUBLISH_ACTIVITY)
async def fake_publish(request: PublishRequest) -> PublishResult:
    # Stands in for the Kafka publish: this test is about the events the workflow builds.
    return PublishResult(id=request.event["id"], topic="t", partition=0, offset=0)


class _Capture(Interceptor):
    """Captures the publish requests a replayed workflow makes (the Replayer runs none)."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        return _Inbound

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return next


class _Outbound(WorkflowOutboundInterceptor):
    def start_activity(self, input: StartActivityInput) -> workflow.ActivityHandle[Any]:
        request = input.args[0]
        REPLAYED.append(request.event)  # the sandbox's own PublishRequest class
        return super().start_activity(input)


class _Inbound(WorkflowInboundInterceptor):
    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_Outbound(outbound))


@activity.defn(name=PUBLISH_ACTIVITY)
async def recording_publish(request: PublishRequest) -> PublishResult:
    PUBLISHED.append(request.event)
    return await fake_publish(request)


@pytest.mark.temporal
async def test_emitted_events_carry_correlation_and_replay_identically(
    temporal_client: Client, task_queue: str
) -> None:
    PUBLISHED.clear()
    REPLAYED.clear()
    wid = f"corr-{uuid.uuid4()}"
    first = Event(id="in-1", source="test://shop", type="order.placed",
                  extensions={CORRELATION_ID: "flow-7"})
    second = Event(id="in-2", source="test://shop", type="order.paid",
                   extensions={CORRELATION_ID: "", CAUSATION_ID: "z" * 2000})
    async with loom_worker(
        temporal_client, task_queue=task_queue, workflows=[CorrelatedWorkflow],
        activities=[recording_publish], max_cached_workflows=0,
    ):
        handle = await temporal_client.start_workflow(
            CorrelatedWorkflow.run, id=wid, task_queue=task_queue
        )
        await handle.signal("loom_event", first.to_payload())
        await handle.signal("loom_event", second.to_payload())
        await handle.result()
    published = {e["type"]: e for e in PUBLISHED}
    assert published["step.one"][CORRELATION_ID] == "flow-7"
    assert published["step.one"][CAUSATION_ID] == "in-1"
    # A malformed correlationid on the cause is ignored: the workflow id stands in.
    assert published["step.two"][CORRELATION_ID] == wid
    assert published["step.two"][CAUSATION_ID] == "in-2"
    assert published["step.three"][CORRELATION_ID] == "mine"
    assert published["step.three"][CAUSATION_ID] == "in-1"
    assert CORRELATION not in published["step.one"]  # only requests write the old name

    history = await handle.fetch_history()
    result = await Replayer(
        workflows=[CorrelatedWorkflow], interceptors=[_Capture()], namespace=temporal_client.namespace
    ).replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None
    # The same events, ids included, rebuilt by the replay.
    distinct = list({e["id"]: e for e in PUBLISHED}.values())
    assert distinct == REPLAYED
