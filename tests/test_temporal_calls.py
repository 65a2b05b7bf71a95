"""TemporalExecutor against the real dev server, and error classification."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import temporalio.api.common.v1 as common_pb
import temporalio.api.errordetails.v1 as errordetails_pb
from flows.temporal_calls_flows import ClosingInbox, InboxWorkflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import SearchAttributeKey, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import PayloadCodec
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from bridge.actions import (
    ActionKind,
    ClosedWorkflowPolicy,
    Invocation,
    MissingWorkflowPolicy,
    Outcome,
)
from bridge.dev import EmbeddedTemporal, free_port
from bridge.events import EVENT_SIGNAL, EVENT_UPDATE, Event
from bridge.exceptions import (
    BadInputError,
    NamespaceUnavailableError,
    PayloadCodecError,
    PayloadTooLargeError,
    PermanentTemporalError,
    SignalLimitError,
    TransientTemporalError,
    WorkflowClosedError,
    WorkflowNotFoundError,
)
from bridge.temporal.calls import TemporalExecutor, typed_search_attributes
from bridge.temporal.closed import QUERY_ATTEMPTS, ClosedRun, ClosedRuns
from bridge.temporal.errors import classify_error
from bridge.testing import loom_worker

ROUTE = "test-route"


#: Calls that start no workflow.
_NO_START = (ActionKind.SIGNAL, ActionKind.CANCEL)
#: Calls that carry the event as a payload (a cancel request carries its reason alone).
WITH_PAYLOAD = [kind for kind in ActionKind if kind is not ActionKind.CANCEL]


def invocation(
    kind: ActionKind,
    workflow_id: str,
    task_queue: str,
    *,
    event_id: str = "e1",
    data: Any = None,
    **overrides: Any,
) -> Invocation:
    event = Event(id=event_id, source="/tests", type="test.happened", data=data or {"n": 1})
    name = {
        ActionKind.SIGNAL_WITH_START: EVENT_SIGNAL,
        ActionKind.SIGNAL: EVENT_SIGNAL,
        ActionKind.UPDATE_WITH_START: EVENT_UPDATE,
        ActionKind.START: None,
        ActionKind.CANCEL: None,
    }[kind]
    values: dict[str, Any] = {
        "kind": kind,
        "route": ROUTE,
        "event": event,
        "workflow_id": workflow_id,
        "workflow_type": None if kind in _NO_START else "InboxWorkflow",
        "task_queue": None if kind in _NO_START else task_queue,
        "name": name,
        "args": (event.to_payload(),),
        "request_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{ROUTE}|{event.key}|{workflow_id}")),
        "update_id": f"upd-{event_id}" if kind is ActionKind.UPDATE_WITH_START else None,
    }
    if kind is ActionKind.START:
        values["id_conflict_policy"] = WorkflowIDConflictPolicy.FAIL
    values.update(overrides)
    return Invocation(**values)


@pytest.fixture
def workflow_id() -> str:
    return f"wf-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def worker(temporal_client: Client, task_queue: str) -> AsyncIterator[Worker]:
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[InboxWorkflow]) as w:
        yield w


@pytest.fixture
def executor(temporal_client: Client) -> TemporalExecutor:
    return TemporalExecutor(temporal_client)


async def closed_port_client() -> Client:
    # lazy: connecting happens at the first call, which is what a restarted sidecar sees.
    return await Client.connect(f"127.0.0.1:{free_port()}", lazy=True)


# --- signal-with-start ----------------------------------------------------------------------


@pytest.mark.temporal
async def test_signal_with_start_starts_then_signals(
    executor: TemporalExecutor, worker: Worker, workflow_id: str, task_queue: str
) -> None:
    first = await executor.execute(
        invocation(ActionKind.SIGNAL_WITH_START, workflow_id, task_queue)
    )
    second = await executor.execute(
        invocation(ActionKind.SIGNAL_WITH_START, workflow_id, task_queue, event_id="e2")
    )

    assert first[0] is Outcome.DELIVERED
    assert second == (Outcome.DELIVERED, first[1])  # same run, signalled
    handle = executor.client.get_workflow_handle(workflow_id)
    assert await handle.query(InboxWorkflow.received) == ["e1", "e2"]


@pytest.mark.temporal
async def test_redelivered_signal_with_start_signals_once(
    executor: TemporalExecutor, worker: Worker, workflow_id: str, task_queue: str
) -> None:
    inv = invocation(ActionKind.SIGNAL_WITH_START, workflow_id, task_queue)

    results = [await executor.execute(inv) for _ in range(3)]
    await executor.execute(
        invocation(ActionKind.SIGNAL_WITH_START, workflow_id, task_queue, event_id="e2")
    )

    assert set(results) == {(Outcome.DELIVERED, results[0][1])}
    handle = executor.client.get_workflow_handle(workflow_id)
    # The server dropped the repeats (same request id): the workflow saw e1 once.
    assert await handle.query(InboxWorkflow.received) == ["e1", "e2"]


def closing_invocation(workflow_id: str, task_queue: str, event_id: str, type: str = "t",
                       **overrides: Any) -> Invocation:
    event = Event(id=event_id, source="/tests", type=type)
    return invocation(ActionKind.SIGNAL_WITH_START, workflow_id, task_queue, event_id=event_id,
                      workflow_type="ClosingInbox", args=(event.to_payload(),), **overrides)


@pytest.mark.temporal
async def test_closed_workflow_tells_a_redelivery_from_a_late_event(
    temporal_client: Client, workflow_id: str, task_queue: str
) -> None:
    executor = TemporalExecutor(temporal_client, closed_query_timeout=timedelta(seconds=5))
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[ClosingInbox]):
        _, run_id = await executor.execute(closing_invocation(workflow_id, task_queue, "e1"))
        await executor.execute(closing_invocation(workflow_id, task_queue, "end", "finish"))
        assert await temporal_client.get_workflow_handle(workflow_id).result() == 2

        # Redelivered: the closed workflow's inbox saw it (answered by replay): a duplicate.
        again = await executor.execute(closing_invocation(workflow_id, task_queue, "e1"))
        # Never seen: a late event, dead-lettered by default with the workflow's status...
        with pytest.raises(WorkflowClosedError, match="COMPLETED") as caught:
            await executor.execute(closing_invocation(workflow_id, task_queue, "late"))
        # ...or skipped (counted) under if_closed=skip.
        skipped = await executor.execute(closing_invocation(
            workflow_id, task_queue, "late", if_closed=ClosedWorkflowPolicy.SKIP))
        # What the sidecar asked (all digests, once per closed run), a person may ask too.
        handle = temporal_client.get_workflow_handle(workflow_id)
        assert await handle.query(ClosingInbox.loom_seen, args=["/tests", "e1"]) is True
        assert await handle.query(ClosingInbox.loom_seen, args=["/tests", "late"]) is False
    assert again == (Outcome.DUPLICATE, run_id)
    assert caught.value.reason == "workflow-closed"
    assert not caught.value.retriable
    assert caught.value.details["workflow-status"] == "COMPLETED"
    assert caught.value.details["workflow-run-id"] == run_id
    assert skipped == (Outcome.LATE, run_id)
    # No second run was started for the closed id.
    description = await temporal_client.get_workflow_handle(workflow_id).describe()
    assert description.run_id == run_id


def test_answers_of_closed_runs_are_kept_within_a_bound() -> None:
    runs = ClosedRuns(max_identities=5)
    runs.put("r1", ClosedRun("COMPLETED", frozenset({"a", "b", "c"})))
    runs.put("r2", ClosedRun("FAILED", frozenset()))
    assert runs.get("r1") is not None and runs.get("r2") is not None
    runs.put("r3", ClosedRun("COMPLETED", frozenset({"d", "e"})))  # 3 + 1 + 2 > 5
    assert runs.get("r1") is None
    assert runs.get("r2") == ClosedRun("FAILED", frozenset())
    assert runs.get("r3") is not None


@pytest.mark.temporal
async def test_closed_workflow_that_cannot_answer_makes_the_event_late(
    temporal_client: Client, workflow_id: str, task_queue: str
) -> None:
    executor = TemporalExecutor(temporal_client, closed_query_timeout=timedelta(seconds=1))
    other = f"{workflow_id}-plain"
    async with loom_worker(temporal_client, task_queue=task_queue,
                      workflows=[ClosingInbox, InboxWorkflow]):
        # A workflow that is not a LoomWorkflow has no loom_seen query...
        await executor.execute(invocation(ActionKind.SIGNAL_WITH_START, other, task_queue))
        await executor.client.get_workflow_handle(other).signal(InboxWorkflow.finish)
        await executor.client.get_workflow_handle(other).result()
        # ...and a LoomWorkflow that failed is asked once its worker is gone.
        await executor.execute(closing_invocation(workflow_id, task_queue, "e1"))
        await executor.execute(closing_invocation(workflow_id, task_queue, "boom", "fail"))
        with pytest.raises(WorkflowFailureError):
            await temporal_client.get_workflow_handle(workflow_id).result()
        with pytest.raises(WorkflowClosedError, match="COMPLETED") as not_loom:
            await executor.execute(invocation(ActionKind.SIGNAL_WITH_START, other, task_queue))
    started = asyncio.get_running_loop().time()
    with pytest.raises(WorkflowClosedError, match="FAILED") as no_worker:
        await executor.execute(closing_invocation(workflow_id, task_queue, "e1"))
    waited = asyncio.get_running_loop().time() - started
    # Even a redelivery is "late" when nobody can say: dead-lettered, never dropped.
    assert "no answer" in str(not_loom.value) and "no answer" in str(no_worker.value)
    assert no_worker.value.details["workflow-status"] == "FAILED"
    # Bounded by the query timeout (1 s, asked QUERY_ATTEMPTS times), not the 30 s default.
    assert waited < QUERY_ATTEMPTS * 1 + 5


@pytest.mark.temporal
async def test_signal_with_start_carries_memo_search_attributes_and_headers(
    temporal_client: Client, worker: Worker, workflow_id: str, task_queue: str
) -> None:
    traceparent = temporal_client.data_converter.payload_converter.to_payload("00-abc-def-01")
    executor = TemporalExecutor(
        temporal_client, header_hook=lambda inv: {"traceparent": traceparent}
    )
    inv = invocation(
        ActionKind.SIGNAL_WITH_START,
        workflow_id,
        task_queue,
        memo={"customer": "c-7"},
        search_attributes={"LoomOrderId": "o-42", "LoomAmount": 12.5},
    )

    await executor.execute(inv)

    handle = temporal_client.get_workflow_handle(workflow_id)
    description = await handle.describe()
    assert await description.memo() == {"customer": "c-7"}
    assert (
        description.typed_search_attributes.get(SearchAttributeKey.for_keyword("LoomOrderId"))
        == "o-42"
    )
    assert (
        description.typed_search_attributes.get(SearchAttributeKey.for_float("LoomAmount")) == 12.5
    )
    history = await handle.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    assert started.header.fields["traceparent"] == traceparent
    signalled = next(
        e for e in history.events if e.HasField("workflow_execution_signaled_event_attributes")
    )
    assert (
        signalled.workflow_execution_signaled_event_attributes.header.fields["traceparent"]
        == traceparent
    )


class MarkingCodec(PayloadCodec):
    """Wraps each payload in another one tagged ``binary/marked``."""

    async def encode(self, payloads: Sequence[common_pb.Payload]) -> list[common_pb.Payload]:
        return [
            common_pb.Payload(metadata={"encoding": b"binary/marked"}, data=p.SerializeToString())
            for p in payloads
        ]

    async def decode(self, payloads: Sequence[common_pb.Payload]) -> list[common_pb.Payload]:
        out = []
        for p in payloads:
            inner = common_pb.Payload()
            inner.ParseFromString(p.data)
            out.append(inner)
        return out


@pytest.mark.temporal
async def test_payload_codec_of_the_client_applies(
    temporal_client: Client, workflow_id: str, task_queue: str
) -> None:
    converter = dataclasses.replace(temporal_client.data_converter, payload_codec=MarkingCodec())
    config = temporal_client.config()
    config["data_converter"] = converter
    client = Client(**config)
    async with loom_worker(client, task_queue=task_queue, workflows=[InboxWorkflow]):
        await TemporalExecutor(client).execute(
            invocation(ActionKind.SIGNAL_WITH_START, workflow_id, task_queue)
        )
        handle = client.get_workflow_handle(workflow_id)
        assert await handle.query(InboxWorkflow.received) == ["e1"]  # the worker decoded it
        history = await handle.fetch_history()
    signalled = next(
        e for e in history.events if e.HasField("workflow_execution_signaled_event_attributes")
    )
    payload = signalled.workflow_execution_signaled_event_attributes.input.payloads[0]
    assert payload.metadata["encoding"] == b"binary/marked"


# --- start-only -----------------------------------------------------------------------------


@pytest.mark.temporal
async def test_start_twice_is_duplicate(
    executor: TemporalExecutor, worker: Worker, workflow_id: str, task_queue: str
) -> None:
    inv = invocation(ActionKind.START, workflow_id, task_queue)

    outcome, run_id = await executor.execute(inv)
    assert outcome is Outcome.DELIVERED
    # Redelivery while running: the server answers the same request id as a retry of the
    # first start (started=true, same run), so it is "delivered" again, yet a no-op.
    assert await executor.execute(inv) == (Outcome.DELIVERED, run_id)
    # Another request id for the same running id: refused (FAIL) or joined (USE_EXISTING).
    other = dataclasses.replace(inv, request_id=str(uuid.uuid4()))
    assert await executor.execute(other) == (Outcome.DUPLICATE, run_id)
    joined = dataclasses.replace(other, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)
    assert await executor.execute(joined) == (Outcome.DUPLICATE, run_id)

    handle = executor.client.get_workflow_handle(workflow_id)
    await handle.signal(InboxWorkflow.finish)
    await handle.result()
    # And once the workflow is closed, under REJECT_DUPLICATE.
    assert await executor.execute(inv) == (Outcome.DUPLICATE, run_id)
    assert await executor.execute(other) == (Outcome.DUPLICATE, run_id)
    history = await handle.fetch_history()
    assert (
        sum(e.HasField("workflow_execution_started_event_attributes") for e in history.events) == 1
    )


# --- signal-only ----------------------------------------------------------------------------


@pytest.mark.temporal
async def test_redelivered_signal_signals_once(
    executor: TemporalExecutor, worker: Worker, workflow_id: str, task_queue: str
) -> None:
    await executor.client.start_workflow(InboxWorkflow.run, id=workflow_id, task_queue=task_queue)
    inv = invocation(ActionKind.SIGNAL, workflow_id, task_queue)

    assert await executor.execute(inv) == (Outcome.DELIVERED, None)
    assert await executor.execute(inv) == (Outcome.DELIVERED, None)
    await executor.execute(invocation(ActionKind.SIGNAL, workflow_id, task_queue, event_id="e2"))

    handle = executor.client.get_workflow_handle(workflow_id)
    assert await handle.query(InboxWorkflow.received) == ["e1", "e2"]


@pytest.mark.temporal
async def test_signal_to_missing_workflow_follows_policy(
    executor: TemporalExecutor, workflow_id: str, task_queue: str
) -> None:
    skip = invocation(
        ActionKind.SIGNAL, workflow_id, task_queue, if_missing=MissingWorkflowPolicy.SKIP
    )
    assert await executor.execute(skip) == (Outcome.SKIPPED, None)

    dead = invocation(ActionKind.SIGNAL, workflow_id, task_queue)
    with pytest.raises(WorkflowNotFoundError, match="NOT_FOUND") as caught:
        await executor.execute(dead)
    assert isinstance(caught.value.__cause__, RPCError)
    assert not caught.value.retriable


@pytest.mark.temporal
async def test_signal_to_closed_workflow_follows_policy(
    executor: TemporalExecutor, worker: Worker, workflow_id: str, task_queue: str
) -> None:
    handle = await executor.client.start_workflow(
        InboxWorkflow.run, id=workflow_id, task_queue=task_queue
    )
    await handle.signal(InboxWorkflow.finish)
    await handle.result()

    skip = invocation(
        ActionKind.SIGNAL, workflow_id, task_queue, if_missing=MissingWorkflowPolicy.SKIP
    )
    assert await executor.execute(skip) == (Outcome.SKIPPED, None)
    with pytest.raises(WorkflowNotFoundError, match="already completed"):
        await executor.execute(invocation(ActionKind.SIGNAL, workflow_id, task_queue))


@pytest.mark.temporal
@pytest.mark.parametrize("kind", list(ActionKind))
async def test_missing_namespace_is_retried_never_dead_lettered(
    temporal_client: Client, workflow_id: str, task_queue: str, kind: ActionKind
) -> None:
    # A namespace deleted (or failed over) under a running sidecar: every event would be
    # dead-lettered as "NOT_FOUND"; it is a transient condition of the cluster instead.
    executor = TemporalExecutor(temporal_client, namespace=f"ns-{uuid.uuid4().hex[:8]}")
    inv = invocation(kind, workflow_id, task_queue, if_missing=MissingWorkflowPolicy.SKIP)

    with pytest.raises(NamespaceUnavailableError, match="NOT_FOUND") as caught:
        await executor.execute(inv)
    assert caught.value.retriable
    assert caught.value.reason == "namespace-unavailable"
    assert isinstance(caught.value.__cause__, RPCError)


class FailingCodec(PayloadCodec):
    """A codec whose key service is down: every call raises, as a KMS outage does."""

    def __init__(self) -> None:
        self.calls = 0

    async def encode(self, payloads: Sequence[common_pb.Payload]) -> list[common_pb.Payload]:
        self.calls += 1
        raise ConnectionError("kms unreachable")

    async def decode(self, payloads: Sequence[common_pb.Payload]) -> list[common_pb.Payload]:
        self.calls += 1
        raise ConnectionError("kms unreachable")


@pytest.mark.temporal
@pytest.mark.parametrize("kind", WITH_PAYLOAD)
async def test_payload_codec_failure_is_transient(
    temporal_client: Client, workflow_id: str, task_queue: str, kind: ActionKind
) -> None:
    codec = FailingCodec()
    config = temporal_client.config()
    config["data_converter"] = dataclasses.replace(
        temporal_client.data_converter, payload_codec=codec
    )
    executor = TemporalExecutor(Client(**config))

    with pytest.raises(PayloadCodecError, match="kms unreachable") as caught:
        await executor.execute(invocation(kind, workflow_id, task_queue))
    assert caught.value.retriable
    assert caught.value.reason == "codec"
    assert isinstance(caught.value.__cause__, ConnectionError)
    assert codec.calls >= 1
    with pytest.raises(RPCError) as missing:  # nothing reached the server
        await temporal_client.get_workflow_handle(workflow_id).describe()
    assert missing.value.status is RPCStatusCode.NOT_FOUND


# --- update-with-start ----------------------------------------------------------------------


@pytest.mark.temporal
async def test_update_with_start_returns_result_once(
    executor: TemporalExecutor, worker: Worker, workflow_id: str, task_queue: str
) -> None:
    inv = invocation(ActionKind.UPDATE_WITH_START, workflow_id, task_queue, event_id="u1")

    first = await executor.execute(inv)
    again = await executor.execute(inv)
    other = await executor.execute(
        invocation(ActionKind.UPDATE_WITH_START, workflow_id, task_queue, event_id="u2")
    )

    assert first == (Outcome.DELIVERED, {"echo": "u1", "n": 1})
    assert again == first  # same update id on the same run: the first result, handler not rerun
    assert other == (Outcome.DELIVERED, {"echo": "u2", "n": 2})
    handle = executor.client.get_workflow_handle(workflow_id)
    assert await handle.query(InboxWorkflow.update_count) == 2


@pytest.mark.temporal
async def test_update_with_start_on_closed_id_with_reject_duplicate(
    executor: TemporalExecutor, worker: Worker, workflow_id: str, task_queue: str
) -> None:
    inv = invocation(
        ActionKind.UPDATE_WITH_START,
        workflow_id,
        task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
    )
    first = await executor.execute(inv)
    handle = executor.client.get_workflow_handle(workflow_id)
    await handle.signal(InboxWorkflow.finish)
    await handle.result()

    # The same request again: the closed run answers its update id with the stored outcome.
    assert await executor.execute(inv) == first
    # A new request for the closed id is refused: late (this workflow cannot say otherwise).
    late = dataclasses.replace(inv, update_id="upd-late", request_id=str(uuid.uuid4()))
    with pytest.raises(WorkflowClosedError, match="COMPLETED"):
        await executor.execute(late)


# --- limits and failures --------------------------------------------------------------------


@pytest.mark.parametrize("kind", WITH_PAYLOAD)
async def test_oversized_payload_is_refused_before_any_call(
    kind: ActionKind, workflow_id: str
) -> None:
    # A client on a closed port: any call would fail as transient, so the size check ran first.
    executor = TemporalExecutor(await closed_port_client())
    inv = invocation(kind, workflow_id, "tq", data={"blob": "x" * (3 * 1024 * 1024)})

    with pytest.raises(PayloadTooLargeError, match=r"\d+ bytes, over the limit of 2097152 bytes"):
        await executor.execute(inv)


@pytest.mark.temporal
async def test_payload_limit_is_configurable_and_counts_memo(
    temporal_client: Client, workflow_id: str, task_queue: str
) -> None:
    executor = TemporalExecutor(temporal_client, payload_limit=10_000)
    inv = invocation(
        ActionKind.SIGNAL_WITH_START, workflow_id, task_queue, memo={"m": "y" * 10_000}
    )

    with pytest.raises(PayloadTooLargeError):
        await executor.execute(inv)
    with pytest.raises(RPCError) as caught:
        await temporal_client.get_workflow_handle(workflow_id).describe()
    assert caught.value.status is RPCStatusCode.NOT_FOUND  # nothing was started


@pytest.mark.parametrize("kind", list(ActionKind))
async def test_unreachable_server_is_transient(kind: ActionKind, workflow_id: str) -> None:
    executor = TemporalExecutor(await closed_port_client())

    with pytest.raises(TransientTemporalError, match="UNAVAILABLE") as caught:
        await executor.execute(invocation(kind, workflow_id, "tq"))
    assert caught.value.retriable
    assert caught.value.__cause__ is not None


@pytest.mark.temporal
async def test_signal_cap_and_stopped_server() -> None:
    # Own server: a lowered per-run signal cap, and one the test may stop.
    async with EmbeddedTemporal(
        dynamic_config={"history.maximumSignalsPerExecution": "3"}
    ) as server:
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        executor = TemporalExecutor(client, signal_limit_retry_s=42.0)
        workflow_id, task_queue = f"wf-{uuid.uuid4().hex[:8]}", f"tq-{uuid.uuid4().hex[:8]}"
        for n in range(3):
            inv = invocation(
                ActionKind.SIGNAL_WITH_START, workflow_id, task_queue, event_id=f"e{n}"
            )
            assert (await executor.execute(inv))[0] is Outcome.DELIVERED
        over = invocation(ActionKind.SIGNAL_WITH_START, workflow_id, task_queue, event_id="e3")
        with pytest.raises(SignalLimitError, match="exceeded workflow execution limit") as caught:
            await executor.execute(over)
        # Retried for the configured time (the run may continue as new), then dead-lettered.
        assert caught.value.retriable
        assert caught.value.retry_for == 42.0

        await server.stop()
        with pytest.raises(TransientTemporalError) as down:
            await executor.execute(over)
        assert down.value.retriable
        assert isinstance(down.value.__cause__, RPCError | RuntimeError)


# --- classification (pure) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (RPCStatusCode.UNAVAILABLE, TransientTemporalError),
        (RPCStatusCode.DEADLINE_EXCEEDED, TransientTemporalError),
        (RPCStatusCode.RESOURCE_EXHAUSTED, TransientTemporalError),
        (RPCStatusCode.ABORTED, TransientTemporalError),
        (RPCStatusCode.INTERNAL, TransientTemporalError),
        (RPCStatusCode.UNKNOWN, TransientTemporalError),
        (RPCStatusCode.CANCELLED, TransientTemporalError),
        (RPCStatusCode.UNAUTHENTICATED, TransientTemporalError),
        (RPCStatusCode.INVALID_ARGUMENT, PermanentTemporalError),
        (RPCStatusCode.PERMISSION_DENIED, TransientTemporalError),
        # Namespace not active (failover), workflow task failing, no poller: all pass.
        (RPCStatusCode.FAILED_PRECONDITION, TransientTemporalError),
        (RPCStatusCode.NOT_FOUND, PermanentTemporalError),
        (RPCStatusCode.UNIMPLEMENTED, PermanentTemporalError),
        (RPCStatusCode.OUT_OF_RANGE, PermanentTemporalError),
    ],
)
def test_classify_rpc_status(status: RPCStatusCode, expected: type[Exception]) -> None:
    err = classify_error(RPCError("boom", status, b""))
    assert type(err) is expected
    assert str(err) == f"{status.name}: boom"


@pytest.mark.parametrize(
    "status", [RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.RESOURCE_EXHAUSTED]
)
def test_classify_signal_cap(status: RPCStatusCode) -> None:
    err = classify_error(
        RPCError("exceeded workflow execution limit for signal events", status, b"")
    )
    assert type(err) is SignalLimitError
    # Retried: the cap clears once the run continues as new (for a bounded time, see the
    # dispatcher), then dead-lettered with this reason.
    assert err.retriable
    assert err.reason == "signal-limit"


def rpc_error(status: RPCStatusCode, message: str, *details: Any) -> RPCError:
    """An RPCError as the server sends it: status, message and typed details."""
    grpc_status = common_pb.GrpcStatus(code=int(status), message=message)
    for detail in details:
        grpc_status.details.add().Pack(detail)
    return RPCError(message, status, grpc_status.SerializeToString())


@pytest.mark.parametrize(
    "err",
    [
        rpc_error(RPCStatusCode.NOT_FOUND, "Namespace nope is not found.",
                  errordetails_pb.NamespaceNotFoundFailure(namespace="nope")),
        rpc_error(RPCStatusCode.FAILED_PRECONDITION,
                  "Namespace: ns is active in cluster: a, while current cluster b is a standby "
                  "cluster.", errordetails_pb.NamespaceNotActiveFailure(
                      namespace="ns", current_cluster="b", active_cluster="a")),
        rpc_error(RPCStatusCode.UNAVAILABLE, "Namespace unavailable",
                  errordetails_pb.NamespaceUnavailableFailure(namespace="ns")),
        rpc_error(RPCStatusCode.FAILED_PRECONDITION, "Namespace has invalid state: Deleted.",
                  errordetails_pb.NamespaceInvalidStateFailure(namespace="ns")),
    ],
    ids=["not-found", "not-active", "unavailable", "invalid-state"],
)
def test_classify_namespace_problems_as_transient(err: RPCError) -> None:
    loom_err = classify_error(err)
    assert type(loom_err) is NamespaceUnavailableError
    assert loom_err.retriable
    assert loom_err.reason == "namespace-unavailable"


def test_classify_failed_precondition_without_namespace_details_as_transient() -> None:
    for err in (
        rpc_error(RPCStatusCode.FAILED_PRECONDITION,
                  "Unable to perform workflow execution update due to Workflow Task in failed "
                  "state.", errordetails_pb.WorkflowNotReadyFailure()),
        rpc_error(RPCStatusCode.FAILED_PRECONDITION,
                  "no poller seen for task queue recently, worker may be down"),
    ):
        loom_err = classify_error(err)
        assert type(loom_err) is TransientTemporalError, err
        assert loom_err.reason == "temporal-transient"
    # A workflow that is missing (not the namespace) keeps its meaning.
    missing = rpc_error(RPCStatusCode.NOT_FOUND, "workflow not found for ID: x",
                        errordetails_pb.NotFoundFailure())
    assert type(classify_error(missing)) is PermanentTemporalError


def test_classify_leaves_other_errors_alone() -> None:
    assert classify_error(ValueError("bug")) is None
    assert classify_error(RuntimeError("other")) is None


def test_typed_search_attributes() -> None:
    when = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    typed = typed_search_attributes(
        {"k": "v", "i": 3, "f": 1.5, "b": True, "d": when, "l": ["a", "b"]}
    )
    assert {(p.key.name, p.key.indexed_value_type.name, str(p.value)) for p in typed} == {
        ("k", "KEYWORD", "v"),
        ("i", "INT", "3"),
        ("f", "DOUBLE", "1.5"),
        ("b", "BOOL", "True"),
        ("d", "DATETIME", str(when)),
        ("l", "KEYWORD_LIST", "['a', 'b']"),
    }
    with pytest.raises(BadInputError, match="'x'"):
        typed_search_attributes({"x": {"nested": 1}})
    with pytest.raises(BadInputError, match="timezone"):
        typed_search_attributes({"d": datetime(2026, 1, 2)})


async def test_concurrent_executes_share_one_executor_on_closed_port(workflow_id: str) -> None:
    # The executor keeps no per-call state: concurrent failures stay independent.
    executor = TemporalExecutor(await closed_port_client())
    results = await asyncio.gather(
        *(
            executor.execute(invocation(ActionKind.SIGNAL, f"{workflow_id}-{n}", "tq"))
            for n in range(5)
        ),
        return_exceptions=True,
    )
    assert all(isinstance(r, TransientTemporalError) for r in results)
