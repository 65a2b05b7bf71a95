"""The workflow of the harness tests (``tests/test_dev.py``).

It lives here, not in the test module, because Temporal's sandbox re-imports a workflow's
module on every run, and pytest rewrites the asserts of a test module when it is imported.
"""

from __future__ import annotations

from temporalio import workflow


@workflow.defn
class CollectWorkflow:
    """Collects signals until told to stop; the harness's signal-with-start round trip."""

    def __init__(self) -> None:
        self.items: list[str] = []

    @workflow.run
    async def run(self) -> list[str]:
        await workflow.wait_condition(lambda: "stop" in self.items)
        return self.items

    @workflow.signal
    def add(self, item: str) -> None:
        self.items.append(item)

    @workflow.query
    def seen(self) -> list[str]:
        return self.items
