"""The dead-letter topic: the original record byte for byte, plus headers naming the error.

A dead-lettered record keeps its key, value and headers unchanged; the loom appends
``loom-dlq-*`` headers (error class, reason, message, route, original topic, partition,
offset, timestamp, time of failure). :func:`redrive_record` strips them again so a re-driven
record is the original one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from bridge.exceptions import error_reason
from bridge.kafka.clients import consumer_for, producer_for, started
from bridge.kafka.record import Record
from bridge.settings import LoomSettings

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
        # What the error knows besides (e.g. a closed workflow's status).
        **{PREFIX + name: value for name, value in getattr(exc, "details", {}).items()},
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
    """Writes failed records to the dead-letter topic and waits for the broker's ack.

    The record's offset must not commit before its dead-letter write is acknowledged, and the
    line must not stop for a broker hiccup: a write that fails with a Kafka error is tried
    again after ``backoff(attempt)`` seconds, until it is acknowledged.

    Args:
        producer: A started aiokafka producer.
        topic: The dead-letter topic.
        backoff: Seconds to wait after failed attempt number ``attempt`` (1-based).
        on_retry: Called as ``on_retry(attempt, error, delay)`` before each wait (metrics, logs).
    """

    def __init__(
        self,
        producer: Any,
        topic: str,
        *,
        backoff: Callable[[int], float] = lambda attempt: min(10.0, 0.2 * 2 ** (attempt - 1)),
        on_retry: Callable[[int, BaseException, float], None] | None = None,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self._backoff = backoff
        self._on_retry = on_retry

    async def write(self, record: Record, exc: BaseException, route: str | None = None) -> None:
        """Send the original record with error headers; returns once the broker acknowledged."""
        headers = deadletter_headers(record, exc, route)
        attempt = 0
        while True:
            try:
                await self.producer.send_and_wait(
                    self.topic, value=record.value, key=record.key, headers=headers
                )
                return
            except KafkaError as err:
                attempt += 1
                delay = self._backoff(attempt)
                if self._on_retry is not None:
                    self._on_retry(attempt, err, delay)
                await asyncio.sleep(delay)


async def redrive_record(producer: Any, letter: DeadLetter, topic: str | None = None) -> None:
    """Send a dead-lettered record back, byte for byte, to its original (or another) topic."""
    target = topic or letter.original_topic
    if not target:
        raise ValueError("the dead-lettered record names no original topic")
    await producer.send_and_wait(
        target, value=letter.record.value, key=letter.record.key, headers=letter.original_headers
    )


async def read_deadletters(
    settings: LoomSettings,
    *,
    topic: str | None = None,
    timeout: float = 15,
) -> list[DeadLetter]:
    """Every record of the dead-letter topic, from the beginning to the current end.

    Reads without a consumer group (nothing is committed) and stops at the end offsets seen
    when it started, so it returns even while the sidecar keeps writing.
    """
    target = topic or settings.kafka.deadletter_topic
    consumer = consumer_for(settings.kafka, group_id=None, enable_auto_commit=False)
    async with started(consumer, timeout):
        if target not in await consumer.topics():  # also refreshes the cluster metadata
            return []
        partitions = consumer.partitions_for_topic(target)
        if not partitions:
            return []
        tps = [TopicPartition(target, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        letters: list[DeadLetter] = []
        remaining = {tp for tp in tps if ends[tp] > 0}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while remaining and loop.time() < deadline:
            batch = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, records in batch.items():
                letters.extend(
                    parse_deadletter(Record.from_aiokafka(rec))
                    for rec in records
                    if rec.offset < ends[tp]
                )
                if records and records[-1].offset >= ends[tp] - 1:
                    remaining.discard(tp)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        if remaining:
            raise TimeoutError(f"reading {target!r} did not reach its end within {timeout}s")
        return sorted(letters, key=lambda d: (d.record.partition, d.record.offset))



async def redrive(
    settings: LoomSettings,
    letters: Iterable[DeadLetter],
    *,
    topic: str | None = None,
    on_sent: Callable[[DeadLetter, str], None] | None = None,
) -> int:
    """Send dead-lettered records back, byte for byte, to their original (or ``topic``).

    Re-driving the same record twice is harmless: the loom deduplicates by event identity.

    Returns:
        How many records were sent.
    """
    sent = 0
    async with started(producer_for(settings.kafka)) as producer:
        for letter in letters:
            await redrive_record(producer, letter, topic)
            sent += 1
            if on_sent is not None:
                on_sent(letter, topic or letter.original_topic)
    return sent
