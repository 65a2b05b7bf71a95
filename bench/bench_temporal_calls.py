"""Signal-with-starts per second through TemporalExecutor vs the high-level client.

Run: ``.venv/bin/python -m bench.bench_temporal_calls [calls] [concurrency]``. Starts its own
in-memory dev server; no worker polls, so this measures the call path (encode, request,
server accept), not workflow execution.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable, Callable

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.contrib.pydantic import pydantic_data_converter

from bridge.actions import ActionKind, Invocation
from bridge.dev import EmbeddedTemporal
from bridge.events import EVENT_SIGNAL, Event
from bridge.temporal.calls import TemporalExecutor


async def _rate(calls: int, concurrency: int, call: Callable[[int], Awaitable[object]]) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with gate:
            await call(n)

    start = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(calls)))
    return calls / (time.perf_counter() - start)


async def main(calls: int, concurrency: int) -> None:
    async with EmbeddedTemporal() as server:
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        executor = TemporalExecutor(client)
        tag = uuid.uuid4().hex[:6]
        passes = [0]  # fresh request ids per pass: repeats would be deduplicated (cheaper)

        def event(n: int) -> Event:
            return Event(id=f"e{n}", source="/bench", type="bench", data={"n": n, "pad": "x" * 200})

        async def via_executor(n: int) -> object:
            ev = event(n)
            return await executor.execute(
                Invocation(
                    kind=ActionKind.SIGNAL_WITH_START,
                    route="bench",
                    event=ev,
                    workflow_id=f"ex-{tag}-{n % 500}",
                    workflow_type="BenchWorkflow",
                    task_queue="bench",
                    name=EVENT_SIGNAL,
                    args=(ev.to_payload(),),
                    request_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tag}|{passes[0]}|{n}")),
                )
            )

        async def via_client(n: int) -> object:
            return await client.start_workflow(
                "BenchWorkflow",
                id=f"hl-{tag}-{n % 500}",
                task_queue="bench",
                start_signal=EVENT_SIGNAL,
                start_signal_args=[event(n).to_payload()],
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            )

        await _rate(200, concurrency, via_executor)  # warm-up
        for label, fn in (("executor", via_executor), ("high-level client", via_client)) * 3:
            passes[0] += 1
            rate = await _rate(calls, concurrency, fn)
            print(
                f"{label:>18}: {rate:7.0f} signal-with-starts/s ({calls} calls, {concurrency} concurrent)"
            )


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    asyncio.run(main(*(args + [3000, 50][len(args) :])))
