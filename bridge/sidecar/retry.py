"""Retrying a transient failure: exponential backoff with full jitter, and the retriable flag.

The dispatcher (:mod:`bridge.sidecar.dispatch`) retries a failed call when its error says so
(``retriable``), after a delay drawn by :class:`RetryPolicy`; the dead-letter writer uses the
same delays.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

__all__ = ["RetryPolicy", "is_retriable", "raise_if_cancelling"]


def is_retriable(exc: BaseException) -> bool:
    """Whether ``exc`` asks to be retried: its ``retriable`` attribute is True.

    The loom's errors (and aiokafka's) carry ``retriable`` as a class attribute; anything
    without it counts as non-retriable.
    """
    return getattr(exc, "retriable", False) is True


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter.

    Attributes:
        initial: Delay cap after the first failure, in seconds.
        maximum: Largest delay, in seconds.
        multiplier: Growth of the cap per attempt.
        jitter: Draw each delay uniformly from ``[0, cap]`` ("full jitter") so that many
            keys failing together do not retry in lockstep; without it the delay is the cap.
        max_attempts: Calls of the handler before a retriable error is treated as failed
            (dead-lettered); None retries forever, which never skips an item.
    """

    initial: float = 0.1
    maximum: float = 10.0
    multiplier: float = 2.0
    jitter: bool = True
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError(f"RetryPolicy needs 0 < initial <= maximum, got {self!r}")
        if self.multiplier < 1:
            raise ValueError(f"RetryPolicy.multiplier must be >= 1, got {self.multiplier}")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts}")

    def cap(self, attempt: int) -> float:
        """The delay cap after failed attempt number ``attempt`` (1-based)."""
        try:
            return min(self.maximum, self.initial * self.multiplier ** (attempt - 1))
        except OverflowError:
            return self.maximum

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The delay to sleep after failed attempt number ``attempt`` (1-based)."""
        cap = self.cap(attempt)
        if not self.jitter:
            return cap
        return (rng or random).uniform(0.0, cap)

    def gives_up(self, attempt: int) -> bool:
        """Whether no further attempt follows failed attempt number ``attempt``."""
        return self.max_attempts is not None and attempt >= self.max_attempts


def raise_if_cancelling(exc: BaseException) -> None:
    """A call cancelled by :meth:`~bridge.sidecar.dispatch.Dispatcher.close` is cancelled, whatever it raised.

    Temporal's client answers a cancelled update-with-start wait with an RPC error
    (DEADLINE_EXCEEDED, "Timeout or cancellation waiting for update"): taken as a failure,
    it was retried (``close()`` never returned, nor the sidecar's stop) or dead-lettered
    (an event never refused).
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc
