"""Participant services of the reference application: inventory, payment, shipping.

Each is a small, independent Kafka consumer/producer (choreography): it reads commands from
its ``*.commands`` topic and answers with CloudEvents on its own topic. None of them knows
about Temporal. Failures are deterministic by data so the demo shows compensations:

- inventory refuses the sku ``OUT-OF-STOCK`` (``inventory.rejected``);
- payment declines amounts over 1000 (``payment.declined``);
- shipping cannot deliver to ``Atlantis`` (``shipment.failed``).

``python -m services`` runs all three; ``python -m services.shop`` publishes sample orders.
"""

from __future__ import annotations

from services.base import Participant, Reply
from services.inventory import InventoryService
from services.payment import PaymentService
from services.shipping import ShippingService

__all__ = [
    "InventoryService",
    "Participant",
    "PaymentService",
    "Reply",
    "ShippingService",
    "all_services",
]


def all_services(kafka_options: dict[str, object]) -> list[Participant]:
    """The three participants, connected with ``kafka_options`` (aiokafka client options)."""
    return [
        InventoryService(kafka_options),
        PaymentService(kafka_options),
        ShippingService(kafka_options),
    ]
