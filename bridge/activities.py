"""Deprecated alias of :mod:`bridge.worker.activities` (moved in 0.2.0, removed in 0.3.0)."""

from __future__ import annotations

from bridge._deprecated import gone, warn_moved
from bridge.worker.activities import Encoder, PublishActivities, loom_activities

__all__ = ["Encoder", "PublishActivities", "loom_activities"]

warn_moved("bridge.activities", "bridge.worker.activities")
__getattr__ = gone(
    "bridge.activities",
    {"PublishSettings": "the emit topics are bridge.settings.EmitSettings "
     "(topic_map, default_topic, mode), LOOM_EMIT__*"},
)
