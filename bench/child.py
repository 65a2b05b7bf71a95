"""One measured path (or the worker) in its own process: ``python -m bench.child MODE CONFIG``.

Each path runs alone in its process, so its CPU time (``time.process_time``: every thread,
including the Temporal SDK's Rust core and aiokafka) and its RSS are its own. The process
talks to the orchestrator with JSON lines on stdout:

- ``{"event": "ready"}`` once connected (worker) or subscribed;
- ``{"event": "window"}`` when its measured window opens (first record consumed, or first call);
- ``{"event": "throughput", ...}`` (loom only) once the backlog is committed: the orchestrator
  then produces the paced latency events;
- ``{"event": "result", ...}`` at the end.

Modes: ``worker`` (runs ``BenchWorkflow`` until SIGTERM), ``ceiling``, ``naive``,
``faststream`` (the subscriber a FastStream user writes: one awaited signal-with-start per
message), ``loom`` (its route shape from ``route``, see ``bench.workload.ROUTES``), ``probe``
(the batched-call limit: signal-with-start of ``loom_events`` carrying ``batch`` events per
call, the call a coalesced backlog makes, straight from the client). ``temporal`` in the
config may be a proxy's address that adds latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from bench.workload import (
    WORKFLOW_TYPE,
    BenchWorkflow,
    bench_router,
    ce_payload,
    make_event,
    naive_payload,
)
from bridge.actions import Outcome
from bridge.events import EVENT_SIGNAL, EVENTS_SIGNAL
from bridge.kafka.record import Record
from bridge.map.recording import RecordedExecutor
from bridge.settings import LoomSettings
from bridge.sidecar.liveness import LoopWatch
from bridge.sidecar.loop import Loom, _Job, running
from bridge.sidecar.metrics import Metrics, metric_total
from bridge.telemetry.tracing import header_hook

#: The consumer groups of every path: the embedded broker holds a new group's first join for
#: half the session timeout (15 s at the loom's default of 30 s, 5 s at aiokafka's 10 s); the
#: measured window opens at the first record, so a shorter timeout only shortens the wait.
SESSION_TIMEOUT_MS, HEARTBEAT_INTERVAL_MS = 6_000, 1_000


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def rss_mb() -> float:
    """Current resident set size of this process, from /proc."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def connect(cfg: dict[str, Any]) -> Client:
    return await Client.connect(cfg["temporal"], data_converter=pydantic_data_converter)


async def start_signal(client: Client, cfg: dict[str, Any], wf: str, payload: Any,
                       signal: str = EVENT_SIGNAL) -> None:
    """The call a user writes by hand: signal-with-start through the high-level client."""
    await client.start_workflow(
        WORKFLOW_TYPE,
        id=wf,
        task_queue=cfg["task_queue"],
        start_signal=signal,
        start_signal_args=[payload],
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )


# --- worker --------------------------------------------------------------------------------


async def run_worker(cfg: dict[str, Any]) -> None:
    client = await connect(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Worker(client, task_queue=cfg["task_queue"], workflows=[BenchWorkflow]):
        emit("ready")
        await stop.wait()


# --- ceiling: the Temporal client alone ------------------------------------------------------


async def run_ceiling(cfg: dict[str, Any]) -> None:
    client = await connect(cfg)
    n_events, workflows, phase = cfg["events"], cfg["workflows"], cfg["phase"]
    calls = [
        (ev.data["wf"], ev.to_payload())
        for ev in (make_event(phase, n, workflows) for n in range(n_events))
    ]
    emit("ready")
    work: Iterator[tuple[str, Any]] = iter(calls)

    async def lane() -> None:
        for wf, payload in work:
            await start_signal(client, cfg, wf, payload)

    cpu0, t0 = time.process_time(), time.perf_counter()
    emit("window")
    await asyncio.gather(*(lane() for _ in range(cfg["concurrency"])))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    emit("result", events=n_events, seconds=elapsed, eps=n_events / elapsed,
         cpu_us_per_event=cpu / n_events * 1e6, rss_mb=peak_rss_mb())


# --- probe: the batched-call limit ------------------------------------------------------------


async def run_probe(cfg: dict[str, Any]) -> None:
    """What the server and the client sustain when every call carries ``batch`` events: the
    same events over the same ids as the ceiling, cut into calls of ``batch`` events, call
    ``k`` to id ``k mod workflows`` (no Kafka, no order: the limit a coalescing loom nears)."""
    client = await connect(cfg)
    n_events, workflows, phase, size = cfg["events"], cfg["workflows"], cfg["phase"], cfg["batch"]
    payloads = [make_event(phase, n, workflows).to_payload() for n in range(n_events)]
    calls = [
        (f"{phase}-wf-{k % workflows}", payloads[start:start + size])
        for k, start in enumerate(range(0, n_events, size))
    ]
    emit("ready")
    work: Iterator[tuple[str, Any]] = iter(calls)

    async def lane() -> None:
        for wf, batch in work:
            await start_signal(client, cfg, wf, batch, signal=EVENTS_SIGNAL)

    cpu0, t0 = time.process_time(), time.perf_counter()
    emit("window")
    await asyncio.gather(*(lane() for _ in range(cfg["concurrency"])))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    emit("result", events=n_events, seconds=elapsed, eps=n_events / elapsed,
         cpu_us_per_event=cpu / n_events * 1e6, rss_mb=peak_rss_mb(), calls=len(calls))


# --- naive: one awaited call per record, auto-commit --------------------------------------------


async def run_faststream(cfg: dict[str, Any]) -> None:
    """The FastStream subscriber a user writes instead of a hand-written aiokafka loop: the
    broker's defaults (one message at a time), one awaited signal-with-start per message."""
    from faststream.kafka import KafkaBroker
    from faststream.kafka.annotations import KafkaMessage

    client = await connect(cfg)
    n_events = cfg["events"]
    broker = KafkaBroker(cfg["bootstrap"], logger=None)
    finished = asyncio.Event()
    done = 0
    cpu0 = t0 = 0.0

    @broker.subscriber(cfg["topic"], group_id=f"faststream-{cfg['phase']}",
                       auto_offset_reset="earliest", session_timeout_ms=SESSION_TIMEOUT_MS,
                       heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS)
    async def handle(body: dict[str, Any], msg: KafkaMessage) -> None:
        nonlocal done, cpu0, t0
        if done == 0:
            cpu0, t0 = time.process_time(), time.perf_counter()
            emit("window")
        raw: Any = msg.raw_message  # FastStream decoded the JSON body; the ce_ headers here
        wf, payload = ce_payload(list(raw.headers), body)
        await start_signal(client, cfg, wf, payload)
        done += 1
        if done >= n_events:
            finished.set()

    await broker.start()
    emit("ready")
    try:
        await finished.wait()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        await broker.stop()
    emit("result", events=n_events, seconds=elapsed, eps=n_events / elapsed,
         cpu_us_per_event=cpu / n_events * 1e6, rss_mb=peak_rss_mb())


async def run_naive(cfg: dict[str, Any]) -> None:
    client = await connect(cfg)
    n_events = cfg["events"]
    consumer = AIOKafkaConsumer(
        cfg["topic"],
        bootstrap_servers=cfg["bootstrap"],
        group_id=f"naive-{cfg['phase']}",
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
    )
    await consumer.start()
    emit("ready")
    done = 0
    cpu0 = t0 = 0.0
    try:
        async for rec in consumer:
            if done == 0:
                cpu0, t0 = time.process_time(), time.perf_counter()
                emit("window")
            wf, payload = naive_payload(list(rec.headers), rec.value)
            await start_signal(client, cfg, wf, payload)
            done += 1
            if done >= n_events:
                break
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        await consumer.stop()
    emit("result", events=n_events, seconds=elapsed, eps=n_events / elapsed,
         cpu_us_per_event=cpu / n_events * 1e6, rss_mb=peak_rss_mb())


# --- loom ----------------------------------------------------------------------------------------


class TimedLoom(Loom):
    """The loom, unchanged, plus stamps: first record taken, and (while the paced latency
    phase runs) produce -> taken and taken -> Temporal acknowledgement per record."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.first: float | None = None
        self.first_cpu = 0.0
        self.acked = 0
        self.timing = False
        self.latency_ms: list[float] = []  # produce (Kafka CreateTime) -> Temporal ack
        self.consume_ms: list[float] = []  # produce -> taken from the consumer
        self.call_ms: list[float] = []  # taken -> ack: dispatch queue + the Temporal call
        self._taken: dict[tuple[int, int], float] = {}

    async def _take(self, tp: TopicPartition, record: Record) -> None:
        if self.first is None:
            self.first, self.first_cpu = time.perf_counter(), time.process_time()
        if self.timing and record.timestamp is not None:
            now = time.time() * 1000
            self.consume_ms.append(now - record.timestamp)
            self._taken[record.partition, record.offset] = now
        await super()._take(tp, record)

    def _on_done(self, job: _Job, result: tuple[Outcome, Any]) -> None:
        super()._on_done(job, result)
        self.acked += 1
        record = job.record
        if self.timing and record.timestamp is not None:
            now = time.time() * 1000
            self.latency_ms.append(now - record.timestamp)
            taken = self._taken.pop((record.partition, record.offset), None)
            if taken is not None:
                self.call_ms.append(now - taken)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run_loom(cfg: dict[str, Any]) -> None:
    client = await connect(cfg)
    n_events, n_latency = cfg["events"], cfg["latency_events"]
    settings = LoomSettings.model_validate({
        "kafka": {
            "bootstrap": cfg["bootstrap"], "topics": [cfg["topic"]],
            "deadletter_topic": cfg["deadletter_topic"], "group_id": f"loom-{cfg['phase']}",
            "session_timeout_ms": SESSION_TIMEOUT_MS, "heartbeat_interval_ms": HEARTBEAT_INTERVAL_MS,
            **({} if cfg.get("max_uncommitted") is None
               else {"max_uncommitted": cfg["max_uncommitted"]}),
        },
        "dispatch": {
            "max_in_flight": cfg["concurrency"], "max_buffered": cfg.get("max_buffered") or None,
        },
        "http_port": 0,
    })
    # The choreography map's recording, on or off (off is the loom's default outside the
    # sidecar): the same loom, plus its hooks and the recording executor when on.
    metrics = Metrics()
    executor = None
    if cfg.get("recording"):
        m = settings.map
        metrics.recording.configure(enabled=True, max_entries=m.max_entries,
                                    max_bytes=m.max_bytes, keep_data=False)
        executor = RecordedExecutor(client, payload_limit=settings.temporal.payload_limit_bytes,
                                    header_hook=header_hook(),
                                    signal_limit_retry_s=settings.dispatch.signal_limit_retry_s,
                                    closed_query_timeout=timedelta(
                                        seconds=settings.temporal.closed_query_timeout_s))
        executor.recording = metrics.recording
    router = bench_router(cfg["task_queue"], cfg.get("coalesce"), cfg.get("route", "class"),
                          cfg.get("decoys", 0))
    loom = TimedLoom(router, client, settings, metrics=metrics, executor=executor)
    # The loop's lag, as the sidecar samples it for loom_event_loop_lag_seconds, kept whole
    # here for exact percentiles (the histogram's buckets are coarse near 250 ms).
    lags: list[float] = []
    watch = LoopWatch(lags.append, interval=0.1, warn_after_s=float("inf"))
    rss_series: list[tuple[float, int, float]] = []
    running_samples: list[int] = []  # dispatcher.running every 10 ms of the measured window
    accepted_samples: list[int] = []

    def committed() -> float:
        return metric_total(loom.metrics.committed)

    async with running(loom):
        base_rss = rss_mb()
        watch.start()
        emit("ready")
        while loom.first is None:
            await asyncio.sleep(0.001)
        t0, cpu0 = loom.first, loom.first_cpu
        emit("window")
        next_sample = 0.0
        # The commit count is read ten times a second until every event is acknowledged, then
        # at every 10 ms sample: reading the metric collects it, and at 100 reads a second that
        # was 4.6% of this process's CPU samples under py-spy (the harness, not the loom).
        next_check = 0.0
        while True:
            now = time.perf_counter() - t0
            if now >= next_check or loom.acked >= n_events:
                if committed() >= n_events:
                    break
                next_check = now + 0.1
            if now >= next_sample:
                rss_series.append((round(now, 1), loom.acked, round(rss_mb(), 1)))
                next_sample += cfg["rss_every_s"]
            if loom.error is not None:
                raise loom.error
            running_samples.append(loom.dispatcher.running)
            accepted_samples.append(loom.dispatcher.in_flight)
            await asyncio.sleep(0.01)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        rss_series.append((round(elapsed, 1), loom.acked, round(rss_mb(), 1)))
        eps = n_events / elapsed
        loom.timing = bool(n_latency)
        emit("throughput", eps=eps)
        if n_latency:
            while committed() < n_events + n_latency:
                await asyncio.sleep(0.02)
            loom.timing = False
        watch.stop()
    latencies = loom.latency_ms
    emit(
        "result",
        events=n_events,
        seconds=elapsed,
        eps=eps,
        cpu_us_per_event=cpu / n_events * 1e6,
        rss_mb=peak_rss_mb(),
        base_rss_mb=base_rss,
        max_buffered_bytes=settings.dispatch.max_buffered_bytes,
        lag_p99_ms=percentile(lags, 0.99) * 1000,
        lag_max_ms=max(lags, default=0.0) * 1000,
        rss_series=rss_series,
        ring_entries=len(loom.metrics.recording.ring),
        ring_bytes=loom.metrics.recording.bytes,
        ring_bound=settings.map.max_bytes,
        latency_events=len(latencies),
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        consume_p50_ms=percentile(loom.consume_ms, 0.50),
        consume_p99_ms=percentile(loom.consume_ms, 0.99),
        call_p50_ms=percentile(loom.call_ms, 0.50),
        call_p99_ms=percentile(loom.call_ms, 0.99),
        deadlettered=metric_total(loom.metrics.deadlettered),
        duplicates=metric_total(loom.metrics.routed, outcome=Outcome.DUPLICATE.value),
        pauses=metric_total(loom.metrics.paused),
        max_buffered=loom.settings.dispatch.buffered_bound or "bytes",
        running_mean=sum(running_samples) / max(1, len(running_samples)),
        running_max=max(running_samples, default=0),
        accepted_mean=sum(accepted_samples) / max(1, len(accepted_samples)),
        batches=batch_distribution(loom),
    )


def batch_distribution(loom: Loom) -> dict[str, float]:
    """Calls by events carried (``loom_batch_events``'s buckets, not cumulative: ``"1"``,
    ``"2"``, ``"3-4"``, ...), and ``calls``, ``events``, ``mean``: every call of the run."""
    out: dict[str, float] = {}
    below, low = 0.0, 1
    total = count = 0.0
    for family in loom.metrics.batch_events.collect():
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                le = sample.labels["le"]
                high = le if le == "+Inf" else str(int(float(le)))
                label = high if str(low) == high else f"{low}-{high}"
                out[label] = sample.value - below
                below = sample.value
                low = int(float(le)) + 1 if le != "+Inf" else low
            elif sample.name.endswith("_sum"):
                total = sample.value
            elif sample.name.endswith("_count"):
                count = sample.value
    out = {k: v for k, v in out.items() if v}
    out.update(calls=count, events=total, mean=total / count if count else 0.0)
    return out


MODES = {
    "worker": run_worker, "ceiling": run_ceiling, "naive": run_naive,
    "faststream": run_faststream, "loom": run_loom, "probe": run_probe,
}


def main(argv: list[str]) -> None:
    mode, cfg = argv[0], json.loads(argv[1])
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(MODES[mode](cfg))
    # Skip interpreter finalization: the Temporal SDK's core threads can abort it
    # ("PyGILState_Release ... finalizing") after the result was already reported.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
