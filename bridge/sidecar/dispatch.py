"""Ordered, bounded execution with retries: one in flight per key, two bounds across keys.

Guarantees 3, 4 and 5 of the design: items with the same key (the workflow id) run one at a
time in submission order, different keys run concurrently, at most ``max_in_flight`` at once;
at most ``max_buffered`` items (and ``max_buffered_bytes`` of them) are accepted and not yet
finished, so the consumer pauses partitions instead of buffering. A bound on accepted items
above the running bound lets the dispatcher look past the items queued behind their key to
other keys. A retriable error is retried with exponential backoff and jitter without letting
later items of the key overtake it (for at most its ``retry_for`` seconds when it has one);
any other error goes to ``on_failed`` (the dead-letter path) and the key carries on. One
worker task runs per key that has work, and ends when the key's queue empties, so no per-key
state outlives its work. A submitter waiting for room suspends until a finish leaves room.

**Coalescing.** With a :class:`Coalescing` rule, the items queued behind a key when its turn
comes that may share the call ride in one call with it (up to a count and a size): the bound
is calls, not items. Each item of the call is done when the call succeeded; a retriable
error retries the call; any other error splits it: its items run one by one, so each bad one
fails with its own error and the good ones go through.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from bridge.exceptions import LoomError
from bridge.sidecar.retry import RetryPolicy, is_retriable

__all__ = ["Coalescing", "Dispatcher", "DispatcherClosedError", "RetryPolicy", "is_retriable"]

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")


class DispatcherClosedError(LoomError):
    """``submit`` was called on (or was waiting in) a dispatcher that is closed."""

    reason = "dispatcher-closed"


@dataclass(frozen=True, slots=True)
class Coalescing(Generic[K, T, R]):
    """Which items of a key share one call, and how that call is made.

    Attributes:
        handler: Does the work for several items of a key in one call (their order kept);
            its result goes to ``on_done`` for each of them.
        joins: ``joins(head, item)``: whether ``item``, queued behind ``head``, may ride in
            ``head``'s call (False for a head that never shares its call).
        size: Bytes an item adds to the call.
        max_items: Most items in one call.
        max_bytes: Most bytes in one call (an item larger than this goes alone).
        on_split: Called with the items and the error when a call failed for good and its
            items go one by one.
    """

    handler: Callable[[K, list[T]], Awaitable[R]]
    joins: Callable[[T, T], bool]
    size: Callable[[T], int]
    max_items: int = 500
    max_bytes: int = 256 * 1024
    on_split: Callable[[list[T], BaseException], None] | None = None

    def __post_init__(self) -> None:
        if self.max_items < 1 or self.max_bytes < 1:
            raise ValueError(f"Coalescing needs max_items >= 1 and max_bytes >= 1, got {self!r}")

    def take(self, queue: deque[T]) -> int:
        """How many items from the head of ``queue`` share the head's call (at least 1)."""
        head = queue[0]
        count, total = 1, self.size(head)
        for item in itertools.islice(queue, 1, self.max_items):
            total += self.size(item)
            if total > self.max_bytes or not self.joins(head, item):
                break  # order per key: nothing behind a stranger may overtake it
            count += 1
        return count


class Dispatcher(Generic[K, T, R]):
    """Runs ``handler(key, item)`` per item: ordered per key, bounded overall, with retries.

    Args:
        handler: Does the work for one item (the Temporal call); its result goes to
            ``on_done``.
        max_in_flight: Bound on items running at once across keys (different keys: the
            Temporal calls in flight). An item holds its slot from its first call until it
            finished, retry backoff and ``on_failed`` included.
        max_buffered: Bound on items accepted by :meth:`submit` and not yet finished (running,
            or queued behind an earlier item of their key): :meth:`submit` waits, and
            :attr:`full` turns True, at this bound. None means ``max_in_flight`` (then nothing
            waits behind its key without taking a running slot's place: the single bound of
            earlier versions). Must be >= ``max_in_flight``.
        on_done: Called with the item and the handler's result when it succeeded.
        on_failed: Called with the item and the error when the handler raised a non-retriable
            error (or retries ran out); may be async, and the item counts as finished only
            once it returned. It is called once: if it raises, the error is logged and the
            item abandoned (neither ``on_done`` nor a second ``on_failed``), so the caller,
            which never saw it finish, leaves its offset uncommitted.
        retry: The backoff for retriable errors; ``RetryPolicy()`` when omitted.
        on_retry: Called as ``on_retry(item, attempt, exc, delay)`` before each backoff
            sleep, for metrics and logs.
        rng: Source of jitter (tests pass a seeded one).
        coalescing: Lets items of a key share a call (see :class:`Coalescing`); without it
            every item is a call of ``handler``.
        max_buffered_bytes: Bound on the bytes (``weight``) of the items accepted and not
            finished, beside ``max_buffered``: :meth:`submit` waits, and :attr:`full` turns
            True, once it is reached. None: no bound in bytes.
        weight: Bytes of memory an item holds while accepted (for ``max_buffered_bytes``).

    Example:
        >>> async def main() -> None:
        ...     async def call(key: str, n: int) -> int:
        ...         return n * 2
        ...     results: list[int] = []
        ...     d = Dispatcher(call, max_in_flight=10,
        ...                    on_done=lambda n, r: results.append(r),
        ...                    on_failed=lambda n, exc: None)
        ...     await d.submit("order-1", 1)
        ...     await d.submit("order-1", 2)
        ...     assert await d.drain(timeout=1.0)
        ...     print(results)
        >>> asyncio.run(main())
        [2, 4]
    """

    def __init__(
        self,
        handler: Callable[[K, T], Awaitable[R]],
        *,
        max_in_flight: int,
        max_buffered: int | None = None,
        on_done: Callable[[T, R], None],
        on_failed: Callable[[T, BaseException], Awaitable[None] | None],
        retry: RetryPolicy | None = None,
        on_retry: Callable[[T, int, BaseException, float], None] | None = None,
        rng: random.Random | None = None,
        coalescing: Coalescing[K, T, R] | None = None,
        max_buffered_bytes: int | None = None,
        weight: Callable[[T], int] | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if max_buffered is None:
            max_buffered = max_in_flight
        if max_buffered < max_in_flight:
            raise ValueError(
                f"max_buffered must be >= max_in_flight ({max_in_flight}), got {max_buffered}"
            )
        self._handler = handler
        self._max_running = max_in_flight
        self._max = max_buffered
        self._on_done = on_done
        self._on_failed = on_failed
        self._retry = retry or RetryPolicy()
        self._on_retry = on_retry
        self._rng = rng or random.Random()
        self._coalescing = coalescing
        if max_buffered_bytes is not None and (max_buffered_bytes < 1 or weight is None):
            raise ValueError("max_buffered_bytes must be >= 1 and comes with a weight function")
        self._max_bytes = sys.maxsize if max_buffered_bytes is None else max_buffered_bytes
        self._weight, self._bytes = weight, 0
        # key -> (pending items, head first and in progress; the weight each added at submit,
        # which its finish removes; the key's worker task)
        self._keys: dict[K, tuple[deque[T], deque[int], asyncio.Task[None]]] = {}
        self._in_flight = 0
        self._running = 0
        # FIFO across keys: a key worker that finished an item queues behind waiting keys.
        self._run_slots = asyncio.Semaphore(max_in_flight)
        self._closed = False
        self._space = asyncio.Event()
        self._space.set()
        self._idle = asyncio.Event()
        self._idle.set()

    # --- state ------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Items accepted and not yet finished (running, backing off, or queued); bounded by
        :attr:`max_buffered`."""
        return self._in_flight

    @property
    def running(self) -> int:
        """Items holding a running slot (calling, backing off before a retry, or in
        ``on_failed``); bounded by :attr:`max_in_flight`."""
        return self._running

    @property
    def keys_in_flight(self) -> int:
        """Keys with at least one item in flight."""
        return len(self._keys)

    @property
    def max_in_flight(self) -> int:
        """The bound on :attr:`running`."""
        return self._max_running

    @property
    def max_buffered(self) -> int:
        """The bound on :attr:`in_flight` (accepted, not finished)."""
        return self._max

    @property
    def buffered_bytes(self) -> int:
        """Bytes (``weight``) of the items accepted and not finished (0 without a weight)."""
        return self._bytes

    @property
    def free_slots(self) -> int:
        """How many more items :meth:`submit` accepts without waiting (under
        :attr:`max_buffered`; none once ``max_buffered_bytes`` is reached)."""
        return 0 if self.full else self._max - self._in_flight

    @property
    def full(self) -> bool:
        """True when :meth:`submit` would wait (:attr:`max_buffered` or
        ``max_buffered_bytes`` reached): the time to pause partitions."""
        return self._in_flight >= self._max or self._bytes >= self._max_bytes

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    async def wait_for_space(self) -> None:
        """Returns once a slot is free (at once if one is) or the dispatcher closed. A free
        slot is not reserved: with several submitters, :meth:`submit` may still wait."""
        while self.full and not self._closed:
            await self._wait_space()

    # --- life cycle -------------------------------------------------------------------------

    async def submit(self, key: K, item: T) -> None:
        """Accepts ``item`` for ``key``, waiting while the dispatcher is full.

        Returns once the item is accepted, not when it finished: the outcome goes to
        ``on_done`` or ``on_failed``.

        Raises:
            DispatcherClosedError: The dispatcher is closed (or closed while waiting).
        """
        while True:
            if self._closed:
                raise DispatcherClosedError("the dispatcher is closed")
            if not self.full:
                break
            await self._wait_space()
        weight = 0 if self._weight is None else self._weight(item)
        self._in_flight += 1
        self._bytes += weight
        self._idle.clear()
        entry = self._keys.get(key)
        if entry is not None:
            entry[0].append(item)
            entry[1].append(weight)
            return
        queue: deque[T] = deque((item,))
        weights = deque((weight,))
        task = asyncio.create_task(self._work(key, queue, weights), name=f"loom-dispatch-{key!r}")
        self._keys[key] = (queue, weights, task)

    async def _wait_space(self) -> None:
        # Called only while full. Cleared first: a set event's wait() returns without
        # suspending, and the caller's loop would spin, starving the finishes that free space.
        self._space.clear()
        await self._space.wait()

    async def drain(self, timeout: float) -> bool:
        """Waits until every accepted item finished.

        Args:
            timeout: Seconds to wait at most.

        Returns:
            True when nothing is in flight; False on timeout, with the in-flight items left
            running (call :meth:`close` to cancel them).
        """
        if self._in_flight == 0:
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Cancels every item still in flight and refuses further submissions.

        Cancelled items call neither ``on_done`` nor ``on_failed``: they are unfinished, so
        their offsets are not committed and Kafka redelivers them.
        """
        self._closed = True
        tasks = [task for _, _, task in self._keys.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._keys.clear()
        self._in_flight = 0
        self._bytes = 0
        # Wake submitters (they raise) and drainers (nothing is in flight any more).
        self._space.set()
        self._idle.set()

    # --- workers ----------------------------------------------------------------------------

    async def _work(self, key: K, queue: deque[T], weights: deque[int]) -> None:
        try:
            # The head stays in the queue while it runs, so submit() appends behind it
            # instead of starting a second worker for the key.
            while queue:
                async with self._run_slots:
                    # Counted once the slot is ours: items queued meanwhile ride along.
                    rule = self._coalescing
                    count = 1 if rule is None else rule.take(queue)
                    self._running += 1
                    try:
                        if rule is None or count == 1:
                            await self._run_one(key, queue[0])
                        else:
                            items = list(itertools.islice(queue, count))
                            done, since = await self._run_batch(key, items, rule)
                            # Refused for good as a whole: each item alone (its time-bounded
                            # error keeps its clock), finished as soon as its outcome is known.
                            for _ in range(0 if done else count):
                                await self._run_one(key, queue[0], since)
                                self._pop(queue, weights)
                            count = count if done else 0
                    finally:
                        self._running -= 1
                for _ in range(count):
                    self._pop(queue, weights)
        finally:
            # No await between the empty check and this removal: submit() cannot slip an
            # item into a queue whose worker is gone.
            entry = self._keys.get(key)
            if entry is not None and entry[0] is queue:
                del self._keys[key]

    def _pop(self, queue: deque[T], weights: deque[int]) -> None:
        queue.popleft()
        self._in_flight -= 1
        self._bytes -= weights.popleft()
        if not self.full:  # a finish that leaves it full wakes nobody
            self._space.set()
        if self._in_flight == 0:
            self._idle.set()

    async def _run_batch(
        self, key: K, items: list[T], rule: Coalescing[K, T, R]
    ) -> tuple[bool, float | None]:
        """(done, or refused for good: each item to run alone; a bounded failure's start)."""
        clock = asyncio.get_running_loop().time
        attempt, since = 0, None
        error: BaseException
        while True:
            attempt += 1
            try:
                result = await rule.handler(key, items)
            except Exception as exc:
                since = self._failing_since(exc, since, clock)
                if self._retries(exc, attempt, since, clock):
                    await self._backoff(items[0], attempt, exc)
                    continue
                error = exc
                break
            for item in items:
                self._done(key, item, result)
            return True, since
        # Each item alone, so that each bad one fails with its own error and the rest go
        # through; a time-bounded error keeps its clock: no item waits it out again.
        if rule.on_split is not None:
            try:
                rule.on_split(items, error)
            except Exception:
                logger.exception("on_split raised")
        return False, since

    @staticmethod
    def _failing_since(
        exc: BaseException, since: float | None, clock: Callable[[], float]
    ) -> float | None:
        # A retriable error may be retriable for a while only (``retry_for``: the per-run
        # signal cap clears when the run continues as new, or never).
        bound: float | None = getattr(exc, "retry_for", None)
        return None if bound is None else (clock() if since is None else since)

    def _retries(
        self, exc: BaseException, attempt: int, since: float | None, clock: Callable[[], float]
    ) -> bool:
        bound: float | None = getattr(exc, "retry_for", None)
        expired = bound is not None and since is not None and clock() - since >= bound
        return is_retriable(exc) and not expired and not self._retry.gives_up(attempt)

    def _done(self, key: K, item: T, result: R) -> None:
        try:
            self._on_done(item, result)
        except Exception:
            logger.exception("on_done raised for an item of key %r", key)

    async def _run_one(self, key: K, item: T, since: float | None = None) -> None:
        attempt = 0
        clock = asyncio.get_running_loop().time
        # ``since``: start of a run of failures bounded in time (a split call's carries on).
        while True:
            attempt += 1
            try:
                result = await self._handler(key, item)
            # Every outcome is routed: retried, or handed to on_failed (dead-letter).
            except Exception as exc:
                since = self._failing_since(exc, since, clock)
                if self._retries(exc, attempt, since, clock):
                    await self._backoff(item, attempt, exc)
                    continue
                await self._fail(item, exc)
                return
            self._done(key, item, result)
            return

    async def _fail(self, item: T, error: BaseException) -> None:
        # Called once: the dead-letter path retries what is worth retrying on its own. A loop
        # here could spin forever on an error no retry cures; the item is given up instead
        # (the caller never saw it finish, so its offset is not committed: Kafka redelivers it).
        try:
            outcome = self._on_failed(item, error)
            if outcome is not None:
                await outcome
        except Exception:
            logger.exception("on_failed raised: the item is abandoned (not finished)")

    async def _backoff(self, item: T, attempt: int, exc: BaseException) -> None:
        delay = self._retry.delay(attempt, self._rng)
        if self._on_retry is not None:
            try:
                self._on_retry(item, attempt, exc, delay)
            except Exception:
                logger.exception("on_retry raised")
        await asyncio.sleep(delay)
