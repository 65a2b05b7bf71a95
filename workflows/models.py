"""Typed data of the reference application: event payloads, workflow input and result.

The saga, the routes and the participant services share these models, and the pydantic data
converter carries them through Temporal. Kept free of I/O: imported inside the workflow
sandbox.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = [
    "CommandData",
    "CustomerCreditState",
    "OrderCancelled",
    "OrderPlaced",
    "OrderRef",
    "OrderResult",
    "OrderSagaInput",
    "PaymentFact",
    "SagaStatus",
    "StepRecord",
]

SagaStatus = Literal["running", "completed", "compensated", "cancelled"]


class OrderPlaced(BaseModel):
    """Data of ``order.placed``, published by the shop on the ``orders`` topic.

    Attributes:
        order_id: Business key of the order; the saga's workflow id is ``order-<order_id>``.
        customer: Who ordered.
        sku: Article ordered; ``"OUT-OF-STOCK"`` is refused by the inventory service.
        quantity: How many.
        amount: Total price; more than 1000 is declined by the payment service.
        country: Delivery country; ``"Atlantis"`` is refused by the shipping service.
    """

    order_id: str = Field(min_length=1)
    customer: str
    sku: str
    quantity: int = Field(default=1, gt=0)
    amount: float = Field(ge=0)
    country: str = "NL"


class OrderCancelled(BaseModel):
    """Data of ``order.cancelled``, published by the shop on the ``orders`` topic.

    Attributes:
        order_id: The order the customer cancelled; its saga is cancelled.
        reason: Why; the saga reads it as its cancellation reason.
    """

    order_id: str = Field(min_length=1)
    reason: str = Field(default="the customer cancelled the order", min_length=1)


class OrderRef(BaseModel):
    """What every participant reply carries: enough to find the saga."""

    order_id: str = Field(min_length=1)
    reason: str | None = None


class CommandData(BaseModel):
    """Data of the commands the saga emits (``inventory.reserve``, ``payment.charge``, ...)."""

    order_id: str
    sku: str
    quantity: int
    amount: float
    country: str
    customer: str = ""

    @classmethod
    def of(cls, order: OrderPlaced) -> CommandData:
        """The command data of an order."""
        return cls(
            order_id=order.order_id,
            sku=order.sku,
            quantity=order.quantity,
            amount=order.amount,
            country=order.country,
            customer=order.customer,
        )


class PaymentFact(OrderRef):
    """Data of the payment service's facts (``payment.charged|declined|refunded``).

    Attributes:
        customer: Whose money it is (None from a payment service that does not say).
        amount: The amount charged, declined or refunded.
    """

    customer: str | None = None
    amount: float = 0.0


class CustomerCreditState(BaseModel):
    """State of a ``CustomerCredit`` entity: what the payment facts did to one customer.

    Attributes:
        customer: The customer; the entity's workflow id is ``credit-<customer>``.
        balance: Charged minus refunded.
        charges: Payments charged.
        refunds: Payments refunded.
        declined: Payments declined.
    """

    customer: str
    balance: float = 0.0
    charges: int = 0
    refunds: int = 0
    declined: int = 0


class OrderSagaInput(BaseModel):
    """Input of ``OrderSaga`` (built by the ``order-placed`` route at signal-with-start).

    Attributes:
        order_id: The order this saga runs for.
        step_timeout_s: How long each step waits for its participant's reply.
        compensation_timeout_s: How long each compensation waits for its confirmation.
    """

    order_id: str
    step_timeout_s: float = Field(default=30.0, gt=0)
    compensation_timeout_s: float = Field(default=30.0, gt=0)


class StepRecord(BaseModel):
    """One line of the saga's journal: a command sent or a reply received."""

    direction: Literal["sent", "received", "timeout", "cancelled"]
    type: str


class OrderResult(BaseModel):
    """Result of ``OrderSaga``.

    Attributes:
        order_id: The order.
        status: ``completed``, ``compensated`` or ``cancelled`` (cancelled while it ran, and
            compensated: everything done was undone).
        reason: Why it was compensated (the participant's reason, or a timeout) or cancelled
            (the cancellation's reason).
        journal: Commands sent and replies received, in order.
        compensation_errors: Compensations that failed or were not confirmed in time.
    """

    order_id: str
    status: SagaStatus
    reason: str | None = None
    journal: list[StepRecord] = Field(default_factory=list)
    compensation_errors: list[str] = Field(default_factory=list)
