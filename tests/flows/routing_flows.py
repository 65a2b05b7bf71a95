"""The workflow definitions the router tests resolve names from (``tests/test_routing.py``),
in a plain module: Temporal's sandbox re-imports a workflow's module on every run, and a test
module is assertion-rewritten by pytest."""

from __future__ import annotations

from typing import Any

from temporalio import workflow


@workflow.defn(name="OrderSaga")
class OrderSaga:
    @workflow.run
    async def run(self, order: dict[str, Any]) -> str:
        return "done"

    @workflow.signal(name="payment-received")
    async def payment(self, event: dict[str, Any]) -> None:
        pass

    @workflow.signal
    async def loom_event(self, event: dict[str, Any]) -> None:
        pass

    @workflow.update(name="reserve-stock")
    async def reserve(self, event: dict[str, Any]) -> str:
        return "reserved"


@workflow.defn
class Other:
    @workflow.run
    async def run(self) -> None:
        pass

    @workflow.signal
    async def poke(self) -> None:
        pass
