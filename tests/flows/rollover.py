"""The workflow of the signal-cap test (``tests/test_temporal_edges.py``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from bridge.workflow import Inbox, InboxState, LoomWorkflow


#: The per-run signal cap of the test's own server (Temporal's default is 10,000).
SIGNAL_CAP = 4


@dataclass
class RolloverInput:
    inbox: InboxState = field(default_factory=InboxState)
    got: list[str] = field(default_factory=list)


@workflow.defn
class SlowRollover(LoomWorkflow):
    """Continues as new every ``SIGNAL_CAP`` signals, a second late: meanwhile the capped run
    refuses the next signals, as a real run does when signals come faster than it rolls over."""

    def make_inbox(self) -> Inbox:
        return Inbox(max_signals_per_run=SIGNAL_CAP)

    @workflow.run
    async def run(self, input: RolloverInput | None = None) -> list[str]:
        state = input or RolloverInput()
        self.inbox.restore(state.inbox)
        while True:
            event = await self.inbox.next()
            assert event is not None
            state.got.append(event.id)
            if event.data.get("last"):
                return state.got
            if self.inbox.should_continue_as_new():
                await asyncio.sleep(1)  # a workflow timer: the rollover comes late (the scenario)
                await self.inbox.continue_as_new(
                    lambda inbox: RolloverInput(inbox=inbox, got=state.got)
                )
