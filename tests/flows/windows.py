"""Workflows that take their events in windows (``Inbox.collect``, ``Inbox.debounce``), for
the windows-through-Kafka tests (``tests/faults/test_windows.py``).

Both carry their inbox and what they took in a pydantic model across continue-as-new, which
comes every :data:`SIGNALS_PER_RUN` signals, and end with the event whose data says ``last``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field
from temporalio import workflow

from bridge.workflow import Inbox, InboxState, LoomWorkflow

#: The event type both workflows take.
ITEM = "win.item"
#: collect: at most this many events per batch, within this many seconds of the first.
MAX_EVENTS = 4
WINDOW_S = 4.0
#: debounce: a burst ends after this many quiet seconds, or this long after its first event.
QUIET_S = 3.0
MAX_WAIT_S = 6.0
#: Signals per run after which the inbox continues as new.
SIGNALS_PER_RUN = 2


class Yielded(BaseModel):
    """What one debounce call gave: the event, when (workflow time), and when the first event
    of its burst arrived (the inbox's arrival time)."""

    id: str
    at: datetime
    first_arrived: datetime


class Windows(BaseModel):
    """What the workflows carry across continue-as-new, and return."""

    inbox: InboxState = Field(default_factory=InboxState)
    batches: list[list[str]] = []
    yielded: list[Yielded] = []


class _Windowed(LoomWorkflow):
    windows: Windows

    def make_inbox(self) -> Inbox:
        return Inbox(max_signals_per_run=SIGNALS_PER_RUN)

    def start(self, carried: Windows | None) -> Windows:
        self.windows = carried if carried is not None else Windows()
        self.inbox.restore(self.windows.inbox)
        return self.windows

    async def next_run_if_needed(self) -> None:
        await self.inbox.continue_as_new_if_needed(
            lambda inbox: self.windows.model_copy(update={"inbox": inbox})
        )

    def done(self) -> Windows:
        return self.windows.model_copy(update={"inbox": InboxState()})

    @workflow.query
    def progress(self) -> dict[str, Any]:
        """What was taken so far, what is queued (an open window), and the runs before this."""
        windows = getattr(self, "windows", None) or Windows()
        return {
            "batches": windows.batches,
            "yielded": [y.id for y in windows.yielded],
            "queued": [e.id for e in self.inbox._queue],
            "runs": self.inbox.runs,
        }


@workflow.defn(name="windows.Collector")
class Collector(_Windowed):
    """Takes every event in batches: ``collect`` until :data:`MAX_EVENTS` or :data:`WINDOW_S`."""

    @workflow.run
    async def run(self, carried: Windows | None = None) -> Windows:
        windows = self.start(carried)
        while True:
            batch = await self.inbox.collect(ITEM, max_events=MAX_EVENTS, window=WINDOW_S)
            windows.batches.append([e.id for e in batch])
            if any(e.data.get("last") for e in batch):
                return self.done()
            await self.next_run_if_needed()


@workflow.defn(name="windows.Debouncer")
class Debouncer(_Windowed):
    """Takes the last event of each burst: ``debounce`` with :data:`QUIET_S`, :data:`MAX_WAIT_S`."""

    @workflow.run
    async def run(self, carried: Windows | None = None) -> Windows:
        windows = self.start(carried)
        while True:
            # The burst starts at the oldest queued event: note when it arrived (a test's
            # look inside the inbox), to check max_wait against it.
            await workflow.wait_condition(lambda: len(self.inbox) > 0)
            first_ms = self.inbox._arrivals.of(self.inbox._queue[0])
            last = await self.inbox.debounce(ITEM, quiet=QUIET_S, max_wait=MAX_WAIT_S)
            windows.yielded.append(Yielded(
                id=last.id, at=workflow.now(),
                first_arrived=datetime.fromtimestamp(first_ms / 1000, UTC),
            ))
            if last.data.get("last"):
                return self.done()
            await self.next_run_if_needed()
