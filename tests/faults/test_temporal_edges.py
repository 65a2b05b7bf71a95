"""Temporal-side edges of issue 12: long identities carried across continue-as-new,
update-with-start requests redelivered after the run completed or continued as new, a
sidecar SIGKILLed while the workflows it fed completed (redeliveries vs late events), and a
namespace typo.

Each scenario adds a row to the fault table (lost, duplicated, out of order, dead-lettered).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from flows.edges import BATCH_SIGNAL, LongIdentities, LongInput, LongResult, QuoteBook
from kit import (
    LoomProcess,
    committed_offsets,
    eventually,
    loom_settings,
    metric_value,
    query_when_ready,
)
from recorder import publish
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.worker import Worker

from bridge.actions import UpdateWithStart
from bridge.dev import create_topic
from bridge.events import CAUSATION, Event
from bridge.kafka.binding import decode, encode
from bridge.routing import Match, Route, Router
from bridge.settings import LoomSettings
from bridge.sidecar.loop import Loom, running
from bridge.sidecar.metrics import metric_total
from bridge.testing import loom_worker, read_records
from bridge.workflow import DEFAULT_CARRY_LIMIT
from faults.closing import EVENT_TYPE, SOURCE, WORKFLOW_PREFIX, ClosingWorkflow, closing_events
from faults.harness import (
    Row,
    Sidecars,
    dead_letters,
    fault_settings,
    settle,
    size,
    unique,
)
from faults.workload import expected_by_workflow, step_events

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.temporal]


# --- 8. long identities: the carried state stays under Temporal's blob limit -----------------


def long_event(seq: int) -> Event:
    """An event whose source and id are 200 characters each."""
    source = f"test://{'s' * 184}/source-{seq % 7}"
    return Event(id=f"{seq:010d}{'i' * 190}", source=source, type="item", data={"seq": seq})


#: Events the sender of fault 8 lets run ahead of the workflow.
WINDOW = 1_000


async def test_25000_events_with_long_identities_continue_as_new_within_the_blob_limit(
    temporal_client: Client, task_queue: str, fault_results: Callable[[Row], None]
) -> None:
    # Full keys were carried (10,000 of ~400 bytes: 4 MB, over the 2 MB blob limit): the
    # continue-as-new failed and the carried events were lost.
    started = time.monotonic()
    total, batch = 25_000, 100
    events = [long_event(n) for n in range(total)]
    assert len(events[0].source) == len(events[0].id) == 200
    # Repeats of events taken in earlier runs, within the remembered 10,000.
    repeats = [events[n] for n in range(total - 10_000, total, 5)]
    stream = [e.to_payload() for e in (*events, *repeats, Event(id="end", source="t", type="done"))]
    wid = f"long-{uuid.uuid4().hex[:8]}"
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[LongIdentities]):
        handle = await temporal_client.start_workflow(
            LongIdentities.run, LongInput(), id=wid, task_queue=task_queue,
            start_signal=BATCH_SIGNAL, start_signal_args=[stream[:batch]],
        )

        def caught_up(sent: int) -> Callable[[int], bool]:
            return lambda taken: taken >= sent - WINDOW

        for start in range(batch, len(stream), batch):
            # Paced: at most WINDOW events sent and not yet taken, so the queue stays far
            # under the carry limit and every run continues as new at its backstop. Unpaced,
            # a loaded worker found most of the stream queued, could not carry it, and took
            # it in 3 runs (a CI run under a CPU hog).
            await eventually(lambda: query_when_ready(handle, LongIdentities.taken),
                             timeout=60, until=caught_up(start),
                             what="the workflow takes what was sent", interval=0.02)
            await handle.signal(BATCH_SIGNAL, stream[start : start + batch])
        result = await asyncio.wait_for(handle.result(), 120)
        largest = 0
        async for execution in temporal_client.list_workflows(f"WorkflowId = '{wid}'"):
            history = await temporal_client.get_workflow_handle(
                wid, run_id=execution.run_id).fetch_history()
            started_event = history.events[0].workflow_execution_started_event_attributes
            largest = max(largest, started_event.input.ByteSize())
    assert result == LongResult(processed=total, out_of_order=0, duplicates=len(repeats),
                                runs=result.runs)
    # The backstop counts signals (2,000 events a run); with WINDOW + a batch queued at most
    # when it is reached, a run takes at most ~3,100 events: 9 runs or more for 25,000.
    assert result.runs >= 8, result
    # Each run's carried input, as the server stored it: under the limit the inbox keeps
    # (under Temporal's 2 MB blob limit), though batches kept coming during each rollover.
    assert largest < DEFAULT_CARRY_LIMIT
    fault_results(Row(
        "8. 25,000 events, 200-character sources and ids, through continue-as-new",
        total + len(repeats), 0, 0, result.out_of_order, 0, time.monotonic() - started,
        f"{result.runs} runs, largest carried input {largest / 1024:.0f} KB (blob limit "
        f"2,048 KB); {len(repeats):,} repeats of earlier runs' events all dropped",
        passed=True,
    ))


# --- 9. update-with-start requests redelivered ---------------------------------------------


async def test_redelivered_update_requests_are_answered_once_after_completion_and_rollover(
    temporal_client: Client,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    task_queue: str,
    fault_results: Callable[[Row], None],
) -> None:
    started = time.monotonic()
    topic, replies, dlq = await new_topic(), await new_topic(), await new_topic()
    router = Router([Route("quote", Match(type="quote.requested"), UpdateWithStart(
        workflow=QuoteBook, task_queue=task_queue, workflow_id="quote-{subject}",
        reply_topic=replies))])
    done_id, rolled_id = f"done-{uuid.uuid4().hex[:6]}", f"roll-{uuid.uuid4().hex[:6]}"

    def request(event_id: str, subject: str) -> tuple[bytes | None, bytes | None, Any]:
        return encode(Event(id=event_id, source="test://shop", type="quote.requested",
                            subject=subject, data={"qty": 3}))

    producer = await make_producer()
    sent = 0

    async def send(record: tuple[bytes | None, bytes | None, Any]) -> None:
        nonlocal sent
        key, value, headers = record
        await producer.send_and_wait(topic, value=value, key=key, headers=headers)
        sent += 1

    async def replies_so_far(count: int) -> list[Event]:
        got = [decode(r) for r in await read_records(loom_kafka_bootstrap, replies,
                                                     count=count, timeout=60)]
        assert len(got) == count, got
        return got

    first_done, first_rolled = request("q-1", done_id), request("q-2", rolled_id)
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[QuoteBook]):
        loom = Loom(router, temporal_client, loom_settings(loom_kafka_bootstrap, [topic], dlq))
        async with running(loom):
            await send(first_done)
            await send(first_rolled)
            before = await replies_so_far(2)
            first_reply = {e.extensions[CAUSATION]: e for e in before}
            done = temporal_client.get_workflow_handle(f"quote-{done_id}")
            rolled = temporal_client.get_workflow_handle(f"quote-{rolled_id}")
            await done.signal(QuoteBook.finish)
            assert await done.result() == 1
            done_run = (await done.describe()).run_id
            await rolled.signal(QuoteBook.roll)
            await wait_for_new_run(rolled, first_reply["q-2"].data["run"])
            # The same records again: a redelivery after completion, and after rollover.
            await send(first_done)
            await send(first_rolled)
            again = await replies_so_far(4)
            run_after_redelivery = (await done.describe()).run_id
            # A new request for the closed workflow's id starts a new run and is answered.
            await send(request("q-3", done_id))
            fresh = (await replies_so_far(5))[4]
            executed = await rolled.query(QuoteBook.executed)
            deadlettered = metric_total(loom.metrics.deadlettered)
    by_request = {e.extensions[CAUSATION]: e for e in again[2:]}
    for request_event in before:
        repeat = by_request[request_event.extensions[CAUSATION]]
        assert repeat.id == request_event.id  # the same reply id: consumers drop it
        assert repeat.data == request_event.data  # the first result, from its own run
    assert executed == 1  # the handler ran once in the continued chain
    assert run_after_redelivery == done_run  # no second run for the redelivery
    assert fresh.extensions[CAUSATION] == "q-3"
    assert fresh.data["run"] != done_run and fresh.data["calls"] == 1
    assert deadlettered == 0
    fault_results(Row(
        "9. update-with-start requests redelivered after completion and after continue-as-new",
        sent, 0, 0, 0, int(deadlettered), time.monotonic() - started,
        "same reply id and result, handler ran once; a new request for the closed id started "
        "a new run and was answered",
        passed=True,
    ))


async def wait_for_new_run(handle: Any, old_run: str, timeout: float = 30) -> str:
    """The id of the workflow's current run once it is not ``old_run`` (continued as new)."""

    async def current_run() -> str:
        return str((await handle.describe()).run_id)

    return await eventually(current_run, until=lambda run: run != old_run, timeout=timeout,
                            interval=0.1, what="a new run (continued as new)")


# --- 10. SIGKILL while the workflows complete: redeliveries are duplicates, late events not --


async def _all_closed(client: Client, workflow_ids: list[str], timeout: float) -> None:
    pending = set(workflow_ids)

    async def still_open() -> set[str]:
        for wid in list(pending):
            with contextlib.suppress(RPCError):
                description = await client.get_workflow_handle(wid).describe()
                if description.status is WorkflowExecutionStatus.COMPLETED:
                    pending.discard(wid)
        return pending

    await eventually(still_open, until=lambda left: not left, timeout=timeout, interval=0.2,
                     what="every workflow completed (those still open)")


async def test_sigkill_while_workflows_complete_redeliveries_count_as_duplicates(
    temporal_client: Client,
    loom_kafka_bootstrap: str,
    task_queue: str,
    sidecars: Sidecars,
    tmp_path: Path,
    fault_results: Callable[[Row], None],
) -> None:
    started = time.monotonic()
    entities, per_entity = size(20, 100), size(10, 20)
    topic, dlq, group = unique("faults-t10"), unique("faults-dlq10"), unique("g10")
    await create_topic(loom_kafka_bootstrap, topic, partitions=4)
    events = closing_events(unique("c"), entities, per_entity)
    expected: dict[str, list[str]] = {}
    for event in events:
        expected.setdefault(WORKFLOW_PREFIX + event.data["entity"], []).append(event.id)
    # Genuinely late: one more event for a few workflows, sent after they completed.
    late = [
        Event(id=f"{event.id}-late", source=SOURCE, type=EVENT_TYPE,
              data={**event.data, "seq": per_entity, "last": False},
              extensions=dict(event.extensions))
        for event in events[-3:]
    ]
    def settings(**dispatch: float) -> LoomSettings:
        return fault_settings(
            bootstrap=loom_kafka_bootstrap, topic=topic, dlq=dlq, group=group,
            temporal=temporal_client.service_client.config.target_host,
            routes="faults.closing:router",
            # The restart joins once the killed member's session expired: short.
            kafka={"session_timeout_ms": 3000, "heartbeat_interval_ms": 300},
            dispatch=dispatch,
        )

    producer = AIOKafkaProducer(bootstrap_servers=loom_kafka_bootstrap,
                                enable_idempotence=False)
    await producer.start()
    try:
        async with loom_worker(temporal_client, task_queue=task_queue,
                          workflows=[ClosingWorkflow], max_concurrent_workflow_tasks=50):
            # The first sidecar never commits (interval of an hour), then dies by SIGKILL
            # once every workflow completed: the restart gets every record again.
            first = await sidecars(settings(commit_interval_s=3600), "closing-1")
            await first.wait_ready()
            await publish(producer, topic, events)
            await _all_closed(temporal_client, list(expected), timeout=120)
            await first.kill()
            await publish(producer, topic, late)
            second = await sidecars(settings(), "closing-2")
            await second.wait_ready()
            result, lag = await settle(temporal_client, expected, bootstrap=loom_kafka_bootstrap,
                                       group=group, topic=topic, timeout=120)
            metrics = await second.metrics()
            listed = await dlq_list(settings(), tmp_path, "workflow-closed")
        letters = await dead_letters(loom_kafka_bootstrap, dlq)
    finally:
        await producer.stop()
    duplicates = metric_value(metrics, "loom_events_routed_total", outcome="duplicate")
    redelivered = metric_value(metrics, "loom_events_consumed_total") - len(late)
    info = [{k: v.decode() for k, v in r.headers if k.startswith("loom-dlq-")} for r in letters]
    assert lag == 0
    assert result.clean, result.worst
    # What the killed sidecar had not committed came again (all of it, but for a commit the
    # loop may make as it starts), and each was told a duplicate by its closed workflow.
    assert redelivered > len(events) // 2
    assert duplicates == redelivered
    # The late ones, and only they, were dead-lettered with the workflow's status.
    assert sorted(decode(r).id for r in letters) == sorted(
        e.id for e in late)
    assert {i["loom-dlq-reason"] for i in info} == {"workflow-closed"}
    assert {i["loom-dlq-workflow-status"] for i in info} == {"COMPLETED"}
    assert sorted(x["offset"] for x in listed) == sorted(i["loom-dlq-offset"] for i in info)
    fault_results(Row.measured(
        "10. sidecar SIGKILLed while its workflows completed, restarted; late events after",
        result, letters, started,
        f"{redelivered:,.0f} redelivered after the kill, each answered 'seen' by its closed "
        f"workflow (counted duplicates); the {len(late)} late events dead-lettered "
        "(workflow-closed, status COMPLETED)",
        passed=result.clean and len(letters) == len(late),
        sent=len(events) + len(late),
    ))


async def dlq_list(settings: LoomSettings, cwd: Path, reason: str) -> list[dict[str, str]]:
    """``loom dlq list --reason R --json`` as a user runs it: one JSON object per record."""
    code, out = await LoomProcess.run("dlq", "list", "--reason", reason, "--json",
                                      cwd=cwd, settings=settings)
    assert code == 0, out
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


# --- 11. a namespace typo: refused at start, nothing dead-lettered, then fixed -------------


async def test_namespace_typo_refuses_to_start_then_the_fix_delivers_everything(
    temporal_client: Client,
    recorder_worker: Worker,
    loom_kafka_bootstrap: str,
    sidecars: Sidecars,
    fault_results: Callable[[Row], None],
) -> None:
    # The sidecar used to start and dead-letter every event as "NOT_FOUND: Namespace ... is
    # not found"; re-driving them afterwards reorders them per workflow.
    started = time.monotonic()
    topic, dlq, group = unique("faults-t11"), unique("faults-dlq11"), unique("g11")
    await create_topic(loom_kafka_bootstrap, topic, partitions=2)
    await create_topic(loom_kafka_bootstrap, dlq)
    events = step_events(unique("t11"), size(10, 50), size(5, 20))
    expected = expected_by_workflow(events)
    good_settings = fault_settings(
        bootstrap=loom_kafka_bootstrap, topic=topic, dlq=dlq, group=group,
        temporal=temporal_client.service_client.config.target_host,
    )
    typo_settings = good_settings.model_copy(update={
        "temporal": good_settings.temporal.model_copy(update={"namespace": "defualt"})})

    producer = AIOKafkaProducer(bootstrap_servers=loom_kafka_bootstrap,
                                enable_idempotence=False)
    await producer.start()
    try:
        await publish(producer, topic, events)
        typo = await sidecars(typo_settings, "typo")
        code = await typo.wait(60)
        refused_after = time.monotonic() - started
        log = typo.tail(20)
        # Nothing was taken: no dead letter, no commit. The process is gone, so the topic's
        # end is the end of anything it could have written.
        letters_before = await dead_letters(loom_kafka_bootstrap, dlq)
        committed_before = await committed_offsets(loom_kafka_bootstrap, group, topic, 2)
        fixed = await sidecars(good_settings, "fixed")
        await fixed.wait_ready()
        result, lag = await settle(temporal_client, expected, bootstrap=loom_kafka_bootstrap,
                                   group=group, topic=topic, timeout=120)
        letters = await dead_letters(loom_kafka_bootstrap, dlq)
    finally:
        await producer.stop()
    assert code == 2, log
    assert "LOOM_TEMPORAL__NAMESPACE" in log and "defualt" in log, log
    assert "Traceback" not in log
    assert letters_before == [] and committed_before == {0: None, 1: None}
    assert lag == 0 and result.clean, result.worst
    assert letters == []
    fault_results(Row.measured(
        "11. namespace typo (LOOM_TEMPORAL__NAMESPACE), then fixed", result, letters, started,
        f"exit 2 naming the setting after {refused_after:.1f} s, before taking a record; "
        "restarted with the right namespace: all delivered in order",
        passed=result.clean and not letters,
    ))
