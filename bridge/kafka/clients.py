"""aiokafka clients built from the settings, started and stopped the same way everywhere.

- :func:`producer_for` and :func:`consumer_for` are the one place that turns
  ``KafkaSettings`` into aiokafka clients (connection, TLS/SASL, producer options);
- :func:`started` starts a client for the body of an ``async with`` and always stops it: a
  client whose ``start()`` failed still holds connections, so it is stopped too;
- :class:`LoomProducer` is the one producer a worker process shares between its publish
  activities (aiokafka batches per producer: one is cheaper and faster than one per call);
- :func:`publish_event` sends one CloudEvent (``loom publish``, tests, scripts);
- :func:`log_ends` finds where partitions end, also on brokers whose ``ListOffsets`` answer
  falls short (the embedded broker Tansu answers the last batch's first offset + 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.errors import KafkaError, KafkaTimeoutError
from aiokafka.protocol.group import JoinGroupRequest, LeaveGroupRequest

from bridge.events import Event
from bridge.kafka.binding import encode
from bridge.kafka.rawfetch import is_parse_error
from bridge.settings import KafkaSettings

__all__ = [
    "LoomProducer",
    "Published",
    "consumer_for",
    "log_ends",
    "producer_for",
    "publish_event",
    "start_client",
    "started",
    "stop_client",
]

log = logging.getLogger("loom.kafka")

#: What aiokafka's ``send_and_wait`` returns (``aiokafka.structs.RecordMetadata``).
RecordMetadata = Any
C = TypeVar("C", AIOKafkaConsumer, AIOKafkaProducer)


def producer_for(kafka: KafkaSettings, **options: Any) -> AIOKafkaProducer:
    """A (not yet started) producer with the connection and producer settings."""
    return AIOKafkaProducer(**{**kafka.producer_options(), **options})


def consumer_for(kafka: KafkaSettings, **options: Any) -> AIOKafkaConsumer:
    """A (not yet started) consumer with the connection settings and the isolation level;
    ``options`` add the rest (``group_id=None`` for a reader outside any group)."""
    return AIOKafkaConsumer(
        **{**kafka.client_options(), "isolation_level": kafka.isolation_level, **options}
    )


async def start_client(client: C, timeout: float | None = None) -> C:
    """Start ``client``; if that fails (or times out), stop it before raising."""
    try:
        await asyncio.wait_for(client.start(), timeout)
    except BaseException:
        await stop_client(client)  # a half-started client still holds its connections
        raise
    return client


async def stop_client(
    client: AIOKafkaConsumer | AIOKafkaProducer, *, flush_timeout: float | None = None
) -> None:
    """Stop an aiokafka client, keeping its errors out of the shutdown path.

    With the broker gone, ``AIOKafkaConsumer.stop()`` raises the ``CancelledError`` of its own
    coordinator task (leaving the group cannot finish). That is not a cancellation of ours:
    it is logged and swallowed unless this task really is being cancelled.

    A producer's ``stop()`` first waits until every record handed to it is acknowledged or
    expired (``request_timeout_ms``, 30 s by default). With ``flush_timeout``, records still
    unsent after that many seconds are failed instead, so a stop cannot outlast its deadline
    when the broker refuses them (their Kafka records were not committed: nothing is lost).
    """
    if isinstance(client, AIOKafkaConsumer):
        _leave_at_any_generation(client)
    try:
        if flush_timeout is None or not isinstance(client, AIOKafkaProducer):
            await client.stop()
            return
        stopping = asyncio.ensure_future(client.stop())
        done, _ = await asyncio.wait({stopping}, timeout=flush_timeout)
        if not done:
            log.warning("the producer did not flush within %.1fs: its unsent records are dropped",
                        flush_timeout)
            # aiokafka has no stop without flush: fail what it holds, and stop() goes on.
            client._message_accumulator.fail_all(KafkaTimeoutError("the producer is stopping"))
        await stopping
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.warning("%s stopped with its internal task cancelled", type(client).__name__)
    except Exception as exc:
        log.warning("%s stopped with an error: %s", type(client).__name__, exc)


def _leave_at_any_generation(consumer: AIOKafkaConsumer) -> None:
    """Make the consumer's ``stop()`` leave its group whatever the generation.

    aiokafka (0.14) sends LeaveGroup only when the generation is above 0; the embedded broker
    numbers a group's first generation 0, so a member that stopped in it left nothing behind
    on the broker, which kept it until its session timed out (measured: the next member got
    its partitions after 54 s with a 30 s session timeout, against 1 s once it had left).
    The protocol's generations start at 0 on other brokers too (Kafka's own client leaves
    whenever it has a member id).
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if not isinstance(coordinator, GroupCoordinator):
        return  # not started, or no group (assigned partitions)

    async def leave() -> None:
        if (
            coordinator.generation >= 0
            and coordinator.member_id != JoinGroupRequest.UNKNOWN_MEMBER_ID
            and coordinator._group_instance_id is None  # static members do not leave
        ):
            request = LeaveGroupRequest(coordinator.group_id, coordinator.member_id)
            try:
                await coordinator._send_req(request)
            except KafkaError as exc:
                log.warning("leaving consumer group %s failed: %s", coordinator.group_id, exc)
        coordinator.reset_generation()

    coordinator._maybe_leave_group = leave


@contextlib.asynccontextmanager
async def started(client: C, timeout: float | None = None) -> AsyncIterator[C]:
    """``client`` started for the body, stopped on exit (also when its start failed)."""
    await start_client(client, timeout)
    try:
        yield client
    finally:
        await stop_client(client)


class LoomProducer:
    """A lazily started, shared ``AIOKafkaProducer``.

    Args:
        kafka: Connection and producer settings (``LOOM_KAFKA__*``); ignored with ``factory``.
        factory: Builds the (not yet started) aiokafka producer instead (tests).
    """

    def __init__(
        self,
        kafka: KafkaSettings | None = None,
        *,
        factory: Callable[[], AIOKafkaProducer] | None = None,
    ) -> None:
        settings = kafka or KafkaSettings()
        self._factory = factory or (lambda: producer_for(settings))
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def started(self) -> bool:
        """Whether the underlying producer is running."""
        return self._producer is not None

    async def start(self) -> AIOKafkaProducer:
        """Start the producer if it is not running yet (safe to call concurrently)."""
        if self._producer is not None:
            return self._producer
        async with self._lock:
            if self._closed:
                raise RuntimeError("LoomProducer is closed")
            if self._producer is None:
                self._producer = await start_client(self._factory())
            return self._producer

    async def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> RecordMetadata:
        """Send one record and wait for the broker's acknowledgement."""
        producer = await self.start()
        return await producer.send_and_wait(topic, value=value, key=key, headers=list(headers))

    async def close(self) -> None:
        """Flush and stop the producer; later sends raise."""
        async with self._lock:
            self._closed = True
            producer, self._producer = self._producer, None
        if producer is not None:
            await stop_client(producer)

    async def __aenter__(self) -> LoomProducer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


@dataclass(frozen=True)
class Published:
    """Where a published record landed."""

    topic: str
    partition: int
    offset: int


async def publish_event(
    kafka: KafkaSettings,
    event: Event,
    topic: str,
    *,
    mode: Literal["binary", "structured"] = "binary",
    key: str | None = None,
    timeout: float = 15,
) -> Published:
    """Encode ``event`` (CloudEvents Kafka binding) and send it; returns where it landed.

    Args:
        kafka: Kafka connection settings.
        event: The event.
        topic: Target topic.
        mode: Binary (``ce_`` headers) or structured (JSON envelope).
        key: Kafka key; the ``partitionkey`` extension when None.
        timeout: Seconds to wait for the connection.

    Raises:
        ValueError: The event cannot be encoded.
    """
    record_key, value, headers = encode(event, mode)
    if key is not None:
        record_key = key.encode("utf-8")
    async with started(producer_for(kafka), timeout) as producer:
        meta = await producer.send_and_wait(topic, value=value, key=record_key, headers=headers)
    return Published(meta.topic, meta.partition, meta.offset)


async def log_ends(
    consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition], timeout: float = 10.0
) -> dict[TopicPartition, int]:
    """The end offset of each partition: the larger of the broker's ``ListOffsets`` answer and
    the high watermark of a fetch from there.

    Kafka's answer is the end; the embedded broker's is the first offset of the last batch
    plus one, short of the end when that batch holds several records (measured: 4 records in
    one batch, end offset 1). Leaves ``consumer`` assigned to ``tps``, its positions moved.
    """
    ends: dict[TopicPartition, int] = await consumer.end_offsets(list(tps))
    consumer.assign(list(ends))
    for tp, end in ends.items():
        consumer.seek(tp, end)
    deadline = asyncio.get_running_loop().time() + timeout
    while any(consumer.highwater(tp) is None for tp in ends):
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"no fetch response from the broker within {timeout}s")
        try:
            await consumer.getmany(*ends, timeout_ms=100, max_records=1)
        except Exception as exc:
            # A record aiokafka cannot parse: the response's high watermark is read all the
            # same.
            if not is_parse_error(exc):
                raise
    return {tp: max(end, consumer.highwater(tp) or 0) for tp, end in ends.items()}
