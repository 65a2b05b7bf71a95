"""The payment service: charges and refunds."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from bridge.events import Event
from services.base import Participant, Reply
from workflows.models import CommandData

__all__ = ["CREDIT_LIMIT", "PaymentService"]

#: Amounts above this are declined.
CREDIT_LIMIT = 1000.0


class PaymentService(Participant):
    """``payment.charge`` -> ``payment.charged`` | ``payment.declined``;
    ``payment.refund`` -> ``payment.refunded``.

    Its replies are business facts other workflows use too: besides the order they name the
    customer and the amount (``workflows.models.PaymentFact``), which moves the customer's
    credit (``CustomerCredit``).
    """

    name = "payment"
    command_topic = "payment.commands"
    reply_topic = "payments"

    def __init__(self, kafka_options: Mapping[str, Any], *, group_id: str | None = None) -> None:
        super().__init__(kafka_options, group_id=group_id)
        #: Charged amount per order id.
        self.charges: dict[str, float] = {}

    def reply_event(self, command: Event, data: CommandData, reply: Reply) -> Event:
        """The reply, with the customer and the amount."""
        event = super().reply_event(command, data, reply)
        facts = {**event.data, "customer": data.customer or None, "amount": data.amount}
        return dataclasses.replace(event, data=facts)

    def handle(self, command: Event, data: CommandData) -> Reply:
        """Charge up to the credit limit; refund what an order was charged."""
        if command.type == "payment.charge":
            if data.amount > CREDIT_LIMIT:
                return Reply("payment.declined", f"amount {data.amount:g} over the credit limit")
            self.charges[data.order_id] = data.amount
            return Reply("payment.charged")
        if command.type == "payment.refund":
            self.charges.pop(data.order_id, None)
            return Reply("payment.refunded")
        return Reply("payment.declined", f"unknown command {command.type}")
