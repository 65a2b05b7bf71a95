"""A test workflow that records every routed event it receives, duplicates included.

Shared by the end-to-end, sidecar and fault tests: since it never deduplicates, the ids it
recorded show exactly what reached Temporal (lost, duplicated, out of order).
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow

from bridge.events import EVENT_SIGNAL

#: Workflow type name, for routes declared by name (route modules written by tests).
RECORDER = "LoomTestRecorder"


@workflow.defn(name=RECORDER, sandboxed=False)
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
