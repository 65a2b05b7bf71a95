"""The workflow of the correlation tests (``tests/test_correlation.py``): it emits while it
handles events, so that each emitted event's ``correlationid``/``causationid`` can be checked,
and again on replay."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from bridge.events import CORRELATION_ID
    from bridge.workflow import LoomWorkflow, emit


@workflow.defn
class CorrelatedWorkflow(LoomWorkflow):
    @workflow.run
    async def run(self) -> None:
        first = await self.inbox.next()
        await emit("step.one", {"n": 1})  # caused by ``first``
        await self.inbox.next()
        await emit("step.two")  # caused by the second event
        await emit("step.three", cause=first, extensions={CORRELATION_ID: "mine"})
