"""The workflow of the batch and debounce tests (``tests/test_batching.py``) and its input and
result types, in a plain module: Temporal's sandbox re-imports a workflow's module on every run,
and a test module is assertion-rewritten by pytest."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow

from bridge.workflow import InboxState, LoomWorkflow


@dataclass
class Taken:
    """What one call returned, and the workflow time (ms) at which it returned."""

    ids: list[str]
    at: int


@dataclass
class BatchInput:
    mode: str = "collect"  # or "debounce"
    want: int = 2
    max_events: int = 100
    window_s: float = 5.0
    quiet_s: float = 2.0
    max_wait_s: float | None = None
    taken: list[Taken] = field(default_factory=list)
    inbox: InboxState | None = None


def now_ms() -> int:
    return int(workflow.now().timestamp() * 1000)


@workflow.defn
class BatchingWorkflow(LoomWorkflow):
    """Collects (or debounces) ``want`` times; the ``cut`` signal continues it as new while a
    call is waiting, so the call starts again in the next run."""

    def __init__(self) -> None:
        self.cut = False

    @workflow.signal
    def continue_now(self) -> None:
        self.cut = True

    @workflow.query
    def runs(self) -> int:
        return self.inbox.runs

    @workflow.run
    async def run(self, input: BatchInput) -> list[Taken]:
        if input.inbox is not None:
            self.inbox.restore(input.inbox)
        taken = list(input.taken)
        while len(taken) < input.want:
            call = asyncio.ensure_future(self._take(input))
            await workflow.wait_condition(self._done_or_cut(call))
            if not call.done():
                call.cancel()  # its events are still queued: carried into the next run
                await self.inbox.continue_as_new(
                    lambda state: BatchInput(**{**input.__dict__, "taken": taken, "inbox": state})
                )
            taken.append(Taken(call.result(), now_ms()))
        return taken

    def _done_or_cut(self, call: asyncio.Future[list[str]]) -> Callable[[], bool]:
        return lambda: call.done() or self.cut

    async def _take(self, input: BatchInput) -> list[str]:
        if input.mode == "collect":
            events = await self.inbox.collect(
                "item", max_events=input.max_events, window=timedelta(seconds=input.window_s)
            )
            return [e.id for e in events]
        last = await self.inbox.debounce(
            "item",
            quiet=timedelta(seconds=input.quiet_s),
            max_wait=None if input.max_wait_s is None else timedelta(seconds=input.max_wait_s),
        )
        return [last.id]
