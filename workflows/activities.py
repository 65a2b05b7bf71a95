"""Activities of the reference application.

The saga's only side effect is publishing CloudEvents, done by the loom's ``loom.publish``
activity (``bridge.worker.activities``). This module decides where the reference app's events go:
commands to the participants' command topics, everything else (``order.completed``,
``order.compensated``) to ``LoomSettings.emit.default_topic``. ``LOOM_EMIT__TOPIC_MAP``
entries override these defaults.
"""

from __future__ import annotations

from bridge.settings import EmitSettings, LoomSettings

__all__ = ["COMMAND_TOPICS", "publish_settings"]

#: Event type glob -> topic of the commands the saga emits (read by the participants).
COMMAND_TOPICS = {
    "inventory.*": "inventory.commands",
    "payment.*": "payment.commands",
    "shipment.*": "shipping.commands",
}


def publish_settings(settings: LoomSettings) -> EmitSettings:
    """The publish activity's topic map: the configured map over the reference defaults."""
    return settings.emit.with_defaults(COMMAND_TOPICS)
