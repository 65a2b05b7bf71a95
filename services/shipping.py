"""The shipping service: ships orders, except to places no carrier reaches."""

from __future__ import annotations

from bridge.events import Event
from services.base import Participant, Reply
from workflows.models import CommandData

__all__ = ["UNREACHABLE", "ShippingService"]

#: The country no carrier delivers to.
UNREACHABLE = "Atlantis"


class ShippingService(Participant):
    """``shipment.ship`` -> ``shipment.shipped`` | ``shipment.failed``."""

    name = "shipping"
    command_topic = "shipping.commands"
    reply_topic = "shipping"

    def handle(self, command: Event, data: CommandData) -> Reply:
        """Ship unless the country is unreachable."""
        if command.type == "shipment.ship" and data.country != UNREACHABLE:
            return Reply("shipment.shipped")
        return Reply("shipment.failed", f"no carrier delivers to {data.country}")
