"""The workflow's inbox: ordered, deduplicated events routed to it, carried across runs.

Routed events arrive as signals named ``EVENT_SIGNAL`` carrying ``Event.to_payload()``, or
several in one signal named ``EVENTS_SIGNAL`` (a coalesced call, in partition order). The
``Inbox`` drops repeats by CloudEvent identity (``source`` + ``id``) with a bounded FIFO
memory of identity digests, and carries that memory, the unprocessed events and the results
of applied updates across continue-as-new (guarantee 2a). It keeps the carried state under
Temporal's 2 MB blob limit (:mod:`bridge.workflow.memory`). Imported inside Temporal's
workflow sandbox: deterministic, no I/O, no module state. Workflow code imports these names
from ``bridge.workflow``.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, NoReturn

from temporalio import workflow

from bridge.events import EVENT_SIGNAL, EVENT_UPDATE, EVENTS_SIGNAL, Event, event_key
from bridge.workflow.batching import (
    ARRIVAL_JSON_BYTES,
    Arrivals,
    Batching,
    EventMatcher,
    matches,
    seconds,
)
from bridge.workflow.memory import (
    DEFAULT_CARRY_LIMIT,
    DEFAULT_MAX_CARRIED_BYTES,
    DEFAULT_UPDATE_RESULTS_LIMIT,
    DIGEST_JSON_BYTES,
    STATE_OVERHEAD,
    Digests,
    InboxState,
    UpdateResults,
    json_size,
)

__all__ = [
    "DEFAULT_CARRY_LIMIT",
    "DEFAULT_MAX_CARRIED_BYTES",
    "DEFAULT_MAX_SIGNALS_PER_RUN",
    "DEFAULT_SEEN_LIMIT",
    "DEFAULT_UPDATE_RESULTS_LIMIT",
    "EventMatcher",
    "Inbox",
    "InboxState",
]

#: How many event identities the inbox remembers (FIFO) to drop repeats.
DEFAULT_SEEN_LIMIT = 10_000
#: Signals per run after which the inbox asks for continue-as-new, whatever Temporal suggests.
#: Temporal caps a run at 10,000 signals; its suggestion tracks the history's length and size.
DEFAULT_MAX_SIGNALS_PER_RUN = 2_000


class Inbox(Batching):
    """Ordered, deduplicated queue of the events routed to a workflow.

    Feed it from signal handlers (``LoomWorkflow`` does; or call :meth:`install`), take
    events with :meth:`next` or :meth:`wait_for_event` (or in batches: :meth:`collect`,
    :meth:`debounce`), and call
    :meth:`continue_as_new_if_needed` between two events of the workflow's main loop.

    Args:
        state: The state carried from the previous run, if any.
        seen_limit: How many event identities to remember for deduplication.
        max_signals_per_run: Signals per run after which continue-as-new is asked for.
        max_carried_bytes: Carried bytes (plus the caller's ``extra_bytes``) past which a
            run asks for continue-as-new.
        carry_limit: Carried bytes over which the inbox never asks for continue-as-new
            (the input would be refused): it keeps taking events until they fit.
        update_results_limit: How many update results to remember across runs.

    Raises:
        ValueError: A limit is not positive, or the remembered identities alone could fill
            half of ``max_carried_bytes``, or ``max_carried_bytes`` is over ``carry_limit``.
    """

    def __init__(
        self,
        state: InboxState | None = None,
        *,
        seen_limit: int = DEFAULT_SEEN_LIMIT,
        max_signals_per_run: int = DEFAULT_MAX_SIGNALS_PER_RUN,
        max_carried_bytes: int = DEFAULT_MAX_CARRIED_BYTES,
        carry_limit: int = DEFAULT_CARRY_LIMIT,
        update_results_limit: int = DEFAULT_UPDATE_RESULTS_LIMIT,
    ) -> None:
        if min(seen_limit, max_signals_per_run, max_carried_bytes, update_results_limit) < 1:
            raise ValueError("the inbox's limits must be positive")
        if seen_limit * DIGEST_JSON_BYTES * 2 > max_carried_bytes:
            raise ValueError(
                f"seen_limit {seen_limit} takes {seen_limit * DIGEST_JSON_BYTES} bytes: more "
                f"than half of max_carried_bytes ({max_carried_bytes})"
            )
        if max_carried_bytes > carry_limit:
            raise ValueError(f"max_carried_bytes must be <= carry_limit ({carry_limit})")
        self.seen_limit = seen_limit
        self.max_signals_per_run = max_signals_per_run
        self.max_carried_bytes = max_carried_bytes
        self.carry_limit = carry_limit
        self.runs = 0
        #: Signals handled in this run, duplicates included (they count for Temporal too).
        self.signals_this_run = 0
        #: Repeats dropped in this run.
        self.duplicates_this_run = 0
        #: Repeated updates answered with their stored result in this run.
        self.repeated_updates_this_run = 0
        #: The event last taken by workflow code: the cause of what the workflow emits next
        #: (``causationid``). Deterministic: taking follows the history on replay.
        self.current: Event | None = None
        self._queue: deque[Event] = deque()
        # Queued events' JSON bytes by id(event): measured lazily (most events are taken
        # before anyone asks), from the payloads kept alive in _unmeasured until then.
        self._sizes: dict[int, int | None] = {}
        self._unmeasured: list[tuple[Event, Mapping[str, Any]]] = []
        self._pending_bytes = 0
        self._arrivals = Arrivals()  # when each queued event came (collect, debounce)
        self._seen = Digests(seen_limit)
        self._updates = UpdateResults(update_results_limit)
        self._restored = False
        self._first_size: int | None = None
        self._warned_oversize = False
        if state is not None:
            self.restore(state)

    # -- feeding ------------------------------------------------------------------------------

    def handle(self, payload: Mapping[str, Any]) -> bool:
        """Take one routed signal (``Event.to_payload()`` form); False for a repeat."""
        self.signals_this_run += 1
        return self._enqueue(Event.from_payload(payload), payload)

    def handle_batch(self, payloads: Sequence[Mapping[str, Any]]) -> int:
        """Take one coalesced signal: its events in order, each deduplicated on its own.

        It counts as one signal (Temporal counts signals toward its per-run cap, not the
        events they carry; their bytes count toward the history size, which Temporal's
        continue-as-new suggestion watches). Returns how many events were new.
        """
        self.signals_this_run += 1
        return sum(self._enqueue(Event.from_payload(p), p) for p in payloads)

    def push(self, event: Event) -> bool:
        """Queue ``event`` unless its identity was seen; False for a repeat."""
        return self._enqueue(event, None)

    def _enqueue(self, event: Event, payload: Mapping[str, Any] | None) -> bool:
        if not self._seen.add(event.key):
            self.duplicates_this_run += 1
            return False
        self._queue.append(event)
        self._sizes[id(event)] = None
        self._arrivals.note(event)
        self._unmeasured.append((event, payload or event.to_payload()))
        if len(self._unmeasured) > 2 * len(self._queue) + 64:  # taken before measured
            self._unmeasured = [(e, p) for e, p in self._unmeasured if id(e) in self._sizes]
        return True

    def _measure(self) -> None:
        for event, payload in self._unmeasured:
            if id(event) in self._sizes and self._sizes[id(event)] is None:
                size = json_size(payload) + 1 + ARRIVAL_JSON_BYTES  # a comma; its arrival
                self._sizes[id(event)] = size
                self._pending_bytes += size
        self._unmeasured.clear()

    def install(self, signal: str = EVENT_SIGNAL, batch_signal: str | None = EVENTS_SIGNAL) -> None:
        """Register :meth:`handle` as the workflow's handler for ``signal``, and
        :meth:`handle_batch` for ``batch_signal`` (coalesced calls), dynamically.

        Signals that arrived before are buffered by Temporal and delivered now.
        """
        workflow.set_signal_handler(signal, self.handle)
        if batch_signal is not None:
            workflow.set_signal_handler(batch_signal, self.handle_batch)

    def restore(self, state: InboxState) -> None:
        """Merge state carried from the previous run.

        Carried events go before those already queued in this run (they are older); queued
        events whose identity the previous run had seen are dropped. Update handlers of a
        run started by continue-as-new wait for this call.
        """
        self.runs = state.runs
        earlier = Digests(self.seen_limit)
        earlier.replace(state.seen)
        carried = [(Event.from_payload(p), p) for p in state.pending]
        newer = [(e, e.to_payload()) for e in self._queue if e.key not in earlier]
        self.duplicates_this_run += len(self._queue) - len(newer)
        newer_seen = [d for d in self._seen.snapshot() if d not in earlier]
        self._seen.replace([*earlier.snapshot(), *(e.key for e, _ in carried), *newer_seen])
        self._queue.clear()
        self._sizes.clear()
        self._pending_bytes = 0
        self._unmeasured.clear()
        for event, payload in [*carried, *newer]:
            self._queue.append(event)
            self._sizes[id(event)] = None
            self._unmeasured.append((event, payload))
        self._arrivals.restore([e for e, _ in carried], state.arrivals, self._queue)
        self._updates.replace({**state.updates, **self._updates.snapshot()})
        self._restored = True

    def has_seen(self, source: str, id: str) -> bool:
        """Whether the identity ``source`` + ``id`` is remembered (taken, queued or updated)."""
        return event_key(source, id) in self._seen

    def seen_digests(self) -> list[str]:
        """Digests (``bridge._ids.identity_digest``) of the remembered identities."""
        return self._seen.snapshot()

    # -- taking -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._queue)

    def take(self, type: str | None = None, *, where: EventMatcher | None = None) -> Event | None:
        """Take the oldest queued event that matches, without waiting (None if none)."""
        for index, event in enumerate(self._queue):
            if matches(event, type, where):
                del self._queue[index]
                self._pending_bytes -= self._sizes.pop(id(event)) or 0
                self._arrivals.forget(event)
                self.current = event
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
        if timeout is not None and seconds(timeout) <= 0:
            return None
        try:
            await workflow.wait_condition(
                lambda: any(matches(e, type, where) for e in self._queue), timeout=timeout
            )
        except TimeoutError:
            return None
        return self.take(type, where=where)

    # -- updates ------------------------------------------------------------------------------

    async def apply_update(
        self, payload: Mapping[str, Any], handler: Callable[[Event], Any]
    ) -> Any:
        """Apply a routed update once: a repeat gets the first result, even in a later run.

        Temporal answers a repeated update id with the stored result within a run (and
        after the run completed), but after continue-as-new the handler would run again.
        The results are carried (bounded by ``update_results_limit``); in a run started by
        continue-as-new this waits for :meth:`restore` first.

        Args:
            payload: The routed update's argument (``Event.to_payload()`` form).
            handler: Computes the result from the event; may be async.

        Returns:
            The handler's result, or the stored result of the same update id.
        """
        event = Event.from_payload(payload)
        info = workflow.current_update_info()
        update_id = info.id if info is not None else f"{EVENT_UPDATE}\x1f{event.key}"
        if workflow.info().continued_run_id is not None and not self._restored:
            await workflow.wait_condition(lambda: self._restored)
        known, stored = self._updates.get(update_id)
        if known:
            self.repeated_updates_this_run += 1
            return stored
        result = handler(event)
        if inspect.isawaitable(result):
            result = await result
        self._seen.add(event.key)
        dump = getattr(result, "model_dump", None)
        self._updates.add(update_id, dump(mode="json") if callable(dump) else result)
        return result

    # -- continue-as-new ----------------------------------------------------------------------

    def carried_bytes(self) -> int:
        """Bytes the inbox would carry into the next run now (JSON, estimated from above).

        An entity workflow that carries its own state counts it with ``extra_bytes`` in
        :meth:`should_continue_as_new`, in the same budget.
        """
        self._measure()
        return (
            STATE_OVERHEAD
            + self._pending_bytes
            + self._seen.json_bytes
            + self._updates.json_bytes
        )

    def should_continue_as_new(self, *, extra_bytes: int = 0) -> bool:
        """Whether to continue as new now.

        True when Temporal suggests it, when this run's signal backstop is hit, or when the
        carried state (plus ``extra_bytes``: the workflow's own state) grew past
        ``max_carried_bytes`` during this run. Always False while the carried state is over
        ``carry_limit``: Temporal would refuse it (the workflow task would fail on every
        try); taking queued events brings it down.

        Args:
            extra_bytes: Bytes of the workflow's own state carried beside the inbox's.
        """
        verdict = self._size_verdict(extra_bytes)
        if verdict is not None:
            return verdict
        return (
            self.signals_this_run >= self.max_signals_per_run
            or workflow.info().is_continue_as_new_suggested()
        )

    def _size_verdict(self, extra_bytes: int) -> bool | None:
        """What the carried size says: False over the limit, True past the budget, else None."""
        size = self.carried_bytes() + extra_bytes
        if self._first_size is None:
            # Only growth within a run counts: a run that starts over the budget (a burst
            # carried in) would otherwise continue as new after every event it takes.
            self._first_size = size
        if size > self.carry_limit:
            if not self._warned_oversize and workflow.in_workflow():
                self._warned_oversize = True
                workflow.logger.warning(
                    "carried state of %d bytes is over the limit of %d: continue-as-new "
                    "waits until queued events are taken", size, self.carry_limit,
                )
            return False
        if self._first_size < self.max_carried_bytes <= size:
            return True
        return None

    def snapshot(self) -> InboxState:
        """State to carry into the next run (``runs`` already counts this one)."""
        return InboxState(
            pending=[e.to_payload() for e in self._queue],
            seen=self._seen.snapshot(),
            runs=self.runs + 1,
            updates=self._updates.snapshot(),
            arrivals=self._arrivals.carry(self._queue),
        )

    async def continue_as_new_if_needed(
        self, make_input: Callable[[InboxState], Any], *, extra_bytes: int = 0
    ) -> None:
        """Continue-as-new when needed, carrying the inbox; otherwise return at once.

        Waits for all signal and update handlers to finish first, so nothing they do is lost;
        returns without continuing when what came meanwhile put the carried state over
        ``carry_limit`` (the next call decides again).

        Args:
            make_input: Builds the next run's workflow input from the inbox state.
            extra_bytes: Bytes of the workflow's own state (see :meth:`should_continue_as_new`).
        """
        if not self.should_continue_as_new(extra_bytes=extra_bytes):
            return
        await workflow.wait_condition(workflow.all_handlers_finished)
        # Signals that came meanwhile are carried too: still under the limit?
        if self.carried_bytes() + extra_bytes > self.carry_limit:
            return  # take more events first; asked again after the next one
        workflow.continue_as_new(make_input(self.snapshot()))

    async def continue_as_new(self, make_input: Callable[[InboxState], Any]) -> NoReturn:
        """Continue-as-new now, carrying the inbox (see :meth:`continue_as_new_if_needed`)."""
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(make_input(self.snapshot()))
