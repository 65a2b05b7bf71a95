"""A workflow module that breaks the sandbox rule: it imports a Kafka client (negative control)."""

from __future__ import annotations

import aiokafka  # noqa: F401  (the point of this module)
from temporalio import workflow


@workflow.defn(name="LoomSandboxLeak")
class LeakyWorkflow:
    @workflow.run
    async def run(self) -> None:
        return None
