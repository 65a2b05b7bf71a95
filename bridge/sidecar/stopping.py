"""When a stop is due: the stop deadline of the loop, and its abandonment.

:meth:`StopClock.stop` (the first SIGTERM) sets the deadline ``drain_timeout_s`` ahead;
:meth:`StopClock.abandon` (the second) moves it to now and wakes every wait that
:meth:`StopClock.wait` bounds, so the loop goes straight to closing: committing what
finished and leaving the consumer group.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["StopClock"]


class StopClock:
    """The stop deadline of one loop.

    Args:
        drain_timeout_s: Seconds from :meth:`stop` to the deadline.
    """

    def __init__(self, drain_timeout_s: float) -> None:
        self.drain_timeout_s = drain_timeout_s
        #: Set by :meth:`stop` and :meth:`abandon`: fetch no more.
        self.stopping = asyncio.Event()
        self._abandoned = asyncio.Event()
        self._deadline: float | None = None  # monotonic time by which the stop must be done

    def stop(self) -> None:
        """Start the clock (once): the deadline is ``drain_timeout_s`` from now."""
        if self._deadline is None:
            self._deadline = time.monotonic() + self.drain_timeout_s
        self.stopping.set()

    def abandon(self) -> None:
        """The deadline is now: every bounded wait ends."""
        self._deadline = time.monotonic()
        self.stopping.set()
        self._abandoned.set()

    @property
    def abandoned(self) -> bool:
        """Whether :meth:`abandon` was called."""
        return self._abandoned.is_set()

    def time_left(self) -> float:
        """Seconds to the deadline (``drain_timeout_s`` before a stop)."""
        if self._deadline is None:
            return self.drain_timeout_s
        return max(0.0, self._deadline - time.monotonic())

    async def wait(self, *aws: asyncio.Future[Any], timeout: float) -> None:
        """Until one of ``aws`` is done, ``timeout`` passed, or :meth:`abandon` was called."""
        abandoned = asyncio.ensure_future(self._abandoned.wait())
        try:
            await asyncio.wait({*aws, abandoned}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            abandoned.cancel()

    async def run(self, coro: Coroutine[Any, Any, T], default: T) -> T:
        """``coro``'s result, or ``default`` when :meth:`abandon` came first (it is cancelled)."""
        task = asyncio.ensure_future(coro)
        await self.wait(task, timeout=self.time_left() + 1)
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return default
