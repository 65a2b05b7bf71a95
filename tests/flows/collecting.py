"""Workflows that take events one by one across many runs (``tests/test_workflow.py``), in
a module of their own: Temporal's sandbox re-imports it for each of their ~80 runs."""

from __future__ import annotations

from dataclasses import dataclass, field

from temporalio import workflow

from bridge.workflow import Inbox, InboxState, LoomWorkflow


@dataclass
class CollectInput:
    inbox: InboxState = field(default_factory=InboxState)
    processed: list[str] = field(default_factory=list)


@dataclass
class CollectResult:
    processed: list[str]
    runs: int


SIGNALS_PER_RUN = 40


@workflow.defn
class CollectWorkflow(LoomWorkflow):
    """Processes events in order until ``done``, continuing-as-new every 40 signals."""

    def make_inbox(self) -> Inbox:
        return Inbox(max_signals_per_run=SIGNALS_PER_RUN)

    @workflow.run
    async def run(self, input: CollectInput) -> CollectResult:
        return await collect(self.inbox, input)


async def collect(inbox: Inbox, input: CollectInput) -> CollectResult:
    """The collecting workflows' loop: take events in order until ``done``."""
    inbox.restore(input.inbox)
    processed = input.processed
    while True:
        event = await inbox.next()
        assert event is not None
        processed.append(event.id)
        if event.type == "done":
            return CollectResult(processed=processed, runs=inbox.runs + 1)
        await inbox.continue_as_new_if_needed(
            lambda state: CollectInput(inbox=state, processed=processed)
        )


@workflow.defn
class SuggestedCollectWorkflow(LoomWorkflow):
    """As :class:`CollectWorkflow`, with the signal backstop out of reach: only Temporal's
    continue-as-new suggestion can end a run."""

    def make_inbox(self) -> Inbox:
        return Inbox(max_signals_per_run=1_000_000)

    @workflow.run
    async def run(self, input: CollectInput) -> CollectResult:
        return await collect(self.inbox, input)
