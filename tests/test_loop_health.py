"""Loop health you can see (issue 21): the loop's lag, liveness judged from outside the loop,
and gauges that are true at rest."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import recorder
from faults.workload import Step
from kit import eventually, loom_settings
from prometheus_client import CollectorRegistry, Histogram
from recorder import InboxRecorderWorkflow, publish, wait_delivered
from temporalio.client import Client

from bridge.actions import SignalWithStart
from bridge.routing import Match, Route, Router
from bridge.sidecar.http import HealthServer
from bridge.sidecar.liveness import LoopWatch
from bridge.sidecar.loop import Loom, running
from bridge.sidecar.metrics import Health, metric_total
from bridge.testing import loom_worker

LIVE = Health(running=True)


def _get(port: int, path: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


# --- the watch --------------------------------------------------------------------------------


async def test_the_watch_samples_the_lag_and_sees_a_blocked_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lags: list[float] = []
    watch = LoopWatch(lags.append, interval=0.01, warn_after_s=0.2)
    watch.start()
    try:
        await eventually(lambda: len(lags), until=lambda n: n >= 3, timeout=5, interval=0.01,
                         what="lag samples")
        assert watch.stalled_for() < 0.2
        with caplog.at_level(logging.WARNING, logger="loom"):
            time.sleep(0.3)  # blocks the loop: the very thing the watch must see
            # Seen from outside the loop (this call runs no loop turn).
            assert watch.stalled_for() >= 0.25
            await eventually(lambda: max(lags), until=lambda lag: lag >= 0.25, timeout=5,
                             interval=0.01, what="the late tick's lag")
        assert "event loop was blocked" in caplog.text
        assert watch.max_lag >= 0.25
        await eventually(watch.stalled_for, until=lambda s: s < 0.2, timeout=5, interval=0.01,
                         what="the loop turning again")
    finally:
        watch.stop()
    assert watch.stalled_for() == 0.0


async def test_livez_reports_a_frozen_loop_and_metrics_still_answer() -> None:
    """The probes are answered from a thread: while the loop is blocked, /livez says so (503)
    and /metrics answers, where a server on the loop would not answer at all."""
    registry = CollectorRegistry()
    lag = Histogram("loom_event_loop_lag_seconds", "lag", registry=registry)
    watch = LoopWatch(lag.observe, interval=0.02)
    watch.start()
    server = HealthServer(lambda: LIVE, registry, watch=watch, stall_after_s=0.3)
    await server.start()
    answers: dict[str, tuple[int, str]] = {}
    frozen = threading.Event()

    def probe_while_frozen() -> None:
        frozen.wait(5)
        # The loop is blocked now (the test's own thread sleeps in it).
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            status, body = _get(server.port, "/livez", timeout=1)
            if status == 503:
                answers["livez"] = (status, body)
                break
        answers["metrics"] = _get(server.port, "/metrics", timeout=1)

    try:
        assert await asyncio.to_thread(_get, server.port, "/livez") == (200, "ok\n")
        prober = threading.Thread(target=probe_while_frozen)
        prober.start()
        frozen.set()
        began = time.monotonic()
        while prober.is_alive() and time.monotonic() - began < 8:
            time.sleep(0.05)  # the loop is blocked on purpose: the probe must see it
        prober.join(timeout=1)
        assert answers["livez"][0] == 503, answers
        assert "event loop stalled" in answers["livez"][1]
        assert answers["metrics"][0] == 200
        assert "loom_event_loop_lag_seconds" in answers["metrics"][1]
        # Once the loop turns again, /livez recovers.
        await eventually(lambda: asyncio.to_thread(_get, server.port, "/livez"),
                         until=lambda answer: answer[0] == 200, timeout=5,
                         what="/livez after the loop turned again")
    finally:
        await server.stop()
        watch.stop()


async def test_livez_reports_a_loom_that_is_not_running() -> None:
    server = HealthServer(lambda: Health(running=False), CollectorRegistry())
    await server.start()
    try:
        assert await asyncio.to_thread(_get, server.port, "/livez") == (503, "not running\n")
        assert (await asyncio.to_thread(_get, server.port, "/nowhere"))[0] == 404
    finally:
        await server.stop()


async def test_a_page_is_answered_on_the_loop() -> None:
    server = HealthServer(lambda: LIVE, CollectorRegistry())
    seen: list[tuple[str, str, bool]] = []

    async def page(path: str, query: str) -> tuple[int, str, bytes]:
        seen.append((path, query, asyncio.get_running_loop() is loop))
        return 200, "text/plain", b"hello\n"

    loop = asyncio.get_running_loop()
    server.add_page("/hello", page)
    await server.start()
    try:
        assert await asyncio.to_thread(_get, server.port, "/hello/x?q=1") == (200, "hello\n")
        assert seen == [("/hello/x", "q=1", True)]
    finally:
        await server.stop()


# --- gauges at rest ---------------------------------------------------------------------------


@pytest.mark.kafka
@pytest.mark.temporal
async def test_in_flight_and_running_gauges_are_zero_at_rest(
    temporal_client: Client,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    task_queue: str,
) -> None:
    """After every event is delivered, ``loom_in_flight`` and ``loom_calls_running`` read 0
    (they used to keep the last coalesced call's size and 1)."""
    topic, dlq = await new_topic(partitions=2), await new_topic()
    prefix = uuid.uuid4().hex[:6]
    events = recorder.step_events(prefix, 10, 20, type="test.rest", source="test://rest")
    await publish(await make_producer(), topic, events)
    expected = recorder.expected_by_workflow(events, "rest-")
    router = Router([
        Route("rest", Match(type="test.rest"), data=Step, action=SignalWithStart(
            workflow=InboxRecorderWorkflow, task_queue=task_queue,
            workflow_id="rest-{data.entity}",
        )),
    ])
    settings = loom_settings(loom_kafka_bootstrap, [topic], dlq, dispatch={"max_in_flight": 8})
    loom = Loom(router, temporal_client, settings)
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[InboxRecorderWorkflow]):
        async with running(loom):
            await wait_delivered(temporal_client, expected, 90)
            await eventually(lambda: loom.dispatcher.in_flight, until=lambda n: n == 0,
                             timeout=30, what="the dispatcher at rest")
            # Calls carried several events (the gauges had batches to show, and used to keep
            # the last one's size).
            samples = {s.name: s.value for f in loom.metrics.batch_events.collect()
                       for s in f.samples}
            assert samples["loom_batch_events_sum"] > samples["loom_batch_events_count"] > 0
            assert metric_total(loom.metrics.in_flight) == 0
            assert metric_total(loom.metrics.running) == 0
