"""The loom's own per-record work without servers: decode, route (match, validate, templates,
request id) and, for a coalescing route, the coalesced call of each id's records.

Run: ``.venv/bin/python -m bench.take_bench [records] [rounds]``. Prints CPU µs per record of
each step (the best of ``rounds``, so other processes' turns count least) and the last line
as JSON. To compare two checkouts side by side, run it alternately from each (A B A B) with
``PYTHONPATH`` pointing at the checkout under test.
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from bench.workload import bench_router, make_event
from bridge.actions import Invocation
from bridge.kafka.binding import decode, encode
from bridge.kafka.record import Record
from bridge.sidecar.coalesce import coalesced_invocation


def records(count: int, workflows: int = 500) -> list[Record]:
    out = []
    for n in range(count):
        key, value, headers = encode(make_event("take", n, workflows))
        out.append(Record(topic="bench", partition=0, offset=n, key=key, value=value,
                          headers=tuple(headers), timestamp=None))
    return out


def best(rounds: int, fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def main(count: int = 20_000, rounds: int = 5) -> dict[str, float]:
    recs = records(count)
    router = bench_router("q")
    events = [decode(r) for r in recs]
    invs: list[Invocation] = [router.resolve(e, "bench")[0] for e in events]
    by_id: dict[str, list[Invocation]] = defaultdict(list)
    for inv in invs:
        by_id[inv.workflow_id].append(inv)
    groups = [g[i:i + 64] for g in by_id.values() for i in range(0, len(g), 64)]
    figures = {
        "decode_us": best(rounds, lambda: [decode(r) for r in recs]),
        "resolve_us": best(rounds, lambda: [router.resolve(e, "bench") for e in events]),
        "coalesce_us": best(rounds, lambda: [coalesced_invocation(g) for g in groups]),
    }
    figures = {k: v / count * 1e6 for k, v in figures.items()}
    figures["total_us"] = sum(figures.values())
    for name, value in figures.items():
        print(f"{name:>12}: {value:6.2f} µs CPU per record")
    print(json.dumps(figures), flush=True)
    return figures


if __name__ == "__main__":
    main(*[int(a) for a in sys.argv[1:3]])
