"""Profile the loom's backlog path with py-spy: ``python -m bench.profile``.

Starts the same servers, worker and backlog as ``python -m bench`` (binary-mode CloudEvents,
500 workflow ids, 4 partitions), runs the loom in its own process, and attaches
``py-spy record --format raw`` to that process from its first record taken to its last offset
committed, so start-up (imports, the consumer group's join) stays out of the profile. It
samples with ``--gil`` (only the thread holding the GIL: the Python work, not the loop's
waits in ``select`` nor the Temporal SDK's native threads while they run without it), pausing
the process for each sample: that slows the loom (read the shares, not its rate), where
``--nonblocking`` kept its rate but misplaced samples (measured: 15% of them in a function that
costs 0.6 µs of the ~170 per event). It then
prints the frames by self time (the share of samples whose innermost frame is that function)
and the share of samples by area (``bridge``, ``aiokafka``, ``temporalio``, ...).

py-spy comes with the dev extra (``pip install py-spy``). Attaching to a running process
needs ``ptrace``: as root it works as is; otherwise run with ``sudo``, or allow it with
``sysctl kernel.yama.ptrace_scope=0`` (in a container: ``--cap-add SYS_PTRACE``).

Examples::

    .venv/bin/python -m bench.profile                      # 20,000 events, coalescing route
    .venv/bin/python -m bench.profile --route byname       # the route by workflow name
    .venv/bin/python -m bench.profile --out loom.txt --top 30

The raw file (one collapsed stack per line, then its sample count) also feeds flame graph
tools (``flamegraph.pl``, speedscope.app imports it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.run import Bench, Child, Options
from bench.workload import ROUTES
from bridge.dev import EmbeddedKafka, EmbeddedTemporal

AREAS = (
    ("bridge/", "bridge"), ("aiokafka/", "aiokafka"), ("temporalio/", "temporalio"),
    ("pydantic", "pydantic"),  # pydantic/ and pydantic_core/ ("prometheus_client/", "prometheus_client"),
    ("google/protobuf", "protobuf"), ("opentelemetry/", "opentelemetry"),
    ("asyncio/", "asyncio"), ("bench/", "bench harness"),
)


def py_spy() -> str:
    """The py-spy beside this interpreter (the venv's), else the one on PATH."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else "py-spy"


def parse_raw(text: str) -> Counter[tuple[str, ...]]:
    """py-spy's raw (collapsed) output: ``frame;frame;...;leaf COUNT`` per line."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def frame_name(frame: str) -> str:
    """``decode (bridge/kafka/binding.py:120)`` -> ``decode (bridge/kafka/binding.py)``: one
    row per function, whatever line of it was running (py-spy already cuts paths to the
    module's, e.g. ``aiokafka/conn.py``)."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")")
    head, sep, line = path.rpartition(":")
    return f"{name} ({head if sep and line.isdigit() else path})"


def area(frame: str) -> str:
    path = frame.rpartition(" (")[2]
    for prefix, label in AREAS:
        if path.startswith(prefix):
            return label
    return "other"


def summarize(stacks: Counter[tuple[str, ...]], top: int) -> dict[str, Any]:
    """Self time per function (innermost frame), and the samples by area of the innermost
    frame, as shares of all samples (recorded with ``--gil``: the thread holding the GIL,
    so the loop's waits in ``select`` and native threads without the GIL are not in them)."""
    total = sum(stacks.values()) or 1
    own: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for stack, count in stacks.items():
        frames = [f for f in stack if " (" in f]  # drop the thread's name, kept by --threads
        if not frames:
            continue
        leaf = frame_name(frames[-1])
        own[leaf] += count
        areas[area(leaf)] += count
        for name in {frame_name(f) for f in frames if area(frame_name(f)) == "bridge"}:
            inclusive[name] += count
    pct = 100.0 / total
    return {
        "samples": total,
        "self": [(name, n * pct) for name, n in own.most_common(top)],
        "areas": [(name, n * pct) for name, n in areas.most_common()],
        "bridge_inclusive": [(name, n * pct) for name, n in inclusive.most_common(top)],
    }


async def profile(events: int, route: str, out: Path, rate: int) -> dict[str, Any]:
    opts = Options(events=events)
    async with EmbeddedTemporal() as temporal, EmbeddedKafka() as kafka, \
            Bench(opts, temporal, kafka) as bench:
        phase = f"profile-{route}"
        topic = await bench.topic(phase)
        await bench.produce(topic, phase, 0, events)
        cfg = bench.cfg(phase, events, topic=topic, route=route, latency_events=0,
                        rss_every_s=1.0, deadletter_topic=await bench.topic(f"{phase}-dlq"))
        child = await Child.start("loom", cfg)
        try:
            await child.expect("ready")
            await child.expect("window")
            spy = await asyncio.create_subprocess_exec(
                py_spy(), "record", "--pid", str(child.pid), "--format", "raw", "--rate",
                str(rate), "--gil", "-o", str(out), stdout=asyncio.subprocess.DEVNULL,
            )
            thr = await child.expect("throughput")
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
            await spy.wait()
            result = await child.expect("result")
        finally:
            await child.stop(grace=30.0)
    result["throughput"] = thr["eps"]
    return result


def render(figures: dict[str, Any], run: dict[str, Any], console: Console) -> None:
    console.print(
        f"{run['events']:,} events, {run['eps']:,.0f} events/s, "
        f"{run['cpu_us_per_event']:,.0f} µs CPU per event (under py-spy), "
        f"{figures['samples']:,} samples"
    )
    for title, what, share_column, key in (
        ("frames by self time (share of all samples)", "frame", "self %", "self"),
        ("self time by area", "area", "%", "areas"),
        ("bridge functions, total time (self + callees)", "frame", "total %", "bridge_inclusive"),
    ):
        table = Table(title=title)
        table.add_column(what)
        table.add_column(share_column, justify="right")
        for name, share in figures[key]:
            table.add_row(name, f"{share:.1f}")
        console.print(table)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--route", choices=ROUTES, default="class")
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "loom-profile.txt",
                   help="py-spy's raw output (collapsed stacks)")
    p.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args(argv)
    console = Console(width=int(os.environ.get("COLUMNS", "132")))
    run = asyncio.run(profile(a.events, a.route, a.out, a.rate))
    figures = summarize(parse_raw(a.out.read_text()), a.top)
    render(figures, run, console)
    out = {"events": run["events"], "eps": run["eps"], "cpu_us_per_event":
           run["cpu_us_per_event"], **figures}
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
