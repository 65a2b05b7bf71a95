"""The entity workflow of the AsyncAPI document's tests (``tests/test_asyncapi.py``) and the
models its handlers take, in a plain module: Temporal's sandbox re-imports a workflow's module
on every run, and a test module is assertion-rewritten by pytest."""

from __future__ import annotations

from pydantic import BaseModel
from temporalio import workflow

from bridge.events import Event
from bridge.workflow import EntityWorkflow, handles


class Ref(BaseModel):
    order_id: str


class Charged(BaseModel):
    order_id: str
    amount: float


class Credit(BaseModel):
    balance: float = 0


@workflow.defn
class CreditEntity(EntityWorkflow[Credit]):
    @handles("payment.charged")
    def charged(self, data: Charged) -> None: ...

    @handles("payment.*")
    def other_payment(self, event: Event) -> None: ...

    @handles("shipment.shipped")
    def shipped(self, data: Ref) -> None: ...
