"""The workflow of the tracing tests (``tests/test_tracing.py``).

It lives here, not in the test module, because Temporal's sandbox re-imports a workflow's
module on every run, and pytest rewrites the asserts of a test module when it is imported.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from bridge.events import EVENT_SIGNAL
    from bridge.workflow import emit


class Traced(BaseModel):
    entity: str


@workflow.defn
class TracedWorkflow:
    """Emits one event per routed event; finishes after ``stop``."""

    def __init__(self) -> None:
        self.pending: list[dict[str, Any]] = []

    @workflow.run
    async def run(self) -> int:
        emitted = 0
        while True:
            await workflow.wait_condition(lambda: bool(self.pending))
            payload = self.pending.pop(0)
            if payload["type"] == "test.stop":
                return emitted
            await emit("test.traced.next", {"cause": payload["id"]})
            emitted += 1

    @workflow.signal(name=EVENT_SIGNAL)
    def on_event(self, payload: dict[str, Any]) -> None:
        self.pending.append(payload)
