"""The inventory service: reserves and releases stock, and holds backorders."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.events import Event
from services.base import Participant, Reply
from workflows.models import CommandData

__all__ = ["BACKORDERED", "OUT_OF_STOCK", "InventoryService"]

#: The sku the inventory never has.
OUT_OF_STOCK = "OUT-OF-STOCK"
#: The sku on backorder: a reservation waits for a restock (none comes in the demo).
BACKORDERED = "BACKORDERED"


class InventoryService(Participant):
    """``inventory.reserve`` -> ``inventory.reserved`` | ``inventory.rejected`` (or, for a
    backordered sku, no answer until a restock); ``inventory.release`` -> ``inventory.released``."""

    name = "inventory"
    command_topic = "inventory.commands"
    reply_topic = "inventory"

    def __init__(self, kafka_options: Mapping[str, Any], *, group_id: str | None = None) -> None:
        super().__init__(kafka_options, group_id=group_id)
        #: Reserved quantity per order id.
        self.reservations: dict[str, int] = {}
        #: Orders waiting for a backordered sku.
        self.backorders: set[str] = set()

    def handle(self, command: Event, data: CommandData) -> Reply | None:
        """Reserve unless the sku is out of stock or backordered (held: no answer yet);
        release what an order reserved or waits for."""
        if command.type == "inventory.reserve":
            if data.sku == OUT_OF_STOCK:
                return Reply("inventory.rejected", f"sku {data.sku} is out of stock")
            if data.sku == BACKORDERED:
                self.backorders.add(data.order_id)
                return None
            self.reservations[data.order_id] = data.quantity
            return Reply("inventory.reserved")
        if command.type == "inventory.release":
            self.reservations.pop(data.order_id, None)
            self.backorders.discard(data.order_id)
            return Reply("inventory.released")
        return Reply("inventory.rejected", f"unknown command {command.type}")
