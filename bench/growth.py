"""How the loom's throughput and CPU per event change with routes, ids and payload size.

``python -m bench --growth``: one server set, one worker, then one short backlog per cell
(a few thousand events through the loom, each cell in its own process, as the comparison's
paths run), ``--rounds`` times in alternating order. One dimension moves at a time from the base cell (1 route, 500 workflow ids,
200-byte payload): routes 1 / 100 / 10,000 (the extra routes match other exact types, as a
large route table does), ids 10 / 500 / 50,000 (how many events queue behind one id, so how
many ride in one call), payload 200 B / 4 KiB / 64 KiB (the ``pad`` of each event's data).
The 64 KiB cell carries fewer events (``MAX_CELL_BYTES`` of payload in all) so that every
cell takes seconds, not minutes.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from bench.run import Bench, Options
from bridge.dev import EmbeddedKafka, EmbeddedTemporal

#: (label, routes, workflow ids, payload bytes); the first is the base every ratio is to.
CELLS: tuple[tuple[str, int, int, int], ...] = (
    ("base", 1, 500, 200),
    ("routes 100", 100, 500, 200),
    ("routes 10k", 10_000, 500, 200),
    ("ids 10", 1, 10, 200),
    ("ids 50k", 1, 50_000, 200),
    ("payload 4 KiB", 1, 500, 4 * 1024),
    ("payload 64 KiB", 1, 500, 64 * 1024),
)
MAX_CELL_BYTES = 64 * 1024 * 1024


def cell_events(events: int, payload: int) -> int:
    """Events of a cell: ``events``, fewer for large payloads (at most MAX_CELL_BYTES)."""
    return max(1, min(events, MAX_CELL_BYTES // payload))


async def measure(opts: Options, console: Console, events: int) -> list[dict[str, Any]]:
    """Every cell, ``opts.rounds`` times in alternating order (the server holds more
    workflows as the run goes on); each figure is the mean over the rounds."""
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in range(len(CELLS))}
    async with EmbeddedTemporal() as temporal, EmbeddedKafka() as kafka, \
            Bench(opts, temporal, kafka) as bench:
        order = list(range(len(CELLS)))
        for round_ in range(1, opts.rounds + 1):
            for n in order if round_ % 2 else order[::-1]:
                label, routes, ids, payload = CELLS[n]
                count = cell_events(events, payload)
                console.print(f"[dim]growth {label} (round {round_}): {count:,} events ...[/dim]")
                runs[n].append(await bench.phase(
                    "loom", f"growth-{n}-{round_}", count, label=f"growth_{n}",
                    decoys=routes - 1, workflows=ids, pad="x" * payload, latency_events=0,
                    rss_every_s=1.0,
                ))
    rows: list[dict[str, Any]] = []
    for n, (label, routes, ids, payload) in enumerate(CELLS):
        cell = runs[n]

        def mean(key: str, cell: list[dict[str, Any]] = cell) -> float:
            return sum(float(r[key]) for r in cell) / len(cell)

        rows.append({
            "cell": label, "routes": routes, "ids": ids, "payload": payload,
            "events": cell[0]["events"], "rounds": len(cell), "eps": mean("eps"),
            "eps_runs": [r["eps"] for r in cell], "cpu_us_per_event": mean("cpu_us_per_event"),
            "events_per_call": sum(r["batches"].get("mean", 0.0) for r in cell) / len(cell),
            "rss_mb": max(r["rss_mb"] for r in cell), "lag_p99_ms": mean("lag_p99_ms"),
            "foreign_cores": mean("foreign_cores"),
        })
    base = rows[0]
    for row in rows:
        row["eps_vs_base"] = row["eps"] / base["eps"]
        row["cpu_vs_base"] = row["cpu_us_per_event"] / base["cpu_us_per_event"]
    return rows


def render(rows: list[dict[str, Any]], console: Console) -> None:
    table = Table(title="growth: the loom draining a short backlog, one dimension at a time "
                        "(means over the rounds; events/s of each round in the last column)")
    for col in ("cell", "routes", "ids", "payload B", "events", "events/s", "÷ base",
                "CPU µs/ev", "÷ base", "events/call", "peak RSS MB", "lag p99 ms",
                "foreign cores", "events/s by round"):
        table.add_column(col, justify="left" if col == "cell" else "right")
    for r in rows:
        table.add_row(
            r["cell"], f"{r['routes']:,}", f"{r['ids']:,}", f"{r['payload']:,}",
            f"{r['events']:,}", f"{r['eps']:,.0f}", f"{r['eps_vs_base']:.2f}",
            f"{r['cpu_us_per_event']:,.0f}", f"{r['cpu_vs_base']:.2f}",
            f"{r['events_per_call']:.1f}", f"{r['rss_mb']:.0f}", f"{r['lag_p99_ms']:.0f}",
            f"{r['foreign_cores']:.2f}", " / ".join(f"{e:,.0f}" for e in r["eps_runs"]),
        )
    console.print(table)
