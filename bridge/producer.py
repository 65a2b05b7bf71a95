"""Deprecated alias of the producer in :mod:`bridge.kafka.clients` (moved in 0.2.0, removed
in 0.3.0)."""

from __future__ import annotations

from bridge._deprecated import gone, warn_moved
from bridge.kafka.clients import LoomProducer, RecordMetadata

__all__ = ["LoomProducer", "RecordMetadata"]

warn_moved("bridge.producer", "bridge.kafka.clients")
__getattr__ = gone(
    "bridge.producer",
    {"ProducerSettings": "the producer is configured by bridge.settings.KafkaSettings "
     "(LOOM_KAFKA__*)"},
)
