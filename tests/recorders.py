"""The recorder workflows, in a module of their own: Temporal's sandbox re-imports a workflow's
module for every run, so this one imports only what workflow code needs (the workload helpers
around them are in :mod:`recorder`, which re-exports them).

:class:`RecorderWorkflow` never deduplicates (and has no handler for coalesced calls): the ids
it recorded show exactly what reached Temporal. :class:`InboxRecorderWorkflow` is a
``LoomWorkflow``: routes to it coalesce, and it records what its inbox lets through.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow

# Passed through, as the tutorial imports them: the sandbox then re-imports only this module
# for each run, not the loom's workflow side (tests start hundreds of these workflows).
with workflow.unsafe.imports_passed_through():
    from bridge.events import EVENT_SIGNAL
    from bridge.workflow import LoomWorkflow

__all__ = ["INBOX_RECORDER", "RECORDER", "InboxRecorderWorkflow", "RecorderWorkflow"]

#: Workflow type name, for routes declared by name (route modules written by tests).
RECORDER = "LoomTestRecorder"
#: Type name of :class:`InboxRecorderWorkflow`.
INBOX_RECORDER = "LoomTestInboxRecorder"


@workflow.defn(name=RECORDER)
class RecorderWorkflow:
    """Records the id of every routed event, in arrival order, until an event with id "stop"."""

    def __init__(self) -> None:
        self.received: list[str] = []

    @workflow.run
    async def run(self) -> list[str]:
        await workflow.wait_condition(lambda: "stop" in self.received)
        return self.received

    @workflow.signal(name=EVENT_SIGNAL)
    def on_event(self, payload: dict[str, Any]) -> None:
        self.received.append(str(payload["id"]))

    @workflow.query
    def events(self) -> list[str]:
        return self.received


@workflow.defn(name=INBOX_RECORDER)
class InboxRecorderWorkflow(LoomWorkflow):
    """Records the id of every event its inbox lets through, in order, until one with id
    "stop"; routes to it coalesce (it keeps LoomWorkflow's handlers)."""

    def __init__(self) -> None:
        self.received: list[str] = []

    @workflow.run
    async def run(self) -> list[str]:
        while "stop" not in self.received:
            event = await self.inbox.next()
            assert event is not None
            self.received.append(event.id)
        return self.received

    @workflow.query
    def events(self) -> list[str]:
        return self.received

    @workflow.query
    def arrivals(self) -> dict[str, int]:
        """Signals received (a coalesced call is one) and repeats the inbox dropped."""
        return {
            "signals": self.inbox.signals_this_run,
            "repeats": self.inbox.duplicates_this_run,
        }
