"""The workflows of the request/reply tests (``tests/test_request_reply.py``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from bridge.events import EVENT_UPDATE
    from bridge.workflow import LoomWorkflow, request


@workflow.defn
class QuoteWorkflow:
    """Answers quote requests by update; counts how often its handler really ran."""

    def __init__(self) -> None:
        self.calls = 0

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)

    @workflow.update(name=EVENT_UPDATE)
    def quote(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        return {"price": payload["data"]["qty"] * 10, "calls": self.calls}


@workflow.defn
class AskWorkflow(LoomWorkflow):
    """Asks a pricing service over Kafka and returns its answer."""

    @workflow.run
    async def run(self, topic: str) -> Any:
        reply = await request(
            "price.requested", {"sku": "sku-1"}, reply_type="price.quoted",
            timeout=timedelta(seconds=60), topic=topic,
        )
        return reply.data
