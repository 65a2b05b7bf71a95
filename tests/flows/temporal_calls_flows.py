"""The workflows of the executor's tests against the real server (``tests/test_temporal_calls.py``).

They live here, not in the test module: Temporal's sandbox re-imports a workflow's module on
every run, and pytest rewrites the asserts of a test module, which it would then parse again.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from bridge.events import EVENT_SIGNAL, EVENT_UPDATE
from bridge.workflow import LoomWorkflow


@workflow.defn
class InboxWorkflow:
    """Records routed events and updates; finishes on the ``finish`` signal."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.updates = 0
        self.done = False

    @workflow.run
    async def run(self, start: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        await workflow.wait_condition(lambda: self.done)
        return self.events

    @workflow.signal(name=EVENT_SIGNAL)
    def on_event(self, payload: dict[str, Any]) -> None:
        self.events.append(payload)

    @workflow.signal
    def finish(self) -> None:
        self.done = True

    @workflow.update(name=EVENT_UPDATE)
    def on_update(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.updates += 1
        return {"echo": payload["id"], "n": self.updates}

    @workflow.query
    def received(self) -> list[str]:
        return [e["id"] for e in self.events]

    @workflow.query
    def update_count(self) -> int:
        return self.updates


@workflow.defn
class ClosingInbox(LoomWorkflow):
    """A LoomWorkflow that takes events until one of type ``finish`` (or fails on ``fail``)."""

    @workflow.run
    async def run(self, start: dict[str, Any] | None = None) -> int:
        taken = 0
        while True:
            event = await self.inbox.next()
            assert event is not None
            taken += 1
            if event.type == "finish":
                return taken
            if event.type == "fail":
                raise ApplicationError("told to fail", non_retryable=True)
