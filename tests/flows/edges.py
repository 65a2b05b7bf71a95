"""Workflows of the fault suite's Temporal edges (``tests/faults/test_temporal_edges.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from bridge.events import Event
    from bridge.workflow import Inbox, InboxState, LoomWorkflow


@dataclass
class LongInput:
    inbox: InboxState = field(default_factory=InboxState)
    processed: int = 0
    next_seq: int = 0
    out_of_order: int = 0
    duplicates: int = 0


@dataclass
class LongResult:
    processed: int
    out_of_order: int
    duplicates: int
    runs: int


#: Batch signal of the test workflow: many routed events in one signal, for speed only (the
#: inbox takes each with ``handle``, as it takes ``loom_event`` signals).
BATCH_SIGNAL = "batch"


@workflow.defn
class LongIdentities(LoomWorkflow):
    """Takes events in order, checks their sequence, ends on ``done``."""

    def make_inbox(self) -> Inbox:
        return Inbox()  # the defaults: 10,000 identities remembered, 2,000 signals per run

    @workflow.signal(name=BATCH_SIGNAL)
    def batch(self, payloads: list[dict[str, Any]]) -> None:
        for payload in payloads:
            self.inbox.handle(payload)

    @workflow.query
    def taken(self) -> int:
        """Events taken over all runs, repeats included (the sender paces itself on it)."""
        state = getattr(self, "state", None)
        if state is None:
            return 0
        return int(state.processed + state.duplicates + self.inbox.duplicates_this_run)

    @workflow.run
    async def run(self, state: LongInput) -> LongResult:
        self.state = state
        self.inbox.restore(state.inbox)
        while True:
            event = await self.inbox.next()
            assert event is not None
            if event.type == "done":
                return LongResult(state.processed, state.out_of_order,
                                  state.duplicates + self.inbox.duplicates_this_run,
                                  self.inbox.runs + 1)
            seq = int(event.data["seq"])
            state.processed += 1
            state.out_of_order += seq != state.next_seq
            state.next_seq = seq + 1
            await self.inbox.continue_as_new_if_needed(
                lambda inbox: LongInput(inbox, state.processed, state.next_seq,
                                        state.out_of_order,
                                        state.duplicates + self.inbox.duplicates_this_run))


@dataclass
class QuoteState:
    inbox: InboxState = field(default_factory=InboxState)
    calls: int = 0


@workflow.defn
class QuoteBook(LoomWorkflow):
    """Answers quote updates; continues as new when told to; completes when told to."""

    def __init__(self) -> None:
        self.calls = 0
        self.rollover = False
        self.close = False

    @workflow.run
    async def run(self, state: QuoteState | None = None) -> int:
        state = state or QuoteState()
        self.inbox.restore(state.inbox)
        self.calls += state.calls  # updates may run before this line
        await workflow.wait_condition(lambda: self.rollover or self.close)
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self.close:
            return self.calls
        await self.inbox.continue_as_new(lambda inbox: QuoteState(inbox, self.calls))

    def on_update(self, event: Event) -> dict[str, Any]:
        # Temporal would run a redelivered update again in the next run of the chain: the
        # inbox answers it with the stored result instead, so this runs once per request.
        self.calls += 1
        return {"price": event.data["qty"] * 10, "run": workflow.info().run_id,
                "calls": self.calls}

    @workflow.signal
    def roll(self) -> None:
        self.rollover = True

    @workflow.signal
    def finish(self) -> None:
        self.close = True

    @workflow.query
    def executed(self) -> int:
        return self.calls
