"""Batch and debounce in the workflow, on Temporal timers: ``Inbox.collect`` and ``debounce``.

A sidecar that held events back to batch them would hold their offsets uncommitted; a
workflow can wait durably instead. Both helpers decide from *when each event arrived*: the
inbox notes the workflow time (``workflow.now()``) at which each queued event came, and
carries it across continue-as-new beside the event (:class:`Arrivals`). The events stay queued
until the helper returns, and the deadline is computed from their arrival times, not from
when the helper was called, so nothing is held in a coroutine's local state:

- a collect or debounce in progress when the run continues as new loses nothing: its events
  are carried as pending events with their arrival times, and the same call in the next run
  closes at the same moment;
- a worker restart replays the history (signals and timers), which gives the same decisions;
- a cancelled call leaves its events queued.

Imported inside Temporal's workflow sandbox: deterministic, no I/O, no module state.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from fnmatch import fnmatchcase

from temporalio import workflow

from bridge.events import Event

__all__ = [
    "ARRIVAL_JSON_BYTES",
    "Arrivals",
    "Batching",
    "EventMatcher",
    "collect",
    "debounce",
    "matches",
    "seconds",
]

EventMatcher = Callable[[Event], bool]
#: Takes the oldest queued event matching a type and a predicate (``Inbox.take``).
Taker = Callable[..., Event | None]
#: Bytes one arrival time takes in the carried JSON list: 13 digits and a comma.
ARRIVAL_JSON_BYTES = 14


def matches(event: Event, type: str | None, where: EventMatcher | None) -> bool:
    """Whether ``event`` has the type (exact or glob; None: any) and passes ``where``."""
    if type is not None and event.type != type and not fnmatchcase(event.type, type):
        return False
    return where is None or where(event)


def seconds(value: timedelta | float) -> float:
    """A duration in seconds."""
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _now_ms() -> int:
    # Outside a workflow (an inbox fed by hand in a unit test) there is no workflow clock.
    return int(workflow.now().timestamp() * 1000) if workflow.in_workflow() else 0


class Arrivals:
    """When each queued event arrived, in milliseconds of workflow time.

    Keyed by the event object, as the inbox's queue holds it; what is carried across
    continue-as-new is the list of arrival times in the order of the carried events.
    """

    def __init__(self) -> None:
        self._ms: dict[int, int] = {}

    def note(self, event: Event) -> None:
        """``event`` was queued now."""
        self._ms[id(event)] = _now_ms()

    def forget(self, event: Event) -> None:
        """``event`` left the queue."""
        self._ms.pop(id(event), None)

    def of(self, event: Event) -> int:
        """When ``event`` arrived (ms since the epoch, workflow time)."""
        return self._ms.get(id(event), 0)

    def carry(self, queue: Iterable[Event]) -> list[int]:
        """Arrival times of ``queue``'s events, in its order (the next run's input)."""
        return [self.of(event) for event in queue]

    def restore(self, carried: Sequence[Event], times: Sequence[int], queue: Iterable[Event]) -> None:
        """Take the carried events' arrival times; keep only the events still in ``queue``.

        A state carried by an older version has no arrival times: its events count as
        arrived now.
        """
        now = _now_ms()
        for index, event in enumerate(carried):
            self._ms[id(event)] = times[index] if index < len(times) else now
        kept = {id(event) for event in queue}
        self._ms = {key: ms for key, ms in self._ms.items() if key in kept}


def _queued(queue: Iterable[Event], type: str | None, where: EventMatcher | None) -> list[Event]:
    return [event for event in queue if matches(event, type, where)]


def _remove(take: Taker, events: Iterable[Event]) -> None:
    for event in events:
        take(None, where=lambda e, target=event: e is target)


def _moved(
    queue: Sequence[Event], type: str | None, where: EventMatcher | None, head: Event,
    at_least: int | None = None,
) -> Callable[[], bool]:
    """A wake-up condition: the oldest match is not ``head`` any more (taken by another call),
    or ``at_least`` events match. Each new event does not wake the waiter: re-arming the timer
    per event would add two history events each time."""

    def moved() -> bool:
        found = _queued(queue, type, where)
        return not found or found[0] is not head or (at_least is not None and len(found) >= at_least)

    return moved


async def _wait(condition: Callable[[], bool], until_ms: int) -> None:
    """Wait for ``condition`` on a durable timer that fires at ``until_ms`` at the latest."""
    with contextlib.suppress(TimeoutError):
        await workflow.wait_condition(
            condition, timeout=timedelta(milliseconds=max(1, until_ms - _now_ms()))
        )


async def collect(
    queue: Sequence[Event],
    arrivals: Arrivals,
    take: Taker,
    type: str | None,
    *,
    max_events: int,
    window: timedelta | float,
    where: EventMatcher | None = None,
) -> list[Event]:
    """The events of ``type`` that arrived within ``window`` of the first, at most ``max_events``.

    Waits for a first matching event (one already queued counts), then until ``max_events``
    matching events are queued or ``window`` has passed since the first one *arrived*, and
    takes them, in order. Events that arrived later stay queued for the next call.

    Raises:
        ValueError: ``max_events`` is below 1 or ``window`` is not positive.
    """
    span = seconds(window)
    if max_events < 1 or span <= 0:
        raise ValueError(f"collect needs max_events >= 1 and a positive window, got "
                         f"{max_events} and {window!r}")
    while True:
        found = _queued(queue, type, where)
        if not found:  # none yet, or taken meanwhile by another call
            await workflow.wait_condition(lambda: any(matches(e, type, where) for e in queue))
            continue
        head = found[0]
        closes = arrivals.of(head) + round(span * 1000)
        batch = [e for e in found if arrivals.of(e) <= closes][:max_events]
        if len(batch) >= max_events or _now_ms() >= closes:
            break
        await _wait(_moved(queue, type, where, head, max_events), closes)
    _remove(take, batch)
    return batch


async def debounce(
    queue: Sequence[Event],
    arrivals: Arrivals,
    take: Taker,
    type: str | None,
    *,
    quiet: timedelta | float,
    max_wait: timedelta | float | None = None,
    where: EventMatcher | None = None,
) -> Event:
    """The last event of a burst of ``type``, once none came for ``quiet``.

    A burst is the oldest matching event and those that followed it, each within ``quiet``
    of the one before and within ``max_wait`` of the first. It ends ``quiet`` after its last
    event, or ``max_wait`` after its first, whichever comes first; then its events are taken
    and the last one is returned. Events seen only after the end (a worker that was down)
    start the next burst.

    Raises:
        ValueError: ``quiet`` or ``max_wait`` is not positive.
    """
    quiet_ms = round(seconds(quiet) * 1000)
    cap_ms = None if max_wait is None else round(seconds(max_wait) * 1000)
    if quiet_ms <= 0 or (cap_ms is not None and cap_ms <= 0):
        raise ValueError(f"debounce needs a positive quiet and max_wait, got {quiet!r} and "
                         f"{max_wait!r}")
    while True:
        found = _queued(queue, type, where)
        if not found:
            await workflow.wait_condition(lambda: any(matches(e, type, where) for e in queue))
            continue
        burst = _burst(found, arrivals, quiet_ms, cap_ms)
        ends = arrivals.of(burst[-1]) + quiet_ms
        if cap_ms is not None:
            ends = min(ends, arrivals.of(burst[0]) + cap_ms)
        if _now_ms() >= ends:
            break
        # Events that come meanwhile only push the end later: it is computed again when the
        # timer fires, so a burst costs one timer per quiet period, not one per event.
        await _wait(_moved(queue, type, where, found[0]), ends)
    _remove(take, burst)
    return burst[-1]


def _burst(found: Sequence[Event], arrivals: Arrivals, quiet_ms: int, cap_ms: int | None) -> list[Event]:
    first = arrivals.of(found[0])
    burst = [found[0]]
    for event in found[1:]:
        at = arrivals.of(event)
        if at - arrivals.of(burst[-1]) >= quiet_ms or (cap_ms is not None and at - first > cap_ms):
            break
        burst.append(event)
    return burst


class Batching:
    """``collect`` and ``debounce``, as methods of :class:`~bridge.workflow.inbox.Inbox`."""

    _queue: deque[Event]
    _arrivals: Arrivals

    def take(self, type: str | None = None, *, where: EventMatcher | None = None) -> Event | None:
        raise NotImplementedError  # the inbox's

    async def collect(
        self,
        type: str | None,
        *,
        max_events: int = 100,
        window: timedelta | float = timedelta(seconds=5),
        where: EventMatcher | None = None,
    ) -> list[Event]:
        """Take a batch: the events of ``type`` that arrived until ``max_events`` came or
        ``window`` passed since the first one arrived; at least one (waits for it), in order.

        On Temporal timers: it survives continue-as-new (the events stay queued, carried with
        their arrival times, until the call returns) and worker restarts. Events that arrived
        after the window stay queued for the next call. One call per type at a time.

        Args:
            type: Event type, exact or glob (``sensor.*``); None for any type.
            max_events: Largest batch.
            window: How long a batch stays open after its first event arrived.
            where: Predicate on the event.

        Raises:
            ValueError: ``max_events`` is below 1 or ``window`` is not positive.
        """
        return await collect(
            self._queue, self._arrivals, self.take, type,
            max_events=max_events, window=window, where=where,
        )

    async def debounce(
        self,
        type: str | None,
        *,
        quiet: timedelta | float = timedelta(seconds=5),
        max_wait: timedelta | float | None = None,
        where: EventMatcher | None = None,
    ) -> Event:
        """Take the last event of a burst of ``type``, once none came for ``quiet``.

        Waits for a first event; returns when ``quiet`` passed since the latest one arrived,
        or ``max_wait`` since the first one arrived (None: no bound), whichever comes first.
        The burst's other events are dropped. Durable like :meth:`collect`.

        Args:
            type: Event type, exact or glob; None for any type.
            quiet: The pause that ends a burst.
            max_wait: Longest wait from the burst's first event.
            where: Predicate on the event.

        Raises:
            ValueError: ``quiet`` or ``max_wait`` is not positive.
        """
        return await debounce(
            self._queue, self._arrivals, self.take, type,
            quiet=quiet, max_wait=max_wait, where=where,
        )
