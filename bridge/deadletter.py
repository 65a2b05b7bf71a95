"""The dead-letter topic: the original record byte for byte, plus headers naming the error.

A dead-lettered record keeps its key, value and headers unchanged; the loom appends
``loom-dlq-*`` headers (error class, reason, message, route, original topic, partition,
offset, timestamp, time of failure). :func:`redrive_record` strips them again so a re-driven
record is the original one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge.kafka_binding import Record

PREFIX = "loom-dlq-"
ERROR_CLASS = PREFIX + "error-class"
REASON = PREFIX + "reason"
MESSAGE = PREFIX + "message"
ROUTE = PREFIX + "route"
TOPIC = PREFIX + "topic"
PARTITION = PREFIX + "partition"
OFFSET = PREFIX + "offset"
TIMESTAMP = PREFIX + "timestamp"
FAILED_AT = PREFIX + "failed-at"

_MAX_MESSAGE = 2000


def error_reason(exc: BaseException) -> str:
    """Short slug for an error (``LoomError.reason``, else ``unexpected``)."""
    reason = getattr(exc, "reason", None)
    return reason if isinstance(reason, str) else "unexpected"


def deadletter_headers(
    record: Record, exc: BaseException, route: str | None
) -> list[tuple[str, bytes]]:
    """The record's own headers followed by the ``loom-dlq-*`` headers."""
    message = str(exc) or type(exc).__name__
    extra = {
        ERROR_CLASS: f"{type(exc).__module__}.{type(exc).__qualname__}",
        REASON: error_reason(exc),
        MESSAGE: message[:_MAX_MESSAGE],
        ROUTE: route or "",
        TOPIC: record.topic,
        PARTITION: str(record.partition),
        OFFSET: str(record.offset),
        TIMESTAMP: "" if record.timestamp is None else str(record.timestamp),
        FAILED_AT: str(int(time.time() * 1000)),
    }
    return [*record.headers, *((k, v.encode("utf-8")) for k, v in extra.items())]


@dataclass(frozen=True)
class DeadLetter:
    """A record read back from the dead-letter topic."""

    record: Record  # as stored in the dead-letter topic
    info: Mapping[str, str]  # the loom-dlq-* headers, without the prefix

    @property
    def original_headers(self) -> list[tuple[str, bytes]]:
        """The headers the record had before it was dead-lettered."""
        return [(k, v) for k, v in self.record.headers if not k.startswith(PREFIX)]

    @property
    def original_topic(self) -> str:
        """The topic the record was consumed from."""
        return self.info.get("topic", "")


def parse_deadletter(record: Record) -> DeadLetter:
    """Split a dead-letter record into the original record and the error information."""
    info: dict[str, str] = {}
    for key, value in record.headers:
        if key.startswith(PREFIX):
            info[key[len(PREFIX) :]] = value.decode("utf-8", "replace")
    return DeadLetter(record=record, info=info)


class DeadLetterWriter:
    """Writes failed records to the dead-letter topic and waits for the broker's ack."""

    def __init__(self, producer: Any, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    async def write(self, record: Record, exc: BaseException, route: str | None = None) -> None:
        """Send the original record with error headers; returns once the broker acknowledged."""
        await self.producer.send_and_wait(
            self.topic,
            value=record.value,
            key=record.key,
            headers=deadletter_headers(record, exc, route),
        )


async def redrive_record(producer: Any, letter: DeadLetter, topic: str | None = None) -> None:
    """Send a dead-lettered record back, byte for byte, to its original (or another) topic."""
    target = topic or letter.original_topic
    if not target:
        raise ValueError("the dead-lettered record names no original topic")
    await producer.send_and_wait(
        target, value=letter.record.value, key=letter.record.key, headers=letter.original_headers
    )
