"""The workflow's inbox: ordered, deduplicated events routed to it, carried across runs.

Routed events arrive as signals named ``EVENT_SIGNAL`` carrying ``Event.to_payload()``. The
``Inbox`` drops repeats by CloudEvent identity (``source`` + ``id``) with a bounded FIFO
memory, and carries that memory and unprocessed events across continue-as-new (guarantee
2a). Imported inside Temporal's workflow sandbox: deterministic, no I/O, no module state.
Workflow code imports these names from ``bridge.workflow``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from fnmatch import fnmatchcase
from typing import Any, NoReturn

from temporalio import workflow

from bridge.events import EVENT_SIGNAL, Event

__all__ = [
    "DEFAULT_MAX_SIGNALS_PER_RUN",
    "DEFAULT_SEEN_LIMIT",
    "EventMatcher",
    "Inbox",
    "InboxState",
    "LoomWorkflow",
]

#: How many event identities the inbox remembers (FIFO) to drop repeats.
DEFAULT_SEEN_LIMIT = 10_000
#: Signals per run after which the inbox asks for continue-as-new, whatever Temporal suggests.
#: Temporal caps a run at 10,000 signals and its suggestion tracks history length only.
DEFAULT_MAX_SIGNALS_PER_RUN = 2_000


@dataclass
class InboxState:
    """What an inbox carries across continue-as-new (part of the workflow input).

    Attributes:
        pending: Events received but not yet taken, oldest first, in payload form.
        seen: Identities (``Event.key``) of recent events, oldest first.
        runs: Number of runs before this one (0 in the first run).
    """

    pending: list[dict[str, Any]] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    runs: int = 0


EventMatcher = Callable[[Event], bool]


class Inbox:
    """Ordered, deduplicated queue of the events routed to a workflow.

    Feed it from a signal handler (``LoomWorkflow`` does; or call :meth:`install`), take
    events with :meth:`next` or :meth:`wait_for_event`, and call
    :meth:`continue_as_new_if_needed` between two events of the workflow's main loop.

    Args:
        state: The state carried from the previous run, if any.
        seen_limit: How many event identities to remember for deduplication.
        max_signals_per_run: Signals per run after which continue-as-new is asked for.
    """

    def __init__(
        self,
        state: InboxState | None = None,
        *,
        seen_limit: int = DEFAULT_SEEN_LIMIT,
        max_signals_per_run: int = DEFAULT_MAX_SIGNALS_PER_RUN,
    ) -> None:
        if seen_limit < 1 or max_signals_per_run < 1:
            raise ValueError("seen_limit and max_signals_per_run must be positive")
        self.seen_limit = seen_limit
        self.max_signals_per_run = max_signals_per_run
        self.runs = 0
        #: Signals handled in this run, duplicates included (they count for Temporal too).
        self.signals_this_run = 0
        #: Repeats dropped in this run.
        self.duplicates_this_run = 0
        self._queue: deque[Event] = deque()
        self._seen_order: deque[str] = deque()
        self._seen: set[str] = set()
        if state is not None:
            self.restore(state)

    # -- feeding ------------------------------------------------------------------------------

    def handle(self, payload: Mapping[str, Any]) -> bool:
        """Take one routed signal (``Event.to_payload()`` form); False for a repeat."""
        self.signals_this_run += 1
        return self.push(Event.from_payload(payload))

    def push(self, event: Event) -> bool:
        """Queue ``event`` unless its identity was seen; False for a repeat."""
        if event.key in self._seen:
            self.duplicates_this_run += 1
            return False
        self._remember(event.key)
        self._queue.append(event)
        return True

    def install(self, signal: str = EVENT_SIGNAL) -> None:
        """Register :meth:`handle` as the workflow's handler for ``signal`` (dynamically).

        Signals that arrived before are buffered by Temporal and delivered now.
        """
        workflow.set_signal_handler(signal, self.handle)

    def restore(self, state: InboxState) -> None:
        """Merge state carried from the previous run.

        Carried events go before those already queued in this run (they are older); queued
        events whose identity the previous run had seen are dropped.
        """
        self.runs = state.runs
        carried = [Event.from_payload(p) for p in state.pending]
        earlier_seen = set(state.seen)
        newer = [e for e in self._queue if e.key not in earlier_seen]
        self.duplicates_this_run += len(self._queue) - len(newer)
        newer_keys = [k for k in self._seen_order if k not in earlier_seen]
        self._seen_order.clear()
        self._seen.clear()
        for key in [*state.seen, *(e.key for e in carried), *newer_keys]:
            if key not in self._seen:
                self._remember(key)
        self._queue = deque([*carried, *newer])

    def _remember(self, key: str) -> None:
        self._seen.add(key)
        self._seen_order.append(key)
        while len(self._seen_order) > self.seen_limit:
            self._seen.discard(self._seen_order.popleft())

    # -- taking -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._queue)

    def take(self, type: str | None = None, *, where: EventMatcher | None = None) -> Event | None:
        """Take the oldest queued event that matches, without waiting (None if none)."""
        for index, event in enumerate(self._queue):
            if _matches(event, type, where):
                del self._queue[index]
                return event
        return None

    async def next(self, *, timeout: timedelta | float | None = None) -> Event | None:
        """Wait for and take the oldest event; None when ``timeout`` passes first."""
        return await self.wait_for_event(timeout=timeout)

    async def wait_for_event(
        self,
        type: str | None = None,
        *,
        where: EventMatcher | None = None,
        timeout: timedelta | float | None = None,
    ) -> Event | None:
        """Wait for and take the oldest event matching ``type`` and ``where``.

        Events already queued count; events that do not match stay queued, in order, for
        later calls.

        Args:
            type: Event type, exact or glob (``payment.*``); None matches any type.
            where: Predicate on the event.
            timeout: Give up after this long (a durable Temporal timer); None waits forever.

        Returns:
            The event, or None when ``timeout`` passed first (never raises on timeout).
        """
        found = self.take(type, where=where)
        if found is not None:
            return found
        if timeout is not None and _seconds(timeout) <= 0:
            return None
        try:
            await workflow.wait_condition(
                lambda: any(_matches(e, type, where) for e in self._queue), timeout=timeout
            )
        except TimeoutError:
            return None
        return self.take(type, where=where)

    # -- continue-as-new ----------------------------------------------------------------------

    def should_continue_as_new(self) -> bool:
        """True when Temporal suggests continue-as-new or this run's signal backstop is hit."""
        return (
            workflow.info().is_continue_as_new_suggested()
            or self.signals_this_run >= self.max_signals_per_run
        )

    def snapshot(self) -> InboxState:
        """State to carry into the next run (``runs`` already counts this one)."""
        return InboxState(
            pending=[e.to_payload() for e in self._queue],
            seen=list(self._seen_order),
            runs=self.runs + 1,
        )

    async def continue_as_new_if_needed(self, make_input: Callable[[InboxState], Any]) -> None:
        """Continue-as-new when needed, carrying the inbox; otherwise return at once.

        Waits for all signal and update handlers to finish first, so nothing they do is lost.

        Args:
            make_input: Builds the next run's workflow input from the inbox state.
        """
        if self.should_continue_as_new():
            await self.continue_as_new(make_input)

    async def continue_as_new(self, make_input: Callable[[InboxState], Any]) -> NoReturn:
        """Continue-as-new now, carrying the inbox (see :meth:`continue_as_new_if_needed`)."""
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(make_input(self.snapshot()))


def _seconds(timeout: timedelta | float) -> float:
    return timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)


def _matches(event: Event, type: str | None, where: EventMatcher | None) -> bool:
    if type is not None and event.type != type and not fnmatchcase(event.type, type):
        return False
    return where is None or where(event)


class LoomWorkflow:
    """Mixin for workflow classes: an :class:`Inbox` fed by the ``loom_event`` signal.

    Restore the carried state at the start of the run (``self.inbox.restore(input.inbox)``);
    events signalled before that are kept and ordered after the carried ones. Override
    :meth:`make_inbox` to change the inbox's limits.
    """

    def make_inbox(self) -> Inbox:
        """Build the inbox (called once per run, on first use)."""
        return Inbox()

    @property
    def inbox(self) -> Inbox:
        """The run's inbox."""
        # Created lazily: signal handlers may run before the subclass's __init__ body is done
        # with, and subclasses need not call super().__init__().
        box: Inbox | None = self.__dict__.get("_loom_inbox")
        if box is None:
            box = self.make_inbox()
            self.__dict__["_loom_inbox"] = box
        return box

    @workflow.signal(name=EVENT_SIGNAL)
    def loom_event(self, payload: dict[str, Any]) -> None:
        """Signal handler of routed events."""
        self.inbox.handle(payload)
