"""Per-item overhead of the Dispatcher with a no-op handler (not part of the test run).

Run: ``.venv/bin/python bench/bench_dispatch.py``
"""

from __future__ import annotations

import asyncio
import time

from bridge.sidecar.dispatch import Dispatcher


async def _noop(key: int, item: int) -> None:
    return None


async def _run(n: int, keys: int, bound: int) -> float:
    done = 0

    def on_done(item: int, result: None) -> None:
        nonlocal done
        done += 1

    d: Dispatcher[int, int, None] = Dispatcher(
        _noop, max_in_flight=bound, on_done=on_done, on_failed=lambda i, e: None
    )
    start = time.perf_counter()
    for i in range(n):
        await d.submit(i % keys, i)
    assert await d.drain(60)
    elapsed = time.perf_counter() - start
    assert done == n
    return elapsed / n * 1e6


async def main() -> None:
    n = 200_000
    for keys, bound in [(n, 1000), (100, 1000), (1, 1000), (n, 10)]:
        print(f"keys={keys:>7} bound={bound:>5}: {await _run(n, keys, bound):.2f} us/item")


if __name__ == "__main__":
    asyncio.run(main())
