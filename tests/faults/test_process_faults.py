"""The sidecar as a real process (``loom run``) killed, joined, stopped, and its server down.

Scenarios 1, 2, 4 and 7 of issue 8. Each sends a known set of events while the fault
happens, then queries every workflow (lost, duplicated, out of order) and reads the
dead-letter topic.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from kit import LoomProcess, eventually, metric_value
from recorder import publish, query_all
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from bridge.dev import EmbeddedTemporal
from bridge.testing import loom_worker
from faults.harness import (
    FULL,
    Row,
    Sidecars,
    consumed,
    dead_letters,
    fault_settings,
    settle,
    size,
    unique,
)
from faults.proxy import FaultProxy
from faults.workload import FaultRecorder, expected_by_workflow, publish_paced, step_events

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.temporal]

TIMEOUT = 900 if FULL else 150


async def _until_delivered(
    client: Client, expected: dict[str, list[str]], count: int, timeout: float = 90
) -> None:
    async def delivered() -> int:
        return sum(len(v) for v in (await query_all(client, expected)).values())

    await eventually(delivered, until=lambda n: n >= count, timeout=timeout, interval=0.2,
                     what=f"at least {count} events delivered")


async def _busy(sidecar: LoomProcess, at_least: int, timeout: float = 60) -> float:
    """Wait until the sidecar has ``at_least`` calls in flight (a fault then hits real work)."""

    async def in_flight() -> float:
        sidecar.check_running()  # an exit fails the wait at once
        return metric_value(await sidecar.metrics(), "loom_in_flight")

    return await eventually(in_flight, until=lambda n: n >= at_least, timeout=timeout,
                            interval=0.01, what=f"{sidecar.name} with {at_least} calls in flight")


#: Scenarios 1 and 4 run as they were, and again with coalescing on (``1c``, ``4c``: the
#: route to the inbox recorder coalesces; a kill or a rebalance lands mid-batch).
COALESCING = pytest.mark.parametrize("coalesced", [
    pytest.param(False, id="one-per-call"),
    pytest.param(True, id="coalesced", marks=pytest.mark.slow),
])


def _routes(coalesced: bool) -> str:
    return "faults.workload:coalesced_router" if coalesced else "faults.workload:router"


def _events_per_call(metrics_text: str) -> float:
    """Mean events per Temporal call so far (``loom_batch_events``), 0 before any call."""
    calls = metric_value(metrics_text, "loom_batch_events_count")
    return metric_value(metrics_text, "loom_batch_events_sum") / calls if calls else 0.0


async def _mid_batch(sidecar: LoomProcess, timeout: float = 60) -> tuple[float, float]:
    """Wait until the sidecar made calls carrying several events and still has calls in
    flight (a fault then lands mid-batch); returns (events per call, in flight)."""

    async def state() -> tuple[float, float]:
        sidecar.check_running()  # an exit fails the wait at once
        scrape = await sidecar.metrics()
        return _events_per_call(scrape), metric_value(scrape, "loom_in_flight")

    return await eventually(state, until=lambda s: s[0] > 1 and s[1] >= 1, timeout=timeout,
                            interval=0.01, what=f"{sidecar.name} coalescing, calls in flight")


@pytest.mark.timeout(TIMEOUT)
@COALESCING
async def test_sigkill_mid_stream_then_restart(
    coalesced: bool,
    temporal_client: Client,
    recorder_worker: Worker,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    sidecars: Sidecars,
    fault_results: Callable[[Row], None],
) -> None:
    """1. SIGKILL mid-stream, restart: 0 lost, 0 duplicated, order kept. With coalescing
    (1c): each kill lands once calls carrying several events went through and more are in
    flight."""
    started = time.monotonic()
    entities, per_entity = size(40, 100), size(20, 50)
    kills = size(1, 2)
    topic, dlq = await new_topic(partitions=4), await new_topic()
    events = step_events(unique("t1"), entities, per_entity)
    expected = expected_by_workflow(events)
    settings = fault_settings(
        bootstrap=loom_kafka_bootstrap, topic=topic, dlq=dlq, group=unique("g1"),
        temporal=temporal_client.service_client.config.target_host, routes=_routes(coalesced),
    )
    producer = await make_producer()
    # A backlog, then a steady stream: every kill lands while calls are in flight (taken
    # from Kafka, not acknowledged by Temporal), where a premature commit would lose them.
    backlog = len(events) // 2
    await publish(producer, topic, events[:backlog])
    sidecar = await sidecars(settings, "s1-0")
    await sidecar.wait_ready()
    feed = asyncio.create_task(
        publish_paced(producer, topic, events[backlog:], rate=len(events) / 10)
    )
    busy: list[float] = []
    per_call: list[float] = []
    read = 0  # records the killed sidecars took (scraped just before each kill)
    for n in range(kills):
        in_flight = await _busy(sidecar, 16)
        if coalesced:  # its coalesced calls went through, and more are in flight
            calls, in_flight = await _mid_batch(sidecar)
            per_call.append(calls)
        busy.append(in_flight)
        read += consumed(await sidecar.metrics())
        await sidecar.kill()  # SIGKILL: no drain, no commit
        assert sidecar.returncode == -signal.SIGKILL
        sidecar = await sidecars(settings, f"s1-{n + 1}")
        await sidecar.wait_ready()
    await feed
    result, lag = await settle(
        temporal_client, expected, bootstrap=loom_kafka_bootstrap,
        group=settings.kafka.group_id, topic=topic, timeout=TIMEOUT / 2,
    )
    read += consumed(await sidecar.metrics())
    letters = await dead_letters(loom_kafka_bootstrap, dlq)
    batches = (f"; coalesced: {', '.join(f'{p:.1f}' for p in per_call)} events per call "
               "before the kills") if coalesced else ""
    fault_results(Row.measured(
        "1c. sidecar SIGKILLed mid-batch (coalescing), restarted" if coalesced
        else "1. sidecar SIGKILLed mid-stream, restarted", result, letters, started,
        f"{kills} kill(s) with {', '.join(f'{b:.0f}' for b in busy)} calls in flight, "
        f"{result.workflows} workflows{batches}",
        passed=result.clean and not letters, redone=read - len(events),
    ))
    assert result.clean, result
    assert lag == 0
    assert not letters


@pytest.mark.timeout(TIMEOUT)
async def test_temporal_down_mid_stream(
    tmp_path: Path,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    task_queue: str,
    sidecars: Sidecars,
    fault_results: Callable[[Row], None],
) -> None:
    """2. Temporal (file database) down mid-stream: 0 lost, 0 dup; /readyz false, then true."""
    started = time.monotonic()
    outage = size(4, 10)
    entities, per_entity = size(30, 100), size(20, 30)
    topic, dlq = await new_topic(partitions=4), await new_topic()
    events = step_events(unique("t2"), entities, per_entity)
    expected = expected_by_workflow(events)
    producer = await make_producer()
    async with EmbeddedTemporal(db_file=tmp_path / "temporal.db") as server:
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        settings = fault_settings(
            bootstrap=loom_kafka_bootstrap, topic=topic, dlq=dlq, group=unique("g2"),
            temporal=server.address,
        )
        async with loom_worker(client, task_queue=task_queue, workflows=[FaultRecorder],
                          max_concurrent_workflow_tasks=100):
            sidecar = await sidecars(settings, "s2")
            await sidecar.wait_ready()
            readiness: list[tuple[float, int]] = []

            async def watch() -> None:
                # A sample of /readyz every 0.1 s: the measurement itself, not a wait.
                while True:
                    readiness.append((time.monotonic(), await sidecar.probe("/readyz")))
                    await asyncio.sleep(0.1)

            watcher = asyncio.create_task(watch())
            feed = asyncio.create_task(
                publish_paced(producer, topic, events, rate=len(events) / (outage + 6))
            )
            await _until_delivered(client, expected, len(events) // 5)
            await server.stop()
            down_at = time.monotonic()
            await asyncio.sleep(outage)  # the fault: Temporal stays down this long
            await server.start()
            up_at = time.monotonic()
            await feed
            result, lag = await settle(
                client, expected, bootstrap=loom_kafka_bootstrap,
                group=settings.kafka.group_id, topic=topic, timeout=TIMEOUT / 2,
            )
            watcher.cancel()
            ready_after = await sidecar.probe("/readyz")
            live = {status for _, status in readiness if status}  # 0: no answer
            metrics = await sidecar.metrics()
    # The sidecar probes Temporal every second (2 s deadline): readiness lags by up to 3 s.
    during = [status for t, status in readiness if down_at <= t <= up_at + 1]
    went_down = next((t for t, status in readiness if t >= down_at and status == 503), None)
    back_at = next(
        (t for t, status in readiness if went_down and t > went_down and status == 200), None
    )
    letters = await dead_letters(loom_kafka_bootstrap, dlq)
    # The server answers before EmbeddedTemporal.start() returns: count from the stop.
    back = f"{back_at - down_at:.1f} s after the stop" if back_at else "never"
    fault_results(Row.measured(
        "2. Temporal down (file db) mid-stream, restarted", result, letters, started,
        f"outage {outage} s; /readyz 503 {went_down - down_at:.1f} s after the stop, "
        f"200 again {back}" if went_down else f"outage {outage} s; /readyz never 503",
        passed=result.clean and not letters,
    ))
    assert result.clean, result
    assert lag == 0
    assert went_down is not None and went_down <= up_at, f"/readyz during the outage: {during}"
    assert back_at is not None and ready_after == 200
    assert live <= {200, 503}, f"the HTTP server did not always answer: {live}"
    assert "loom_in_flight" in metrics
    assert not letters


@pytest.mark.timeout(TIMEOUT)
@COALESCING
async def test_second_sidecar_joins_then_is_killed(
    coalesced: bool,
    temporal_client: Client,
    recorder_worker: Worker,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    sidecars: Sidecars,
    fault_results: Callable[[Row], None],
) -> None:
    """4. A second sidecar joins the group, then is SIGKILLed: 0 lost, 0 duplicated. With
    coalescing (4c): it is killed once its coalesced calls went through and more are in
    flight."""
    started = time.monotonic()
    entities, per_entity = size(40, 100), size(20, 30)
    topic, dlq = await new_topic(partitions=4), await new_topic()
    events = step_events(unique("t4"), entities, per_entity)
    expected = expected_by_workflow(events)
    settings = fault_settings(
        bootstrap=loom_kafka_bootstrap, topic=topic, dlq=dlq, group=unique("g4"),
        temporal=temporal_client.service_client.config.target_host, routes=_routes(coalesced),
    )
    producer = await make_producer()
    first = await sidecars(settings, "s4-first")
    await first.wait_ready()
    trickle = len(events) // 3
    feed = asyncio.create_task(
        publish_paced(producer, topic, events[:trickle], rate=len(events) / 15)
    )
    await _until_delivered(temporal_client, expected, trickle // 3)
    second = await sidecars(settings, "s4-second")
    await second.wait_ready()  # ready = joined the group: the group rebalanced
    await feed
    # A burst: the second member holds calls in flight when it is killed.
    burst = asyncio.create_task(publish(producer, topic, events[trickle:]))
    busy = await _busy(second, 16)
    per_call = 0.0
    if coalesced:  # its coalesced calls went through, and more are in flight
        per_call, busy = await _mid_batch(second)
    scrape = await second.metrics()
    routed_by_second = metric_value(scrape, "loom_events_routed_total")
    read = consumed(scrape)
    await second.kill()
    await burst
    result, lag = await settle(
        temporal_client, expected, bootstrap=loom_kafka_bootstrap,
        group=settings.kafka.group_id, topic=topic, timeout=TIMEOUT / 2,
    )
    assert first.returncode is None, first.tail()
    read += consumed(await first.metrics())
    letters = await dead_letters(loom_kafka_bootstrap, dlq)
    fault_results(Row.measured(
        "4c. second sidecar joins, then SIGKILLed mid-batch (coalescing)" if coalesced
        else "4. second sidecar joins, then SIGKILLed (rebalances)", result, letters, started,
        f"the second routed {routed_by_second:.0f} and had {busy:.0f} in flight at its kill"
        + (f", {per_call:.1f} events per call" if coalesced else ""),
        passed=result.clean and not letters, redone=read - len(events),
    ))
    assert result.clean, result
    assert lag == 0
    assert not letters


@pytest.mark.timeout(TIMEOUT)
async def test_sigterm_under_heavy_traffic(
    temporal_client: Client,
    recorder_worker: Worker,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    sidecars: Sidecars,
    fault_results: Callable[[Row], None],
) -> None:
    """7. SIGTERM under heavy traffic: exits 0 within the drain timeout; restart: exact."""
    started = time.monotonic()
    drain_timeout = 10.0
    entities, per_entity = size(100, 250), size(15, 20)
    topic, dlq = await new_topic(partitions=4), await new_topic()
    events = step_events(unique("t7"), entities, per_entity)
    expected = expected_by_workflow(events)
    settings = fault_settings(
        bootstrap=loom_kafka_bootstrap, topic=topic, dlq=dlq, group=unique("g7"),
        temporal=temporal_client.service_client.config.target_host,
        max_in_flight=256, drain_timeout_s=drain_timeout,
    )
    producer = await make_producer()
    # A backlog before the start and more arriving meanwhile: the pipeline is full (up to
    # max_in_flight calls accepted) when the signal lands.
    backlog = len(events) * 6 // 10
    await publish(producer, topic, events[:backlog])
    sidecar = await sidecars(settings, "s7-0")
    await sidecar.wait_ready()
    feed = asyncio.create_task(
        publish_paced(producer, topic, events[backlog:], rate=len(events) / 4, batch=100)
    )
    # Signal when the sidecar is busy: many calls accepted and not finished.
    in_flight = await _busy(sidecar, 64)
    sidecar.send(signal.SIGTERM)
    term_at = time.monotonic()
    code = await sidecar.wait(drain_timeout + 15)
    exit_after = time.monotonic() - term_at
    assert code is not None, (
        f"still running {drain_timeout + 15:.0f}s after SIGTERM:\n{sidecar.tail(60)}"
    )
    restarted = await sidecars(settings, "s7-1")
    await restarted.wait_ready()
    await feed
    result, lag = await settle(
        temporal_client, expected, bootstrap=loom_kafka_bootstrap,
        group=settings.kafka.group_id, topic=topic, timeout=TIMEOUT / 2,
    )
    letters = await dead_letters(loom_kafka_bootstrap, dlq)
    fault_results(Row.measured(
        "7. SIGTERM under heavy traffic, restarted", result, letters, started,
        f"exit code {code} after {exit_after:.1f} s (drain timeout {drain_timeout:.0f} s), "
        f"{in_flight:.0f} calls in flight at the signal",
        passed=result.clean and code == 0 and exit_after <= drain_timeout + 5,
    ))
    assert code == 0, sidecar.tail()
    # The drain timeout bounds the wait for in-flight calls; closing the clients takes a bit.
    assert exit_after <= drain_timeout + 5
    assert result.clean, result
    assert lag == 0
    assert not letters


@pytest.mark.timeout(TIMEOUT)
async def test_sigterm_with_every_temporal_call_slow(
    temporal_client: Client,
    recorder_worker: Worker,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    sidecars: Sidecars,
    fault_results: Callable[[Row], None],
) -> None:
    """7b. SIGTERM while every Temporal call is slow (seconds per round trip): the sidecar exits
    within its drain timeout, leaving the calls it abandoned uncommitted; restart: exact.

    The abandoned calls keep running in the SDK's Rust runtime after the event loop is gone,
    and their answers arrive while the process exits: a process that then finalizes Python
    hangs on them."""
    started = time.monotonic()
    drain_timeout = 2.0
    topic, dlq = await new_topic(partitions=2), await new_topic()
    events = step_events(unique("t7b"), size(20, 50), size(4, 8))
    expected = expected_by_workflow(events)
    producer = await make_producer()
    host, _, port = temporal_client.service_client.config.target_host.rpartition(":")
    async with FaultProxy(int(port), host) as proxy:
        settings = fault_settings(
            bootstrap=loom_kafka_bootstrap, topic=topic, dlq=dlq, group=unique("g7b"),
            temporal=proxy.address, drain_timeout_s=drain_timeout,
        )
        sidecar = await sidecars(settings, "s7b-0")
        await sidecar.wait_ready()
        proxy.latency = 1.0  # every chunk waits a second each way: calls outlive the drain
        await publish(producer, topic, events)
        # Events taken and calls running behind the slow proxy.
        running = await _busy(sidecar, min(len(expected), 8))
        sidecar.send(signal.SIGTERM)
        term_at = time.monotonic()
        code = await sidecar.wait(drain_timeout + 10)
        exit_after = time.monotonic() - term_at
        assert code == 0, (
            f"exit code {code} {exit_after:.1f}s after SIGTERM "
            f"(drain timeout {drain_timeout:.0f}s):\n{sidecar.tail(60)}"
        )
        proxy.latency = 0.0
        restarted = await sidecars(settings, "s7b-1")
        await restarted.wait_ready()
        result, lag = await settle(
            temporal_client, expected, bootstrap=loom_kafka_bootstrap,
            group=settings.kafka.group_id, topic=topic, timeout=TIMEOUT / 2,
        )
    letters = await dead_letters(loom_kafka_bootstrap, dlq)
    fault_results(Row.measured(
        "7b. SIGTERM with every Temporal call slow, restarted", result, letters, started,
        f"exit code 0 after {exit_after:.1f} s (drain timeout {drain_timeout:.0f} s) with "
        f"{running:.0f} calls accepted at the signal, each round trip +2 s",
        passed=result.clean and lag == 0,
    ))
    assert result.clean, result
    assert lag == 0
    assert not letters
