"""The inventory service: reserves and releases stock."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.events import Event
from services.base import Participant, Reply
from workflows.models import CommandData

__all__ = ["OUT_OF_STOCK", "InventoryService"]

#: The sku the inventory never has.
OUT_OF_STOCK = "OUT-OF-STOCK"


class InventoryService(Participant):
    """``inventory.reserve`` -> ``inventory.reserved`` | ``inventory.rejected``;
    ``inventory.release`` -> ``inventory.released``."""

    name = "inventory"
    command_topic = "inventory.commands"
    reply_topic = "inventory"

    def __init__(self, kafka_options: Mapping[str, Any], *, group_id: str | None = None) -> None:
        super().__init__(kafka_options, group_id=group_id)
        #: Reserved quantity per order id.
        self.reservations: dict[str, int] = {}

    def handle(self, command: Event, data: CommandData) -> Reply:
        """Reserve unless the sku is out of stock; release what an order reserved."""
        if command.type == "inventory.reserve":
            if data.sku == OUT_OF_STOCK:
                return Reply("inventory.rejected", f"sku {data.sku} is out of stock")
            self.reservations[data.order_id] = data.quantity
            return Reply("inventory.reserved")
        if command.type == "inventory.release":
            self.reservations.pop(data.order_id, None)
            return Reply("inventory.released")
        return Reply("inventory.rejected", f"unknown command {command.type}")
