"""The workflow of the coalescing tests (``tests/test_coalesce.py``) that handles single events its own way.

It lives here, not in the test module: Temporal's sandbox re-imports a workflow's module on
every run, and pytest rewrites the asserts of a test module, which it would then parse again.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow

from bridge.workflow import LoomWorkflow


@workflow.defn(name="CoalesceOverridden")
class OverriddenWorkflow(LoomWorkflow):
    """A LoomWorkflow that handles single events its own way: batches would bypass that."""

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)

    @workflow.signal(name="loom_event")
    def loom_event(self, payload: dict[str, Any]) -> None:
        self.inbox.handle({**payload, "subject": "seen by the override"})
