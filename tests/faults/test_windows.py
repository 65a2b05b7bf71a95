"""Windows through Kafka: ``Inbox.collect`` and ``Inbox.debounce`` fed by ``loom run``.

The events go through Kafka and the sidecar as a process, in coalesced calls (several events
per signal), to workflows (:mod:`flows.windows`) that continue as new every two signals, under
the worker ``loom worker`` builds. In the middle of a window (the workflow holds queued
events and waits on its timer) the sidecar is SIGKILLed and started again: what it had not
committed comes again, and the inbox drops the repeats.

- collect: every event in exactly one batch, in order, none lost or doubled, no batch over
  its bound;
- debounce: the last event of each burst, and a burst that goes on is cut ``max_wait`` after
  its first event.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from flows.windows import ITEM, MAX_EVENTS, MAX_WAIT_S, Collector, Debouncer, Windows
from kit import LoomProcess, eventually, metric_value
from recorder import publish
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from bridge.events import Event
from bridge.testing import loom_worker
from faults.harness import Sidecars, fault_settings, unique

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.temporal]

TIMEOUT = 90
#: How late a busy worker may run the workflow task that a timer woke.
SLACK_S = 2.0


def item(wf: str, key: str, seq: int, *, last: bool = False) -> Event:
    return Event(
        id=f"{key}-{seq}", source="test://windows", type=ITEM, subject=wf,
        data={"wf": wf, "key": key, "seq": seq, "sent_at": time.time(), "last": last},
    )


async def progress(client: Client, workflow_id: str) -> dict[str, Any]:
    """The workflow's ``progress`` query (not started yet: "not yet" for ``eventually``)."""
    try:
        result: dict[str, Any] = await client.get_workflow_handle(workflow_id).query(
            Collector.progress)
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise AssertionError(f"{workflow_id} not started yet") from None
        raise
    return result


class Sidecar:
    """``loom run`` for the windows routes, killed and started again on demand."""

    def __init__(self, sidecars: Sidecars, settings: Any) -> None:
        self.sidecars, self.settings = sidecars, settings
        self.process: LoomProcess | None = None
        self.kills = 0
        self.events_per_call = 0.0  # before the kill

    async def start(self) -> None:
        self.process = await self.sidecars(self.settings, f"sidecar-{self.kills}")
        await self.process.wait_ready()

    async def kill_and_restart(self) -> None:
        assert self.process is not None
        scrape = await self.process.metrics()
        calls = metric_value(scrape, "loom_batch_events_count")
        self.events_per_call = metric_value(scrape, "loom_batch_events_sum") / max(calls, 1)
        await self.process.kill()  # SIGKILL: no drain, no commit
        self.kills += 1
        await self.start()


async def setup(
    temporal_client: Client, loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]], sidecars: Sidecars,
) -> tuple[str, Sidecar]:
    topic, dlq = await new_topic(), await new_topic()
    settings = fault_settings(
        bootstrap=loom_kafka_bootstrap, topic=topic, dlq=dlq, group=unique("g-win"),
        temporal=temporal_client.service_client.config.target_host,
        routes="flows.window_routes:router",
        dispatch={"batch_max_events": 3},  # coalesced calls, and several signals per wave
    )
    sidecar = Sidecar(sidecars, settings)
    await sidecar.start()
    return topic, sidecar


def has_taken(event_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda p: any(event_id in batch for batch in p["batches"])


def has_yielded(count: int) -> Callable[[dict[str, Any]], bool]:
    return lambda p: len(p["yielded"]) >= count


async def mid_window(client: Client, workflow_id: str, ids: Sequence[str]) -> dict[str, Any]:
    """Until the workflow holds the last of ``ids`` queued, in an open window."""
    return await eventually(
        lambda: progress(client, workflow_id), timeout=30, interval=0.05,
        until=lambda p: ids[-1] in p["queued"], what=f"{workflow_id} holds {ids[-1]} queued",
    )


@pytest.mark.timeout(TIMEOUT)
async def test_collect_through_kafka_takes_every_event_once_in_order_across_a_sigkill(
    temporal_client: Client, loom_kafka_bootstrap: str, new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]], sidecars: Sidecars, task_queue: str,
) -> None:
    topic, sidecar = await setup(temporal_client, loom_kafka_bootstrap, new_topic, sidecars)
    producer = await make_producer()
    key = uuid.uuid4().hex[:8]
    wid = f"win-collect-{key}"
    # Waves of 6: a full batch of 4 at once, then 2 left in an open window.
    waves = [[item("collect", key, w * 6 + n) for n in range(6)] for w in range(4)]
    waves[-1][-1] = item("collect", key, 23, last=True)
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[Collector]):
        for number, wave in enumerate(waves):
            await publish(producer, topic, wave)
            if number == 1:  # the window holds events: the sidecar dies now
                held = await mid_window(temporal_client, wid, [e.id for e in wave])
                await sidecar.kill_and_restart()
            elif number < len(waves) - 1:
                await eventually(lambda: progress(temporal_client, wid), timeout=30,
                                 until=has_taken(wave[-1].id), what=f"wave {number} taken")
        result = Windows.model_validate(
            await temporal_client.get_workflow_handle(wid).result(rpc_timeout=None))
        runs = (await progress(temporal_client, wid))["runs"]
    sent = [e.id for wave in waves for e in wave]
    taken = [i for batch in result.batches for i in batch]
    assert taken == sent  # each event in exactly one batch, in order: none lost or doubled
    assert all(1 <= len(b) <= MAX_EVENTS for b in result.batches), result.batches
    assert max(len(b) for b in result.batches) > 1  # windows took several events at once
    assert held["queued"], held  # the kill came while a window was open
    assert sidecar.kills == 1 and sidecar.events_per_call > 1  # coalesced calls
    assert runs >= 3, runs  # across continue-as-new


@pytest.mark.timeout(TIMEOUT)
async def test_debounce_through_kafka_yields_each_bursts_last_and_max_wait_holds(
    temporal_client: Client, loom_kafka_bootstrap: str, new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]], sidecars: Sidecars, task_queue: str,
) -> None:
    topic, sidecar = await setup(temporal_client, loom_kafka_bootstrap, new_topic, sidecars)
    producer = await make_producer()
    key = uuid.uuid4().hex[:8]
    wid = f"win-debounce-{key}"
    # First a burst that goes on: one event a second, each within the quiet period of the one
    # before, for longer than max_wait (the pace shapes the input; nothing waits on it). The
    # sidecar is not killed before it: its arrival times follow the pace.
    trickle = [item("debounce", key, n) for n in range(10)]
    # Then bursts, all at once each; the sidecar dies while the second one's quiet period runs.
    bursts = [[item("debounce", key, 100 + b * 10 + n) for n in range(5)] for b in range(3)]
    bursts[-1][-1] = item("debounce", key, 124, last=True)
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[Debouncer]):
        for event in trickle:
            await publish(producer, topic, [event])
            await asyncio.sleep(1.0)
        cut = await eventually(lambda: progress(temporal_client, wid), timeout=30,
                               until=lambda p: trickle[-1].id in p["yielded"],
                               what="the trickle yielded its last event")
        for number, burst in enumerate(bursts):
            await publish(producer, topic, burst)  # at once: one burst
            if number == 1:  # the burst is queued, its quiet period running: kill now
                held = await mid_window(temporal_client, wid, [e.id for e in burst])
                await sidecar.kill_and_restart()
            if number < len(bursts) - 1:
                await eventually(lambda: progress(temporal_client, wid), timeout=30,
                                 until=has_yielded(len(cut["yielded"]) + number + 1),
                                 what=f"burst {number} yielded")
        result = Windows.model_validate(
            await temporal_client.get_workflow_handle(wid).result(rpc_timeout=None))
        runs = (await progress(temporal_client, wid))["runs"]
    ids = [y.id for y in result.yielded]
    assert runs >= 3, runs  # across continue-as-new
    trickled = len(cut["yielded"])
    assert ids[trickled:] == [burst[-1].id for burst in bursts]  # each burst's last event
    assert held["queued"], held
    assert sidecar.kills == 1 and sidecar.events_per_call > 1
    # The trickle went on for longer than max_wait: it was cut, each part ending at most
    # max_wait after its first event arrived (plus the time a busy worker takes to run the
    # task the timer woke), and the last part ended with the trickle's last event.
    assert trickled >= 2 and ids[trickled - 1] == trickle[-1].id, ids
    for part in result.yielded[:trickled]:
        late = (part.at - part.first_arrived).total_seconds()
        assert late <= MAX_WAIT_S + SLACK_S, (part, late)
