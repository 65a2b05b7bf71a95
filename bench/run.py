"""The orchestrator of ``python -m bench``: servers once, then each path in its own process.

Order of a full run: a warm-up (ceiling, small), then rounds that alternate their order
(ceiling, naive, faststream, loom, the loom with the map's recording on (``loom_rec``),
then the hot-key workload: ceiling and loom on 10 workflow
ids, directly and with +20 ms per round trip to Temporal; the next round backwards). Each
figure is the mean over the rounds, so the drift of the server over the run (it holds more
workflows as it goes) falls on every path alike. Every path sends the same events (one per
record, binary mode, ~300 bytes of data) to the same ``BenchWorkflow`` run by the same worker
process; each phase uses its own topic and its own workflow ids. The loom paths drain a
backlog (the topic is full before the loom starts), which is when events queue behind their
workflow id and coalesce.

Two backlog paths measure what users without ``LoomWorkflow`` get (``--backlog-events``, 30,000
by default, over the same ids): ``byname`` (signal-with-start of the workflow given by name:
no coalescing) and ``uws`` (update-with-start: never coalesces), each with its loop lag p99
and its RSS against the byte bound. The ``probe`` path is the batched-call limit: the same
events, 64 per signal-with-start, straight from the client; ``ratio_limit`` is the loom's
backlog throughput over it.

The +20 ms paths reach Temporal through the fault suite's TCP proxy
(``tests/faults/proxy.py``, 10 ms per chunk each way), a managed Temporal in another zone; the
worker stays on the direct address.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from rich.console import Console
from rich.table import Table

from bench import router_bench
from bench.workload import PAD, make_event
from bridge.dev import EmbeddedKafka, EmbeddedTemporal, create_topic
from bridge.kafka.binding import encode

TARGETS = {
    "ratio_ceiling": 3.0,
    "ratio_naive": 1.5,
    "hot_ratio_ceiling": 5.0,
    "hot_rtt20_ratio_ceiling": 5.0,
    "ratio_faststream": 5.0,
    "cpu_us_per_event": 150.0,
    "p99_ms": 440.0,
    "router_mps_10k": 200_000.0,
    "router_bound_mps_10k": 200_000.0,
    "soak_rss_growth_pct": 10.0,
    "ratio_limit": 0.5,  # issue 26: backlog >= 0.5 of the batched-call limit (or >= 10x ceiling)
    "byname_ratio_ceiling": 0.9,
    "uws_ratio_ceiling": 0.9,
    "lag_p99_ms": 250.0,
    "byname_lag_p99_ms": 250.0,
    "uws_lag_p99_ms": 250.0,
}
RSS_HEADROOM_MB = 100.0  # a backlog path's peak RSS target: max_buffered_bytes + this
BACKLOGS = ("byname", "uws")  # the loom paths without coalescing (bench.workload.ROUTES)
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Options:
    """What ``python -m bench`` measures (see ``bench/__main__.py`` for the flags)."""

    events: int = 20_000
    workflows: int = 500
    partitions: int = 4
    concurrency: int = 256
    max_buffered: int = 0  # the loom's; 0: no bound on the count (its bytes bound it)
    max_uncommitted: int | None = None  # the loom's read-ahead per partition (None: default)
    naive_events: int = 5_000
    faststream_events: int = 5_000
    hot_workflows: int = 10  # the hot-key workload: the same events over this many ids
    hot: bool = True
    rtt_ms: float = 20.0  # added per round trip to Temporal on the second hot-key run
    coalesce: bool | None = None  # the loom route's (None: its default, on)
    latency_events: int = 2_000
    latency_load: float = 0.5
    soak: bool = False
    soak_events: int = 200_000
    router_rounds: int = 200_000
    router_only: bool = False
    router_sizes: tuple[int, ...] = router_bench.SIZES
    warmup_events: int = 1_000
    rounds: int = 2
    map_only: bool = False  # only the loom, with the map's recording off and on, side by side
    backlog: bool = True  # the byname and uws backlog paths
    backlog_events: int = 30_000
    probe: bool = True  # the batched-call limit (ratio_limit)
    probe_batch: int = 64
    growth: bool = False  # only the growth table (bench/growth.py)
    growth_events: int = 3_000


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process (all its threads), from /proc/<pid>/stat."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15)


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (everything but idle and iowait)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / _TICK


class Child:
    """A ``bench.child`` process: JSON lines in, stopped by its own pid."""

    def __init__(self, proc: asyncio.subprocess.Process, mode: str) -> None:
        self.proc = proc
        self.mode = mode

    @classmethod
    async def start(cls, mode: str, cfg: dict[str, Any]) -> Child:
        argv = [sys.executable, "-m", "bench.child", mode, json.dumps(cfg)]
        # BENCH_PYSPY=loom:/tmp/loom.txt profiles one path with py-spy (pip install py-spy).
        spy_mode, _, spy_out = os.environ.get("BENCH_PYSPY", "").partition(":")
        if spy_mode == mode:
            argv = [str(Path(sys.executable).parent / "py-spy"), "record", "--nonblocking",
                    "--format", "raw", "--threads", "-o", spy_out or f"/tmp/{mode}.txt", "--", *argv]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(proc, mode)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def expect(self, event: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                code = await self.proc.wait()
                raise RuntimeError(f"bench child {self.mode!r} exited ({code}) before {event!r}")
            try:
                msg: dict[str, Any] = json.loads(line)
            except ValueError:
                sys.stderr.write(line.decode(errors="replace"))  # stray output: pass it on
                continue
            if msg.get("event") == event:
                return msg

    async def stop(self, grace: float = 0.0) -> None:
        """Wait ``grace`` seconds for the process to exit by itself, then SIGTERM it."""
        if grace:
            try:
                async with asyncio.timeout(grace):
                    await self.proc.wait()
            except TimeoutError:
                pass
        if self.proc.returncode is None:
            self.proc.terminate()
        await self.proc.wait()


class Bench:
    def __init__(self, opts: Options, temporal: EmbeddedTemporal, kafka: EmbeddedKafka) -> None:
        self.opts = opts
        self.temporal = temporal
        self.kafka = kafka
        self.task_queue = f"bench-{uuid.uuid4().hex[:8]}"
        self.worker: Child | None = None
        self.ceilings: list[float] = []  # events/s of the standard ceiling runs so far
        self.producer: Any = None

    def others(self) -> dict[str, float]:
        """CPU seconds so far of the other processes sharing the cores, and of the machine."""
        return {
            "temporal": cpu_seconds(self.temporal.pid),
            "broker": cpu_seconds(self.kafka.pid),
            "worker": cpu_seconds(self.worker.pid if self.worker else None),
            "machine": machine_busy_seconds(),
            "wall": time.perf_counter(),
        }

    def cfg(self, phase: str, events: int, **extra: Any) -> dict[str, Any]:
        return {
            "temporal": self.temporal.address, "bootstrap": self.kafka.bootstrap,
            "task_queue": self.task_queue, "phase": phase, "events": events,
            "workflows": self.opts.workflows, "concurrency": self.opts.concurrency,
            "max_buffered": self.opts.max_buffered,
            "max_uncommitted": self.opts.max_uncommitted, **extra,
        }

    async def topic(self, phase: str) -> str:
        name = f"bench-{phase}-{uuid.uuid4().hex[:6]}"
        await create_topic(self.kafka.bootstrap, name, self.opts.partitions)
        return name

    async def produce(self, topic: str, phase: str, first: int, count: int,
                      rate: float | None = None, workflows: int | None = None,
                      pad: str = PAD) -> None:
        """Produce events ``first .. first+count-1``; at ``rate`` per second when given."""
        workflows = workflows or self.opts.workflows
        started = time.perf_counter()
        futures = []
        for i in range(count):
            if rate is not None:
                due = started + i / rate
                delay = due - time.perf_counter()
                if delay > 0.002:
                    await asyncio.sleep(delay)
            key, value, headers = encode(make_event(phase, first + i, workflows, pad))
            futures.append(await self.producer.send(
                topic, value=value, key=key, headers=headers,
                timestamp_ms=int(time.time() * 1000),
            ))
            if len(futures) >= 5_000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)

    async def phase(self, mode: str, phase: str, events: int, **extra: Any) -> dict[str, Any]:
        """Run one path in its own process and return its figures."""
        topic = None
        workflows = extra.get("workflows") or self.opts.workflows
        if mode not in ("ceiling", "probe"):
            topic = await self.topic(phase)
            await self.produce(topic, phase, 0, events, workflows=workflows,
                               pad=extra.get("pad", PAD))
        cfg = self.cfg(phase, events, topic=topic,
                       **{k: v for k, v in extra.items() if k != "pad"})
        cfg["coalesce"] = self.opts.coalesce
        if mode == "loom":
            cfg["deadletter_topic"] = await self.topic(f"{phase}-dlq")
        child = await Child.start(mode, cfg)
        try:
            await child.expect("ready")
            await child.expect("window")
            before = self.others()
            if mode == "loom":
                thr = await child.expect("throughput")
                after = self.others()
                if extra.get("latency_events"):
                    # Paced events at half of what one call per event sustains: the loom's
                    # backlog throughput with coalescing is more than paced events over many
                    # ids can use (they queue behind their id only when calls lag behind).
                    base = min([thr["eps"], *self.ceilings[-1:]])
                    rate = max(1.0, base * self.opts.latency_load)
                    extra["latency_rate"] = rate
                    await self.produce(topic or "", phase, events, extra["latency_events"], rate,
                                       workflows=workflows)
                result = await child.expect("result")
            else:
                result = await child.expect("result")
                after = self.others()
        finally:
            await child.stop(grace=30.0)
        delta = {name: after[name] - before[name] for name in after}
        result["others_us_per_event"] = {
            name: delta[name] / events * 1e6 for name in ("temporal", "broker", "worker")
        }
        # Load from outside this benchmark (other jobs on the machine), in cores.
        ours = result["cpu_us_per_event"] * events / 1e6
        ours += delta["temporal"] + delta["broker"] + delta["worker"]
        result["foreign_cores"] = max(0.0, delta["machine"] - ours) / delta["wall"]
        result["mode"], result["phase"] = extra.get("label", mode), phase
        if result["mode"] == "ceiling" and phase != "warmup":
            self.ceilings.append(float(result["eps"]))
        if "latency_rate" in extra:
            result["latency_rate"] = extra["latency_rate"]
        return result

    async def __aenter__(self) -> Bench:
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.kafka.bootstrap, enable_idempotence=False, linger_ms=5,
            max_batch_size=256 * 1024,
        )
        await self.producer.start()
        self.worker = await Child.start("worker", self.cfg("worker", 0))
        await self.worker.expect("ready")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.worker is not None:
            await self.worker.stop()
        if self.producer is not None:
            await self.producer.stop()


def router_figures(rounds: int) -> dict[int, dict[str, float]]:
    """Matches/s of each ``router_bench.SERIES`` per router size, measured side by side."""
    return {size: router_bench.measure_side_by_side(size, rounds) for size in router_bench.SIZES}


def fault_proxy(target: str, latency: float) -> Any:
    """The fault suite's TCP proxy (``tests/faults/proxy.py``) in front of ``target``."""
    tests = str(Path(__file__).resolve().parent.parent / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    proxy_class = importlib.import_module("faults.proxy").FaultProxy
    return proxy_class(int(target.rpartition(":")[2]), latency=latency)


async def comparison(opts: Options, console: Console) -> dict[str, Any]:
    async with EmbeddedTemporal() as temporal, EmbeddedKafka() as kafka, \
            Bench(opts, temporal, kafka) as bench, \
            fault_proxy(temporal.address, opts.rtt_ms / 2000) as far:
        console.print(f"[dim]servers up: temporal pid {temporal.pid}, broker pid {kafka.pid}, "
                      f"worker pid {bench.worker.pid if bench.worker else '?'}[/dim]")
        runs: list[dict[str, Any]] = []
        if opts.warmup_events:
            await bench.phase("ceiling", "warmup", opts.warmup_events)
        loom_extra = {"latency_events": opts.latency_events, "rss_every_s": 1.0}
        hot_loom = {"latency_events": 0, "rss_every_s": 1.0, "workflows": opts.hot_workflows}
        rtt = f"rtt{opts.rtt_ms:g}"
        paths: list[tuple[str, int, dict[str, Any]]] = [
            ("ceiling", opts.events, {}),
            ("naive", opts.naive_events, {}),
            ("faststream", opts.faststream_events, {}),
            ("loom", opts.events, loom_extra),
            ("loom", opts.events, {**loom_extra, "label": "loom_rec", "recording": True}),
        ]
        if opts.probe and not opts.map_only:
            paths.append(("probe", opts.events, {"batch": opts.probe_batch}))
        if opts.backlog and not opts.map_only:
            paths += [("loom", opts.backlog_events, {"label": f"{route}_loom", "route": route,
                                                     "latency_events": 0, "rss_every_s": 1.0})
                      for route in BACKLOGS]
        if opts.map_only:
            paths = [("loom", opts.events, {"rss_every_s": 1.0, "latency_events": 0}),
                     ("loom", opts.events, {"label": "loom_rec", "recording": True,
                                            "rss_every_s": 1.0, "latency_events": 0})]
        if opts.hot and not opts.map_only:
            paths += [
                ("ceiling", opts.events, {"label": "hot_ceiling", "workflows": opts.hot_workflows}),
                ("loom", opts.events, {"label": "hot_loom", **hot_loom}),
                ("ceiling", opts.events, {"label": f"hot_{rtt}_ceiling",
                                          "workflows": opts.hot_workflows,
                                          "temporal": far.address}),
                ("loom", opts.events, {"label": f"hot_{rtt}_loom", "temporal": far.address,
                                       **hot_loom}),
            ]
        for n in range(1, opts.rounds + 1):
            # Alternate the order: the server holds more workflows as the run goes on.
            for mode, events, extra in paths if n % 2 else paths[::-1]:
                phase = f"{extra.get('label', mode).replace('_', '-')}-{n}"
                console.print(f"[dim]{phase}: {events:,} events ...[/dim]")
                runs.append(await bench.phase(mode, phase, events, **dict(extra)))
    if opts.map_only:
        return recording_cost(runs)
    router = router_figures(opts.router_rounds)
    return summarize(runs, router, opts)


def recording_cost(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The map's recording on against off: backlog throughput (target: on >= 97% of off) and
    the ring's memory against its bound."""
    def eps(mode: str) -> list[float]:
        return [float(r["eps"]) for r in runs if r["mode"] == mode]

    off, on = eps("loom"), eps("loom_rec")
    rec = [r for r in runs if r["mode"] == "loom_rec"]
    return {
        "runs": runs,
        "loom_eps": sum(off) / len(off),
        "loom_rec_eps": sum(on) / len(on),
        "recording_ratio": (sum(on) / len(on)) / (sum(off) / len(off)),
        "ring_bytes_max": max(r["ring_bytes"] for r in rec),
        "ring_bound": rec[0]["ring_bound"],
        "foreign_cores": sum(r["foreign_cores"] for r in runs) / len(runs),
    }


async def soak(opts: Options, console: Console) -> dict[str, Any]:
    async with EmbeddedTemporal() as temporal, EmbeddedKafka() as kafka, \
            Bench(opts, temporal, kafka) as bench:
        console.print(f"[dim]soak: producing {opts.soak_events:,} events ...[/dim]")
        run = await bench.phase("loom", "soak", opts.soak_events, latency_events=0,
                                rss_every_s=2.0)
    series = run["rss_series"]
    # Steady state under the same load, early vs late: the median RSS of the samples taken
    # between 10% and 30% of the events acknowledged, and between 70% and 95%. (The last
    # sample, taken once the pipeline drained, would understate growth.)
    def median_rss(lo: float, hi: float) -> float:
        window = sorted(
            s[2] for s in series if lo * opts.soak_events <= s[1] <= hi * opts.soak_events
        ) or [series[-1][2]]
        return float(window[len(window) // 2])

    base, late = median_rss(0.10, 0.30), median_rss(0.70, 0.95)
    growth = (late - base) / base * 100
    return {"run": run, "base": base, "late": late, "growth_pct": growth, "series": series}


def summarize(runs: list[dict[str, Any]], router: dict[int, dict[str, float]],
              opts: Options) -> dict[str, Any]:
    def mean(mode: str, key: str) -> float:
        values = [float(r[key]) for r in runs if r["mode"] == mode]
        return sum(values) / len(values) if values else float("nan")

    loom_eps, ceiling_eps, naive_eps = (mean(m, "eps") for m in ("loom", "ceiling", "naive"))
    faststream_eps = mean("faststream", "eps")
    out = {
        "runs": runs,
        "router": router,
        "loom_eps": loom_eps,
        "ceiling_eps": ceiling_eps,
        "naive_eps": naive_eps,
        "faststream_eps": faststream_eps,
        "ratio_ceiling": loom_eps / ceiling_eps,
        "ratio_naive": loom_eps / naive_eps,
        "ratio_faststream": loom_eps / faststream_eps,
        "p50_ms": mean("loom", "p50_ms"),
        "p99_ms": mean("loom", "p99_ms"),
        "cpu_us_per_event": mean("loom", "cpu_us_per_event"),
        "rss_mb": max(r["rss_mb"] for r in runs if r["mode"] == "loom"),
        "loom_rec_eps": mean("loom_rec", "eps"),
        "recording_ratio": mean("loom_rec", "eps") / loom_eps,
        "router_mps_10k": router[10_000]["plain"],
        "router_bound_mps_10k": router[10_000]["bound"],
        "ratio_router_bound_10k": router[10_000]["bound"] / router[10_000]["plain"],
        "foreign_cores": sum(r["foreign_cores"] for r in runs) / len(runs),
        "batch_events": {"loom": batches(runs, "loom")},
        "lag_p99_ms": mean("loom", "lag_p99_ms"),
    }
    if opts.probe:
        out["probe_eps"] = mean("probe", "eps")
        out["probe_cpu_us_per_event"] = mean("probe", "cpu_us_per_event")
        out["ratio_probe_ceiling"] = out["probe_eps"] / ceiling_eps
        out["ratio_limit"] = loom_eps / out["probe_eps"]
    if opts.backlog:
        for route in BACKLOGS:
            mode = f"{route}_loom"
            eps = mean(mode, "eps")
            out[f"{route}_loom_eps"] = eps
            out[f"{route}_ratio_ceiling"] = eps / ceiling_eps
            out[f"{route}_cpu_us_per_event"] = mean(mode, "cpu_us_per_event")
            out[f"{route}_lag_p99_ms"] = mean(mode, "lag_p99_ms")
            out[f"{route}_lag_max_ms"] = max(r["lag_max_ms"] for r in runs if r["mode"] == mode)
            out[f"{route}_rss_mb"] = max(r["rss_mb"] for r in runs if r["mode"] == mode)
            out[f"{route}_rss_bound_mb"] = max(
                r["max_buffered_bytes"] for r in runs if r["mode"] == mode
            ) / 2**20 + RSS_HEADROOM_MB
            out["batch_events"][route] = batches(runs, mode)
    if opts.hot:
        for hot in ("hot", f"hot_rtt{opts.rtt_ms:g}"):
            loom, ceiling = mean(f"{hot}_loom", "eps"), mean(f"{hot}_ceiling", "eps")
            out[f"{hot}_loom_eps"], out[f"{hot}_ceiling_eps"] = loom, ceiling
            out[f"{hot}_ratio_ceiling"] = loom / ceiling
            out[f"{hot}_cpu_us_per_event"] = mean(f"{hot}_loom", "cpu_us_per_event")
            out["batch_events"][hot] = batches(runs, f"{hot}_loom")
    return out


def batches(runs: list[dict[str, Any]], mode: str) -> dict[str, float]:
    """The loom's calls by events carried, summed over the rounds of ``mode``, and the mean."""
    total: dict[str, float] = {}
    for run in runs:
        if run["mode"] == mode:
            for label, value in run["batches"].items():
                if label != "mean":
                    total[label] = total.get(label, 0.0) + value
    total["mean"] = total.get("events", 0.0) / total["calls"] if total.get("calls") else 0.0
    return total


def _f(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def ceiling_of(summary: dict[str, Any], mode: str) -> float:
    """The mean ceiling a run of ``mode`` compares with (the hot-key runs: their own)."""
    workload = mode.rpartition("_")[0]
    return float(summary.get(f"{workload}_ceiling_eps") or summary["ceiling_eps"])


def render(summary: dict[str, Any], opts: Options, console: Console) -> None:
    table = Table(title=(
        f"temporal-loom on {os.cpu_count()} cores shared by broker, Temporal server, worker "
        f"and the measured path - {opts.partitions} partitions, {opts.workflows} workflow ids, "
        f"concurrency {opts.concurrency}, loom max_buffered "
        f"{opts.max_buffered or 'by bytes'}, read-ahead per partition "
        f"{'default' if opts.max_uncommitted is None else opts.max_uncommitted or 'unbounded'}, "
        f"hot key: {opts.hot_workflows} ids, "
        f"binary-mode CloudEvents"
    ))
    for col in ("run", "events", "s", "events/s", "÷ its ceiling", "own CPU µs/ev",
                "peak RSS MB", "server µs/ev", "broker µs/ev", "worker µs/ev", "foreign cores"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for r in summary["runs"]:
        o = r["others_us_per_event"]
        table.add_row(
            r["phase"], _f(r["events"]), _f(r["seconds"], 1), _f(r["eps"]),
            _f(r["eps"] / ceiling_of(summary, r["mode"]), 2), _f(r["cpu_us_per_event"]),
            _f(r["rss_mb"], 1), _f(o["temporal"]), _f(o["broker"]), _f(o["worker"]),
            _f(r["foreign_cores"], 2),
        )
    console.print(table)
    for r in summary["runs"]:
        if "lag_p99_ms" in r:
            console.print(
                f"{r['phase']}: loop lag p99 {_f(r['lag_p99_ms'], 1)} ms, max "
                f"{_f(r['lag_max_ms'], 1)} ms; RSS {_f(r['base_rss_mb'], 1)} MB at start, peak "
                f"{_f(r['rss_mb'], 1)} MB, max_buffered_bytes "
                f"{_f(r['max_buffered_bytes'] / 2**20, 1)} MiB"
            )
    if "ratio_limit" in summary:
        console.print(
            f"batched-call limit ({opts.probe_batch} events per signal-with-start, same ids): "
            f"{_f(summary['probe_eps'])} events/s = {_f(summary['ratio_probe_ceiling'], 2)} x "
            f"the ceiling, client CPU {_f(summary['probe_cpu_us_per_event'])} µs/event; "
            f"ratio_limit (loom backlog / limit) {_f(summary['ratio_limit'], 3)}"
        )
    for loom in (r for r in summary["runs"] if r["mode"] == "loom"):
        console.print(
            f"{loom['phase']} latency, {loom['latency_events']:,} events produced at "
            f"{_f(loom.get('latency_rate', 0))}/s ({opts.latency_load:.0%} of the lower of its backlog throughput and the ceiling): "
            f"produce -> Temporal ack p50 {_f(loom['p50_ms'], 1)} ms, p99 {_f(loom['p99_ms'], 1)} ms "
            f"(produce -> taken p50 {_f(loom['consume_p50_ms'], 1)} / p99 "
            f"{_f(loom['consume_p99_ms'], 1)}; taken -> ack p50 {_f(loom['call_p50_ms'], 1)} / p99 "
            f"{_f(loom['call_p99_ms'], 1)}); calls running mean {_f(loom['running_mean'])} / "
            f"max {loom['running_max']} of {opts.concurrency}, accepted mean "
            f"{_f(loom['accepted_mean'])} of {loom['max_buffered']}; "
            f"dead-lettered {loom['deadlettered']:.0f}, "
            f"duplicates {loom['duplicates']:.0f}, partition pauses {loom['pauses']:.0f}"
        )
    for mode, dist in summary["batch_events"].items():
        buckets = ", ".join(f"{k}: {_f(v)}" for k, v in dist.items()
                            if k not in ("calls", "events", "mean"))
        console.print(
            f"{mode} events per Temporal call: mean {_f(dist['mean'], 1)} over "
            f"{_f(dist.get('calls', 0))} calls (calls by events carried: {buckets})"
        )
    rt = Table(title="router.match, matches/s (bench/router_bench.py)")
    for col in ("exact-type routes", "plain", "with topic", "bound to 10 topics", "bound/plain"):
        rt.add_column(col, justify="right")
    for size, rates in summary["router"].items():
        rt.add_row(_f(size), _f(rates["plain"]), _f(rates["topic"]), _f(rates["bound"]),
                   _f(rates["bound"] / rates["plain"], 2))
    console.print(rt)
    targets = Table(title=f"targets (means over {opts.rounds} rounds)")
    for col in ("figure", "value", "target", ""):
        targets.add_column(col)
    checks: list[tuple[str, float | None, str, int]] = [
        ("ratio_ceiling", summary["ratio_ceiling"], ">=", 2),
        ("ratio_limit", summary.get("ratio_limit"), ">=", 3),
        ("lag_p99_ms", summary["lag_p99_ms"], "<=", 0),
        ("ratio_naive", summary["ratio_naive"], ">=", 2),
        ("ratio_faststream", summary["ratio_faststream"], ">=", 2),
        ("hot_ratio_ceiling", summary.get("hot_ratio_ceiling"), ">=", 2),
        ("hot_rtt20_ratio_ceiling", summary.get("hot_rtt20_ratio_ceiling"), ">=", 2),
        ("cpu_us_per_event", summary["cpu_us_per_event"], "<=", 0),
        ("p99_ms", summary["p99_ms"], "<=", 0),
        ("router_mps_10k", summary["router_mps_10k"], ">=", 0),
        ("router_bound_mps_10k", summary["router_bound_mps_10k"], ">=", 0),
    ]
    for route in BACKLOGS if opts.backlog else ():
        checks += [(f"{route}_ratio_ceiling", summary[f"{route}_ratio_ceiling"], ">=", 2),
                   (f"{route}_lag_p99_ms", summary[f"{route}_lag_p99_ms"], "<=", 0)]
    for name, value, op, digits in checks:
        if value is None:
            continue
        goal = TARGETS[name]
        met = value >= goal if op == ">=" else value <= goal
        targets.add_row(name, _f(value, digits), f"{op} {_f(goal, digits)}",
                        "met" if met else "[bold red]missed[/bold red]")
    for route in BACKLOGS if opts.backlog else ():
        value, goal = summary[f"{route}_rss_mb"], summary[f"{route}_rss_bound_mb"]
        targets.add_row(f"{route}_rss_mb", _f(value), f"<= {_f(goal)} (bytes bound + "
                        f"{RSS_HEADROOM_MB:.0f})", "met" if value <= goal else
                        "[bold red]missed[/bold red]")
    console.print(targets)


def render_soak(result: dict[str, Any], console: Console) -> None:
    run = result["run"]
    table = Table(title=f"soak: {run['events']:,} events through the loom, RSS of the loom process")
    for col in ("s", "acked", "RSS MB"):
        table.add_column(col, justify="right")
    series = result["series"]
    step = max(1, len(series) // 20)
    for s in [*series[::step], series[-1]] if series[-1] not in series[::step] else series[::step]:
        table.add_row(_f(s[0], 1), _f(s[1]), _f(s[2], 1))
    console.print(table)
    console.print(
        f"soak: {_f(run['eps'])} events/s, {_f(run['cpu_us_per_event'])} µs CPU/event, "
        f"RSS median {_f(result['base'], 1)} MB at 10-30% of the events -> "
        f"{_f(result['late'], 1)} MB at 70-95%: growth {result['growth_pct']:+.1f}% "
        f"(target < {TARGETS['soak_rss_growth_pct']:.0f}%), peak {_f(run['rss_mb'], 1)} MB; "
        f"dead-lettered {run['deadlettered']:.0f}"
    )


def main(opts: Options) -> dict[str, Any]:
    """Run the benchmark, print the tables, and print the summary as the last JSON line."""
    console = Console(width=int(os.environ.get("COLUMNS", "132")))
    if opts.router_only:
        out = router_bench.main(opts.router_rounds, opts.router_sizes)
        print(json.dumps(out), flush=True)
        return out
    if opts.growth:
        from bench import growth  # it imports this module

        rows = asyncio.run(growth.measure(opts, console, opts.growth_events))
        growth.render(rows, console)
        print(json.dumps({"growth": rows}), flush=True)
        return {"growth": rows}
    if opts.soak:
        result = asyncio.run(soak(opts, console))
        render_soak(result, console)
        run = result["run"]
        out = {
            "soak_events": run["events"], "soak_eps": round(run["eps"], 1),
            "cpu_us_per_event": round(run["cpu_us_per_event"], 1),
            "rss_mb": round(run["rss_mb"], 1), "rss_base_mb": result["base"],
            "rss_late_mb": result["late"], "rss_end_mb": result["series"][-1][2],
            "soak_rss_growth_pct": round(result["growth_pct"], 2),
        }
    elif opts.map_only:
        cost = asyncio.run(comparison(opts, console))
        for r in cost["runs"]:
            console.print(f"{r['phase']:>14}: {r['eps']:>9,.0f} events/s, "
                          f"foreign cores {r['foreign_cores']:.2f}")
        out = {k: round(v, 3 if "ratio" in k else 1) for k, v in cost.items() if k != "runs"}
    else:
        summary = asyncio.run(comparison(opts, console))
        render(summary, opts, console)
        out = {k: v for k, v in summary.items() if k not in ("runs", "router", "batch_events")}
        out["router_mps_1"] = summary["router"][1]["plain"]
        out["router_mps_100"] = summary["router"][100]["plain"]
        out = {k: round(v, 3 if "ratio" in k else 1) for k, v in out.items()}
        out["batch_events"] = {
            mode: {k: round(v, 1) for k, v in dist.items()}
            for mode, dist in summary["batch_events"].items()
        }
    print(json.dumps(out), flush=True)
    return out
