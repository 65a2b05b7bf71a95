"""The workflows of ``wait_for_event`` and of an inbox installed by hand (``tests/test_workflow.py``).

They live here, not in the test module: Temporal's sandbox re-imports a workflow's module on
every run, and pytest rewrites the asserts of a test module, which it would then parse again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import workflow

from bridge.workflow import Inbox, LoomWorkflow, event_data


class Amount(BaseModel):
    cents: int


@workflow.defn
class WaitWorkflow(LoomWorkflow):
    """Waits for a matching event, then takes the one left behind, then times out."""

    @workflow.run
    async def run(self) -> list[Any]:
        wanted = await self.inbox.wait_for_event(
            "order.*", where=lambda e: e.data["n"] == 2, timeout=timedelta(seconds=30)
        )
        assert wanted is not None
        left = await self.inbox.next(timeout=30)
        assert left is not None
        missing = await self.inbox.wait_for_event("never.sent", timeout=timedelta(seconds=1))
        return [wanted.id, event_data(wanted, Amount).cents, left.id, missing]

    @workflow.query
    def queued(self) -> int:
        return len(self.inbox)


@workflow.defn
class InstalledInboxWorkflow:
    """An inbox without the mixin: registered dynamically, signals before that are buffered."""

    @workflow.run
    async def run(self) -> list[str]:
        inbox = Inbox()
        # A workflow timer, part of the scenario: the start signal is always buffered before
        # install(); the timer leaves the signals sent after the start time to be buffered too.
        await workflow.sleep(0.2)
        inbox.install()
        first = await inbox.next()
        second = await inbox.next()
        assert first is not None and second is not None
        return [first.id, second.id]
