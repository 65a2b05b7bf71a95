"""The ``Cancel`` action on the real servers: the executor's call, then through the Loom."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from flows.cancelling import Job
from kit import FAST_GROUP, eventually, loom_settings
from recorder import publish
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.worker import Worker

from bridge.actions import ActionKind, Cancel, Invocation, MissingWorkflowPolicy, Outcome
from bridge.events import Event
from bridge.exceptions import WorkflowClosedError, WorkflowNotFoundError
from bridge.kafka.deadletters import parse_deadletter
from bridge.routing import Match, Route, Router
from bridge.sidecar.loop import Loom, running
from bridge.sidecar.metrics import metric_total
from bridge.temporal.calls import TemporalExecutor
from bridge.testing import loom_worker, read_records


@pytest.fixture
async def worker(temporal_client: Client, task_queue: str) -> AsyncIterator[Worker]:
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[Job]) as running_worker:
        yield running_worker


async def start_job(client: Client, task_queue: str, mode: str = "return") -> WorkflowHandle[Any, Any]:
    return await client.start_workflow(
        Job.run, mode, id=f"job-{uuid.uuid4().hex[:10]}", task_queue=task_queue
    )


def cancel(workflow_id: str, *, event_id: str = "c-1", policy: MissingWorkflowPolicy = (
    MissingWorkflowPolicy.SKIP), reason: str = "too slow") -> Invocation:
    event = Event(id=event_id, source="/tests", type="job.cancelled")
    return Invocation(
        kind=ActionKind.CANCEL, route="cancel", event=event, workflow_id=workflow_id,
        request_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"cancel|{event.key}")),
        if_missing=policy, reason=reason,
    )


async def cancel_requests(handle: WorkflowHandle[Any, Any]) -> int:
    history = await handle.fetch_history()
    wanted = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED
    return sum(1 for e in history.events if e.event_type == wanted)


# --- the executor's call ----------------------------------------------------------------------

pytestmark = pytest.mark.temporal


async def test_cancel_reaches_the_workflow_with_its_reason_and_a_redelivery_is_harmless(
    temporal_client: Client, task_queue: str, worker: Worker
) -> None:
    executor = TemporalExecutor(temporal_client)
    handle = await start_job(temporal_client, task_queue)
    inv = cancel(handle.id)
    outcome, run_id = await executor.execute(inv)
    assert (outcome, run_id) == (Outcome.DELIVERED, handle.result_run_id)
    assert await eventually(lambda: handle.query(Job.cancel_reason), timeout=20) == "too slow"
    # Redelivered while the workflow still compensates: the server makes it a no-op.
    assert (await executor.execute(inv))[0] is Outcome.DELIVERED
    # Another cancel event for the same workflow: a no-op as well.
    assert (await executor.execute(cancel(handle.id, event_id="c-2")))[0] is Outcome.DELIVERED
    await handle.signal(Job.release)
    assert await handle.result() == "cancelled: too slow"
    # Redelivered once the workflow closed: it had been asked to cancel, so a duplicate.
    assert await executor.execute(inv) == (Outcome.DUPLICATE, handle.result_run_id)
    assert await cancel_requests(handle) == 1


async def test_a_workflow_that_ends_cancelled_takes_redeliveries_as_duplicates(
    temporal_client: Client, task_queue: str, worker: Worker
) -> None:
    executor = TemporalExecutor(temporal_client)
    handle = await start_job(temporal_client, task_queue, mode="raise")
    inv = cancel(handle.id, policy=MissingWorkflowPolicy.DEAD_LETTER)
    assert (await executor.execute(inv))[0] is Outcome.DELIVERED
    await eventually(lambda: handle.query(Job.cancel_reason), timeout=20)
    await handle.signal(Job.release)
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    assert (await handle.describe()).status.name == "CANCELED"  # type: ignore[union-attr]
    # Even under the dead-letter policy: the cancel had its effect.
    assert (await executor.execute(inv))[0] is Outcome.DUPLICATE
    assert await cancel_requests(handle) == 1


async def test_missing_workflow_follows_the_policy(temporal_client: Client) -> None:
    executor = TemporalExecutor(temporal_client)
    missing = f"job-missing-{uuid.uuid4().hex[:8]}"
    assert await executor.execute(cancel(missing)) == (Outcome.SKIPPED, None)
    with pytest.raises(WorkflowNotFoundError, match=f"cancel of workflow '{missing}'"):
        await executor.execute(cancel(missing, policy=MissingWorkflowPolicy.DEAD_LETTER))


async def test_a_workflow_closed_before_any_cancel_follows_the_policy(
    temporal_client: Client, task_queue: str, worker: Worker
) -> None:
    executor = TemporalExecutor(temporal_client)
    handle = await start_job(temporal_client, task_queue)
    await handle.signal(Job.finish)
    assert await handle.result() == "finished"
    assert await executor.execute(cancel(handle.id)) == (Outcome.SKIPPED, handle.result_run_id)
    with pytest.raises(WorkflowClosedError, match="closed \\(COMPLETED\\) before event") as info:
        await executor.execute(cancel(handle.id, policy=MissingWorkflowPolicy.DEAD_LETTER))
    assert dict(info.value.details) == {
        "workflow-status": "COMPLETED", "workflow-run-id": str(handle.result_run_id),
    }
    assert await cancel_requests(handle) == 0  # the no-op left nothing in the history


# --- through the Loom -----------------------------------------------------------------------------


def job_event(type_: str, event_id: str, workflow_id: str, why: str = "too slow") -> Event:
    return Event(id=event_id, source="test://ops", type=type_, subject=workflow_id,
                 data={"why": why}, extensions={"partitionkey": workflow_id})


@pytest.mark.kafka
async def test_cancel_events_through_the_loom(
    temporal_client: Client,
    task_queue: str,
    worker: Worker,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
) -> None:
    topic, dlq = await new_topic(), await new_topic()
    router = Router([
        Route("cancel", Match(type="job.cancelled", topic=topic),
              Cancel(workflow_id="{subject}", reason="{data.why}")),
        Route("withdraw", Match(type="job.withdrawn", topic=topic),
              Cancel(workflow_id="{subject}", if_missing=MissingWorkflowPolicy.DEAD_LETTER)),
    ])
    settings = loom_settings(loom_kafka_bootstrap, [topic], dlq, kafka=FAST_GROUP)
    loom = Loom(router, temporal_client, settings)
    running_job = await start_job(temporal_client, task_queue)
    done_job = await start_job(temporal_client, task_queue)
    await done_job.signal(Job.finish)
    await done_job.result()
    missing = f"job-missing-{uuid.uuid4().hex[:8]}"
    cancel_event = job_event("job.cancelled", "c-1", running_job.id)

    def routed(outcome: str) -> float:
        return metric_total(loom.metrics.routed, outcome=outcome)

    producer = await make_producer()
    async with running(loom):
        await publish(producer, topic, [cancel_event])
        assert await eventually(
            lambda: running_job.query(Job.cancel_reason), timeout=20
        ) == "too slow"
        # The same record again (a redelivery) while the workflow still compensates.
        await publish(producer, topic, [cancel_event])
        await eventually(lambda: routed("delivered") == 2, timeout=20)
        await running_job.signal(Job.release)
        assert await running_job.result() == "cancelled: too slow"
        # Again once it closed; then cancels of a missing and of a finished workflow.
        await publish(producer, topic, [
            cancel_event,
            job_event("job.cancelled", "c-2", missing),
            job_event("job.withdrawn", "w-1", missing),
            job_event("job.withdrawn", "w-2", done_job.id),
        ])
        letters = [parse_deadletter(r) for r in await read_records(
            loom_kafka_bootstrap, dlq, count=2)]
        await eventually(lambda: routed("duplicate") + routed("skipped") == 2, timeout=20)
    assert await cancel_requests(running_job) == 1
    assert routed("delivered") == 2
    assert routed("duplicate") == 1
    assert routed("skipped") == 1
    # Two workflow ids: dispatched concurrently, dead-lettered in either order.
    by_reason = {d.info["reason"]: d for d in letters}
    assert sorted(by_reason) == ["workflow-closed", "workflow-not-found"]
    assert {d.info["route"] for d in letters} == {"withdraw"}
    assert by_reason["workflow-closed"].info["workflow-status"] == "COMPLETED"
    assert by_reason["workflow-closed"].record.key == done_job.id.encode()
    assert await cancel_requests(done_job) == 0
