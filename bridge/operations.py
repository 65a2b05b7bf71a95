"""What the ``loom`` commands do besides running: publish, read and re-drive dead letters, check.

Plain async functions over the settings, so they are usable from Python and testable without
the CLI; :mod:`bridge.cli` only parses flags and prints.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bridge.deadletter import DeadLetter, parse_deadletter, redrive_record
from bridge.events import Event
from bridge.kafka_binding import Record, encode
from bridge.settings import LoomSettings

__all__ = [
    "CheckResult",
    "Published",
    "check_kafka",
    "check_temporal",
    "kafka_producer",
    "publish_event",
    "read_deadletters",
    "redrive",
]


@dataclass(frozen=True)
class Published:
    """Where a published record landed."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class CheckResult:
    """One line of ``loom check``."""

    name: str
    ok: bool
    detail: str
    warning: bool = False


@contextlib.asynccontextmanager
async def kafka_producer(settings: LoomSettings, timeout: float = 15) -> AsyncIterator[Any]:
    """A started aiokafka producer from the settings, stopped on exit."""
    producer = AIOKafkaProducer(**settings.kafka.producer_options())
    try:
        await asyncio.wait_for(producer.start(), timeout)
    except BaseException:
        with contextlib.suppress(Exception):
            await producer.stop()
        raise
    try:
        yield producer
    finally:
        await producer.stop()


async def publish_event(
    settings: LoomSettings,
    event: Event,
    topic: str,
    *,
    mode: Literal["binary", "structured"] = "binary",
    key: str | None = None,
) -> Published:
    """Encode ``event`` (CloudEvents Kafka binding) and send it; returns where it landed.

    Args:
        settings: Kafka connection settings.
        event: The event.
        topic: Target topic.
        mode: Binary (``ce_`` headers) or structured (JSON envelope).
        key: Kafka key; the ``partitionkey`` extension when None.

    Raises:
        ValueError: The event cannot be encoded.
    """
    record_key, value, headers = encode(event, mode)
    if key is not None:
        record_key = key.encode("utf-8")
    async with kafka_producer(settings) as producer:
        meta = await producer.send_and_wait(topic, value=value, key=record_key, headers=headers)
    return Published(meta.topic, meta.partition, meta.offset)


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
    consumer = AIOKafkaConsumer(
        **settings.kafka.client_options(), group_id=None, enable_auto_commit=False
    )
    await asyncio.wait_for(consumer.start(), timeout)
    try:
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
    finally:
        await consumer.stop()


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
    async with kafka_producer(settings) as producer:
        for letter in letters:
            await redrive_record(producer, letter, topic)
            sent += 1
            if on_sent is not None:
                on_sent(letter, topic or letter.original_topic)
    return sent


async def check_kafka(settings: LoomSettings, timeout: float = 10) -> list[CheckResult]:
    """Connect to Kafka, read metadata, and check that the configured topics exist."""
    k = settings.kafka
    consumer = AIOKafkaConsumer(
        **k.client_options(), group_id=None, request_timeout_ms=int(timeout * 1000)
    )
    try:
        await asyncio.wait_for(consumer.start(), timeout)
    except Exception as exc:  # report any failure to connect, never raise from a check
        with contextlib.suppress(Exception):
            await consumer.stop()
        return [
            CheckResult(
                "kafka", False, f"cannot connect to {k.bootstrap} (LOOM_KAFKA__BOOTSTRAP): "
                f"{type(exc).__name__}: {exc}"
            )
        ]
    try:
        topics = await asyncio.wait_for(consumer.topics(), timeout)
    finally:
        await consumer.stop()
    results = [CheckResult("kafka", True, f"connected to {k.bootstrap}, {len(topics)} topics")]
    results.extend(
        CheckResult(f"topic {topic}", topic in topics,
                    "exists" if topic in topics else "missing (LOOM_KAFKA__TOPICS)")
        for topic in k.topics
    )
    dlq_ok = k.deadletter_topic in topics
    results.append(
        CheckResult(
            f"dead-letter topic {k.deadletter_topic}",
            True,
            "exists" if dlq_ok else "missing: created on first write only if the broker "
            "auto-creates topics (LOOM_KAFKA__DEADLETTER_TOPIC)",
            warning=not dlq_ok,
        )
    )
    return results


async def check_temporal(settings: LoomSettings, timeout: float = 10) -> list[CheckResult]:
    """Connect to Temporal and describe the configured namespace."""
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

    from bridge.service import connect_temporal

    t = settings.temporal
    try:
        client = await connect_temporal(settings, timeout=min(timeout, t.connect_timeout_s))
    except Exception as exc:  # report any failure to connect, never raise from a check
        return [CheckResult("temporal", False, str(exc))]
    results = [CheckResult("temporal", True, f"connected to {t.address}")]
    try:
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=t.namespace),
            timeout=timedelta(seconds=timeout),
        )
    except Exception as exc:  # e.g. NOT_FOUND, PERMISSION_DENIED
        results.append(
            CheckResult(f"namespace {t.namespace}", False,
                        f"{exc} (LOOM_TEMPORAL__NAMESPACE)")
        )
    else:
        results.append(CheckResult(f"namespace {t.namespace}", True, "exists"))
    return results
