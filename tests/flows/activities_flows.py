"""The workflows of the publish activity's and emit()/request()'s tests
(``tests/test_activities.py``), in a plain module: Temporal's sandbox re-imports a workflow's
module on every run, and a test module is assertion-rewritten by pytest."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from temporalio import workflow

from bridge.workflow import LoomWorkflow, emit, request


class Order(BaseModel):
    order_id: str
    cents: int


# --- emit ------------------------------------------------------------------------------------------


@workflow.defn
class EmitWorkflow:
    @workflow.run
    async def run(self, topic: str) -> list[str]:
        placed = await emit("order.accepted", Order(order_id="o-1", cents=250))
        charge = await emit(
            "payment.requested",
            {"cents": 250},
            key="o-1",
            correlate=True,
            extensions={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        )
        note = await emit(
            "order.noted",
            {"note": "hi"},
            topic=topic,
            subject="custom",
            source="urn:shop",
            mode="structured",
        )
        closed = await emit("order.closed", topic=topic)
        return [placed.id, charge.id, note.id, closed.id]


@workflow.defn
class TwoEventsWorkflow:
    @workflow.run
    async def run(self, topic: str) -> list[str]:
        first = await emit("thing.one", {"n": 1}, topic=topic)
        second = await emit("thing.two", {"n": 2}, topic=topic)
        return [first.id, second.id]


# runner: outside the sandbox on purpose, for the test named so below (module globals
# survive across workflow instances there, and the ids must not depend on them).
@workflow.defn(name="UnsandboxedTwoEvents", sandboxed=False)
class UnsandboxedTwoEventsWorkflow(TwoEventsWorkflow):
    """Module globals survive here across workflow instances (unlike in the sandbox)."""

    @workflow.run
    async def run(self, topic: str) -> list[str]:
        return await super().run(topic)


@workflow.defn
class NoTopicWorkflow:
    @workflow.run
    async def run(self) -> None:
        await emit("nowhere.to.go")


# --- request-reply ---------------------------------------------------------------------------------


@workflow.defn
class ChargeWorkflow(LoomWorkflow):
    @workflow.run
    async def run(self, topic: str, timeout: float) -> list[Any]:
        reply = await request(
            "payment.charge",
            {"cents": 250},
            reply_type="payment.*",
            timeout=timeout,
            topic=topic,
        )
        # The stray reply (another request's) was left queued, not consumed.
        return [reply.type, reply.data, len(self.inbox)]
