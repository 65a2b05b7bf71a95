"""Is the event loop turning? A timer on the loop, judged from outside it.

A loop that stops turning (a coroutine that never suspends, a blocking call) answers nothing:
probes served on that loop time out, and a timed-out probe says "unreachable", not "frozen".
:class:`LoopWatch` schedules a tick on the loop every ``interval`` seconds; each tick records
the time it ran and how late it ran (the loop's lag: a histogram, and a warning past
``warn_after_s``). The HTTP server answers ``/livez`` from a thread of its own
(:mod:`bridge.sidecar.http`), from :meth:`LoopWatch.stalled_for`: a loop that has not turned
for longer than the setting is reported as not live, even while it holds every coroutine.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

__all__ = ["LoopWatch"]

log = logging.getLogger("loom")


class LoopWatch:
    """Samples the event loop's lag on a timer and remembers its last turn.

    Args:
        observe: Called with each lag sample in seconds (the histogram's ``observe``).
        interval: Seconds between ticks.
        warn_after_s: A lag above this is logged as a warning (at most once per
            ``warn_every_s``).
        warn_every_s: Least seconds between two lag warnings.
        clock: Monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        observe: Callable[[float], None] | None = None,
        *,
        interval: float = 0.25,
        warn_after_s: float = 1.0,
        warn_every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._observe = observe
        self._interval = interval
        self._warn_after = warn_after_s
        self._warn_every = warn_every_s
        self._clock = clock
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = 0.0
        self._last_warning = -float("inf")
        # Written on the loop, read from the HTTP thread: a float assignment is atomic.
        self.last_turn: float | None = None
        self.max_lag = 0.0

    def start(self) -> None:
        """Start ticking on the running loop."""
        self._loop = asyncio.get_running_loop()
        self.last_turn = self._clock()
        self._schedule()

    def stop(self) -> None:
        """Stop ticking; :meth:`stalled_for` then answers 0 (a stopped watch judges nothing)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._loop = None
        self.last_turn = None

    def stalled_for(self) -> float:
        """Seconds since the loop's last tick beyond the tick's own period (0 when turning,
        or when the watch is not started). Safe to call from any thread."""
        last = self.last_turn
        if last is None:
            return 0.0
        return max(0.0, self._clock() - last - self._interval)

    def _schedule(self) -> None:
        if self._loop is None:  # stopped
            return
        self._due = self._clock() + self._interval
        self._handle = self._loop.call_later(self._interval, self._tick)

    def _tick(self) -> None:
        now = self._clock()
        lag = max(0.0, now - self._due)
        self.last_turn = now
        self.max_lag = max(self.max_lag, lag)
        if self._observe is not None:
            self._observe(lag)
        if lag > self._warn_after and now - self._last_warning >= self._warn_every:
            self._last_warning = now
            log.warning(
                "the event loop was blocked for %.2f s (a timer ran that late): probes and "
                "metrics were answered late; look for a blocking call or a busy loop", lag,
            )
        self._schedule()
