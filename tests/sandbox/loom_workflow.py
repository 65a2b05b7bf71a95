"""A workflow module that imports the loom's workflow side inside the sandbox (no passthrough).

``bridge.workflow`` is imported here as any user's workflow module may: Temporal's sandbox
re-imports it, and everything it pulls in, for every workflow run.
"""

from __future__ import annotations

import sys

from temporalio import workflow

from bridge.workflow import LoomWorkflow

#: Modules the workflow side must never bring into the sandbox: Kafka clients, the sidecar,
#: metrics and the CLI do I/O or hold process state.
FORBIDDEN = (
    "aiokafka",
    "kafka",
    "prometheus_client",
    "typer",
    "rich",
    "cloudevents",
    "opentelemetry.sdk",
    "bridge.sidecar",
    "bridge.kafka",
    "bridge.temporal",
    "bridge.worker",
    "bridge.cli",
    "bridge.telemetry",
)


@workflow.defn(name="LoomSandboxProbe")
class SandboxProbe(LoomWorkflow):
    """Takes one routed event and answers which forbidden modules the sandbox holds."""

    @workflow.run
    async def run(self) -> list[str]:
        event = await self.inbox.next()
        assert event is not None
        return sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN or m.startswith(FORBIDDEN))
