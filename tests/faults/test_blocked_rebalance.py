"""A rebalance while the loop is blocked in the middle of a fetched batch.

aiokafka revokes and re-assigns partitions in its coordinator task while the loop awaits;
here the loop waits in ``submit`` (the dispatcher is full: fan-out routes count invocations,
not records, and the Temporal calls are held). A second member joins and leaves meanwhile,
so every partition is revoked and comes back, restarting at its committed offset. The rest
of the old batch must not be taken under the new assignment: 0 lost, 0 duplicated, and the
loop alive. The sidecar runs in this process, so the test can hold its calls and read its
assignment epochs.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from kit import FAST_GROUP, check_loop, eventually, loom_settings
from recorder import RECORDER, query_all
from temporalio.client import Client
from temporalio.worker import Worker

from bridge.actions import Invocation, Outcome, SignalWithStart
from bridge.kafka.binding import encode
from bridge.kafka.clients import start_client, stop_client
from bridge.routing import Match, Route, Router
from bridge.sidecar.loop import Loom, running
from bridge.sidecar.metrics import metric_total
from bridge.temporal.calls import TemporalExecutor
from faults.harness import Row, dead_letters, settle, unique
from faults.workload import EVENT_TYPE, Step, expected_by_workflow, step_events

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.temporal]

class HeldExecutor(TemporalExecutor):
    """The real executor, whose calls wait until ``gate`` opens (a Temporal that stalls)."""

    def __init__(self, *args: Any, gate: asyncio.Event, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = gate

    async def execute(self, inv: Invocation) -> tuple[Outcome, Any]:  # type: ignore[override]
        await self.gate.wait()
        return await super().execute(inv)


def fan_out_router(task_queue: str) -> Router:
    """Every step event signals two workflows: ``fault-<entity>`` and ``audit-<entity>``."""
    return Router([
        Route(name, match=Match(type=EVENT_TYPE), data=Step,
              action=SignalWithStart(workflow=RECORDER, task_queue=task_queue,
                                     workflow_id=prefix + "{data.entity}"))
        for name, prefix in (("step", "fault-"), ("audit", "audit-"))
    ])


class _Member(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.assigned = asyncio.Event()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        pass

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if assigned:
            self.assigned.set()


async def _until(condition: Callable[[], bool], what: str, loom: Loom, timeout: float = 30) -> None:
    def holds() -> bool:
        check_loop(loom)  # the loop dying fails the wait at once
        return condition()

    await eventually(holds, timeout=timeout, interval=0.02, what=what)


async def _delivered(client: Client, expected: dict[str, list[str]], loom: Loom) -> None:
    """Until every workflow holds its ids; fails at once if the loop died."""

    async def all_there() -> bool:
        check_loop(loom)
        seen = await query_all(client, expected)
        return all(len(set(seen[w])) >= len(ids) for w, ids in expected.items())

    await eventually(all_there, timeout=60, interval=0.2, what="every event delivered")


@pytest.mark.timeout(120)
async def test_rebalance_while_a_batch_is_blocked(
    temporal_client: Client,
    recorder_worker: Worker,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    task_queue: str,
    fault_results: Callable[[Row], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = time.monotonic()
    topic, dlq = await new_topic(partitions=2), await new_topic()
    events = step_events(unique("t12"), entities=8, per_entity=5)
    expected = expected_by_workflow(events)
    expected |= {"audit-" + w.removeprefix("fault-"): ids for w, ids in expected.items()}
    producer = await make_producer()
    # Entities 0-3 in partition 0, 4-7 in partition 1: 20 records each, all there before the
    # loom starts, so its first fetch holds more records than the dispatcher takes.
    sends = []
    for event in events:
        key, value, headers = encode(event)
        partition = int(str(event.data["entity"]).rsplit("-", 1)[1]) // 4
        sends.append(await producer.send(topic, value=value, key=key, headers=headers, partition=partition))
    await asyncio.gather(*sends)

    group = unique("g12")
    settings = loom_settings(
        loom_kafka_bootstrap, [topic], dlq, group_id=group, kafka=FAST_GROUP,
        # 2 calls at once, 4 invocations held: a fetch of 4 records (8 invocations) blocks
        # in submit at its third record.
        dispatch={"max_in_flight": 2, "max_buffered": 4, "retry_initial_s": 0.05,
                  "retry_max_s": 0.5},
    )
    gate = asyncio.Event()
    executor = HeldExecutor(temporal_client, gate=gate)
    loom = Loom(fan_out_router(task_queue), temporal_client, settings, executor=executor)
    async with running(loom):
        await _until(lambda: loom.dispatcher.full and loom.tracker.in_flight() == 3,
                     "the loop blocked in submit at the third record of its batch", loom)
        taken_before = metric_total(loom.metrics.consumed)

        # A second member joins (every partition revoked; this loom keeps one), then leaves
        # (revoked again; both come back). The loop is blocked in submit all along.
        member = _Member()
        other = AIOKafkaConsumer(bootstrap_servers=loom_kafka_bootstrap, group_id=group,
                                 enable_auto_commit=False, auto_offset_reset="earliest",
                                 client_id=f"intruder-{uuid.uuid4().hex[:6]}", **FAST_GROUP)
        other.subscribe([topic], listener=member)
        joined = asyncio.create_task(start_client(other))  # start() waits for its assignment
        await asyncio.wait_for(member.assigned.wait(), 30)
        await joined
        await _until(lambda: len(loom.health.assigned) == 1, "the loom owning one partition", loom)
        await stop_client(other)  # leaves the group: the loom gets both back
        await _until(lambda: len(loom.health.assigned) == 2, "the loom owning both again", loom)
        assert loom.tracker.in_flight() == 0  # the revocations forgot the old generation
        assert loom.dispatcher.full  # and the loop is still blocked in the old batch

        gate.set()  # Temporal answers again: the loop resumes the old batch
        await _delivered(temporal_client, expected, loom)
        result, lag = await settle(temporal_client, expected, bootstrap=loom_kafka_bootstrap,
                                   group=group, topic=topic, timeout=60)
        committed = [metric_total(loom.metrics.committed, partition=str(p)) for p in (0, 1)]
        alive = loom.error is None and loom.health.running
        consumed = metric_total(loom.metrics.consumed)
    letters = await dead_letters(loom_kafka_bootstrap, dlq)
    # Had the rest of the old batch been taken under the new assignment, the fetch from the
    # committed offset would have moved the partition's offsets back.
    moved_back = "tracking the partition again" in caplog.text
    fault_results(Row.measured(
        "13. rebalance while the loop is blocked mid-batch (fan-out, dispatcher full)", result,
        letters, started,
        f"a member joined and left while submit waited; {taken_before:.0f} records fetched "
        f"before, {consumed:.0f} in all (the rest of the old batch was dropped and fetched "
        f"again from the commit); loop alive: {alive}",
        passed=result.clean and alive and not moved_back and lag == 0 and committed == [20, 20]
        and not letters,
        sent=len(events),
    ))
    assert alive, loom.error
    assert not moved_back, "the rest of the old batch was taken under the new assignment"
    assert result.clean, result
    assert lag == 0 and committed == [20, 20]
    assert not letters
