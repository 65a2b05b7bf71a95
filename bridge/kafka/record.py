"""A consumed Kafka record, as the consumer, the decoder and the dead-letter writer see it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Record"]


@dataclass(frozen=True, slots=True)
class Record:
    """A consumed Kafka record, as the consumer, the decoder and the dead-letter writer see it.

    Attributes:
        topic: Topic the record was read from.
        partition: Partition of the record.
        offset: Offset of the record in its partition.
        key: Raw key bytes, or None.
        value: Raw value bytes, or None (a tombstone, or a binary-mode event without data).
        headers: Headers in wire order; names may repeat.
        timestamp: Record timestamp in milliseconds since the epoch, if known.
        unreadable: Why aiokafka could not parse the record (read raw instead, see
            :mod:`bridge.kafka.rawfetch`); None for every record aiokafka delivered. Header
            names of such a record keep bytes that are not UTF-8 as surrogate escapes.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp: int | None = None
    unreadable: str | None = None

    @classmethod
    def from_aiokafka(cls, rec: Any) -> Record:
        """Build from an aiokafka ``ConsumerRecord`` read without key/value deserializers.

        A header whose value is null on the wire becomes ``b""``.
        """
        return cls(
            topic=rec.topic,
            partition=rec.partition,
            offset=rec.offset,
            key=None if rec.key is None else bytes(rec.key),
            value=None if rec.value is None else bytes(rec.value),
            headers=tuple((name, b"" if val is None else bytes(val)) for name, val in rec.headers),
            timestamp=rec.timestamp,
        )
