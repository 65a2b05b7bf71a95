"""The network misbehaves under a running sidecar: broker connection cut, Temporal slow.

Scenarios 3 and 5 of issue 8 (scenario 2, Temporal down, is in test_process_faults.py). The sidecar runs in this process (:class:`bridge.sidecar.loop.Loom`)
so the test can read its health and its dispatcher directly, many times a second.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from kit import eventually
from recorder import publish, query_all
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from bridge.dev import EmbeddedKafka, create_topic, free_port
from bridge.sidecar.loop import Loom, running
from bridge.sidecar.metrics import metric_total
from bridge.telemetry.logs import CLIENT_ERRORS, configure_logging
from bridge.testing import TemporalServer
from faults.harness import (
    FULL,
    Row,
    dead_letters,
    fault_settings,
    rss_bytes,
    settle,
    size,
    unique,
)
from faults.proxy import FaultProxy
from faults.workload import expected_by_workflow, make_router, step_events

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.temporal]

TIMEOUT = 600 if FULL else 120


async def _delivered(client: Client, expected: dict[str, list[str]]) -> int:
    seen = await query_all(client, expected)
    return sum(len(v) for v in seen.values())


async def _wait_routed_at_least(loom: Loom, count: int, timeout: float = 60) -> None:
    """Until the in-process loom acknowledged ``count`` calls: a cheap poll, so a fault lands
    while part of the stream is still in the topic even when the loom drains it in a second
    (querying every workflow for its count took longer than that)."""
    await eventually(lambda: metric_total(loom.metrics.routed), until=lambda n: n >= count,
                     timeout=timeout, interval=0.002, what=f"{count} calls acknowledged")


def _remove_loom_handler() -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == "loom":
            root.removeHandler(handler)


@pytest.mark.timeout(TIMEOUT)
async def test_broker_connection_cut_mid_stream(
    temporal_client: Client,
    recorder_worker: Worker,
    task_queue: str,
    fault_results: Callable[[Row], None],
) -> None:
    """3. The broker connection cut (RST), later stalled, through the proxy: 0 lost, 0 dup."""
    started = time.monotonic()
    cut_for = size(3, 10)
    entities, per_entity = size(30, 100), size(20, 40)
    broker_port = free_port()
    async with FaultProxy(broker_port) as proxy:
        # Clients reconnect to the advertised address: the broker must advertise the proxy.
        async with EmbeddedKafka(port=broker_port, advertised_port=proxy.port) as kafka:
            direct = kafka.bootstrap
            topic, dlq = unique("faults-t3"), unique("faults-dlq3")
            await create_topic(direct, topic, partitions=4)
            await create_topic(direct, dlq)
            events = step_events(unique("t3"), entities, per_entity)
            expected = expected_by_workflow(events)
            from aiokafka import AIOKafkaProducer

            # The broker advertises the proxy, so this producer goes through it as well: it
            # publishes only while the proxy forwards, and the sidecar always has a backlog
            # (published, not yet delivered) when a fault starts.
            producer = AIOKafkaProducer(bootstrap_servers=direct, enable_idempotence=False)
            await producer.start()
            settings = fault_settings(
                bootstrap=proxy.address, topic=topic, dlq=dlq, group=unique("g3"),
                temporal=temporal_client.service_client.config.target_host, max_in_flight=16,
            )
            loom = Loom(make_router(task_queue), temporal_client, settings)
            half = len(events) // 2
            # The log lines the sidecar writes, as `loom run` configures them.
            log_lines = io.StringIO()
            configure_logging("INFO", stream=log_lines)
            CLIENT_ERRORS.settle()
            try:
                async with running(loom):
                    await publish(producer, topic, events[:half])
                    await _wait_routed_at_least(loom, half // 4)
                    await proxy.cut()  # every connection reset, new ones refused
                    cut_at = time.monotonic()
                    # Counted once fetching stopped: includes calls that were in flight.
                    at_cut = await _delivered(temporal_client, expected)
                    # The sidecar's health check asks the cluster every second.
                    await eventually(lambda: loom.probe_kafka(timeout=1), until=lambda ok: not ok,
                                     timeout=30, what="the metadata probe failing")
                    await asyncio.sleep(cut_for)  # the fault: the connection stays cut this long
                    proxy.restore()
                    cut_seconds = time.monotonic() - cut_at
                    await eventually(lambda: loom.probe_kafka(timeout=1), until=bool,
                                     timeout=30, what="the metadata probe answered again")
                    await publish(producer, topic, events[half:])
                    # routed counts redelivered calls too: it can only bring the stall forward.
                    await _wait_routed_at_least(loom, half + half // 4, timeout=120)
                    proxy.stall()  # open connections, no bytes: a silent partition
                    at_stall = await _delivered(temporal_client, expected)
                    await asyncio.sleep(cut_for)  # the fault: stalled this long
                    proxy.restore()
                    result, lag = await settle(
                        temporal_client, expected, bootstrap=direct,
                        group=settings.kafka.group_id, topic=topic, timeout=TIMEOUT / 2,
                    )
            finally:
                await producer.stop()
                _remove_loom_handler()
            letters = await dead_letters(direct, dlq)
    # One line per kind of client error per 10 s window, and one when Kafka answers again.
    client_lines = [line for line in log_lines.getvalue().splitlines() if " aiokafka" in line]
    # A kind: the line without its time stamp, digits (node ids, ports) folded.
    kinds = Counter(re.sub(r"\d+", "N", line.split(" ", 2)[-1]) for line in client_lines)
    windows = int((cut_seconds + 2 * cut_for + 60) // 10) + 1
    assert "Kafka answers again after" in log_lines.getvalue()
    assert all(n <= windows for n in kinds.values()), kinds.most_common(5)
    fault_results(Row.measured(
        "3. broker connection cut, then stalled (proxy)", result, letters, started,
        f"cut {cut_for} s with {half - at_cut} undelivered, stall {cut_for} s with "
        f"{len(events) - at_stall} undelivered; {proxy.stats.refused} connections refused",
        passed=result.clean and not letters,
    ))
    print(f"client error lines: {len(client_lines)} in {len(kinds)} kinds")
    assert proxy.stats.refused > 0 or proxy.stats.accepted > 1, "the cut was not felt"
    assert at_cut < half and at_stall < len(events), "a fault landed after the stream"
    assert result.lost == 0 and result.out_of_order == 0, result
    assert result.duplicated == 0, result
    assert lag == 0
    assert not letters


@pytest.mark.timeout(TIMEOUT)
async def test_slow_temporal_in_flight_and_memory_bounded(
    temporal_client: Client,
    loom_temporal: TemporalServer,
    recorder_worker: Worker,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    task_queue: str,
    fault_results: Callable[[Row], None],
) -> None:
    """5. Temporal slowed by the proxy, low bounds: calls running within ``max_in_flight``,
    records held within ``max_buffered`` (4 x max_in_flight here; by default only
    ``max_buffered_bytes`` bounds them, so that queues per workflow id form and coalesce),
    memory bounded."""
    started = time.monotonic()
    bound = 8
    entities, per_entity = size(40, 100), size(10, 20)
    pad = "p" * 16_384  # 16 KB per event: buffering the backlog would show in RSS
    topic, dlq = await new_topic(partitions=4), await new_topic()
    events = step_events(unique("t5"), entities, per_entity)
    for event in events:
        event.data["pad"] = pad
    expected = expected_by_workflow(events)
    producer = await make_producer()
    # The whole backlog is in the topic before the sidecar starts: it must not swallow it.
    await publish(producer, topic, events)
    host, _, port = loom_temporal.address.rpartition(":")
    async with FaultProxy(int(port), host, latency=0.05) as proxy:
        slow = await Client.connect(proxy.address, data_converter=pydantic_data_converter)
        settings = fault_settings(
            bootstrap=loom_kafka_bootstrap, topic=topic, dlq=dlq, group=unique("g5"),
            temporal=proxy.address, max_in_flight=bound, dispatch={"max_buffered": 4 * bound},
        )
        buffered = settings.dispatch.buffered_bound
        assert buffered == 4 * bound
        loom = Loom(make_router(task_queue), slow, settings)
        peak = {"running": 0, "accepted": 0, "tracker": 0}
        rss: list[int] = []

        async def sample() -> None:
            # The peaks, sampled every 5 ms: the measurement itself, not a wait.
            while True:
                peak["running"] = max(peak["running"], loom.dispatcher.running)
                peak["accepted"] = max(peak["accepted"], loom.dispatcher.in_flight)
                peak["tracker"] = max(peak["tracker"], loom.tracker.in_flight())
                if len(rss) < 100_000:
                    rss.append(rss_bytes(os.getpid()))
                await asyncio.sleep(0.005)

        baseline = rss_bytes(os.getpid())
        async with running(loom):
            sampler = asyncio.create_task(sample())
            result, lag = await settle(
                temporal_client, expected, bootstrap=loom_kafka_bootstrap,
                group=settings.kafka.group_id, topic=topic, timeout=TIMEOUT - 30,
            )
            sampler.cancel()
        pauses = metric_total(loom.metrics.paused)
    letters = await dead_letters(loom_kafka_bootstrap, dlq)
    growth = (max(rss) - baseline) / 2**20
    backlog = len(events) * len(pad) / 2**20
    fault_results(Row.measured(
        "5. Temporal slowed (+100 ms round trip), max_in_flight 8", result, letters, started,
        f"peak calls running {peak['running']} (bound {bound}), peak accepted "
        f"{peak['accepted']} and records held {peak['tracker']} (max_buffered {buffered}), "
        f"{pauses:.0f} pauses, RSS +{growth:.0f} MiB for a {backlog:.0f} MiB backlog",
        passed=result.clean and peak["running"] <= bound and peak["accepted"] <= buffered,
    ))
    assert result.clean, result
    assert lag == 0
    assert 0 < peak["running"] <= bound  # Temporal calls at once: the configured bound
    assert peak["accepted"] <= buffered  # accepted by the dispatcher, queued or running
    assert peak["tracker"] <= buffered  # records taken from Kafka and not finished
    assert pauses > 0, "the bound was never reached: the test did not slow Temporal enough"
    # The test process holds the worker and the queries too; the loom's own share is bounded
    # by ``bound`` records plus aiokafka's per-partition fetch buffers (1 MiB each).
    assert growth < 120, f"RSS grew by {growth:.0f} MiB"
    assert not letters
