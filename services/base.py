"""A participant: consume commands, answer with CloudEvents, commit after the answer is sent.

Commands are deduplicated by CloudEvent identity (a retried ``emit()`` publishes the same id),
and a reply's id is derived from the command's id, so a redelivered command yields the same
reply id and the saga's inbox drops the repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bridge.events import CAUSATION, CAUSATION_ID, CORRELATION_ID, PARTITION_KEY, Event
from bridge.exceptions import BadInputError
from bridge.kafka.binding import decode, encode
from bridge.kafka.record import Record
from workflows.models import CommandData

__all__ = ["Participant", "Reply"]

log = logging.getLogger("loom.services")

_REPLY_NAMESPACE = uuid.UUID("6f1d3c1e-55a8-5c3e-9a0e-6c6f6f6d0003")


@dataclass(frozen=True)
class Reply:
    """What a participant answers to one command: an event type and an optional reason."""

    type: str
    reason: str | None = None


class Participant:
    """Base class of the services: override :meth:`handle`.

    Args:
        kafka_options: aiokafka connection options (``bootstrap_servers``, security, ...).
        group_id: Consumer group (default ``loom-demo-<name>``).

    Attributes:
        name: Service name; the replies' CloudEvent source is ``services/<name>``.
        command_topic: Topic the commands come from.
        reply_topic: Topic the replies go to.
        handled: Commands answered (repeats excluded).
    """

    name = "participant"
    command_topic = ""
    reply_topic = ""

    def __init__(self, kafka_options: Mapping[str, Any], *, group_id: str | None = None) -> None:
        self.kafka_options = dict(kafka_options)
        self.group_id = group_id or f"loom-demo-{self.name}"
        self.handled = 0
        # Command identity -> the answer given: a repeat gets the same answer (same reply id)
        # without running the business logic twice.
        self._answers: OrderedDict[str, Reply] = OrderedDict()
        self._ready = asyncio.Event()

    @property
    def source(self) -> str:
        """CloudEvent ``source`` of the replies."""
        return f"services/{self.name}"

    def handle(self, command: Event, data: CommandData) -> Reply | None:
        """Decide the answer to one command (override); None: no answer for now."""
        raise NotImplementedError

    def reply_event(self, command: Event, data: CommandData, reply: Reply) -> Event:
        """The CloudEvent answering ``command``."""
        return Event(
            id=str(uuid.uuid5(_REPLY_NAMESPACE, f"{self.source}\x1f{command.key}\x1f{reply.type}")),
            source=self.source,
            type=reply.type,
            subject=data.order_id,
            time=datetime.now(UTC),
            data={"order_id": data.order_id, "reason": reply.reason},
            datacontenttype="application/json",
            # The CloudEvents correlation extension (and the loom's older name of the cause).
            extensions={
                PARTITION_KEY: data.order_id,
                CORRELATION_ID: command.correlation or data.order_id,
                CAUSATION_ID: command.id,
                CAUSATION: command.id,
            },
        )

    async def wait_ready(self) -> None:
        """Wait until the consumer joined its group and owns its partitions."""
        await self._ready.wait()

    async def run(self, stop: asyncio.Event) -> None:
        """Consume and answer commands until ``stop`` is set."""
        producer = AIOKafkaProducer(**self.kafka_options, enable_idempotence=False)
        consumer = AIOKafkaConsumer(
            self.command_topic,
            **self.kafka_options,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # The group forms after about half the session timeout; 6 s is Kafka's minimum.
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        )
        await producer.start()
        try:
            await consumer.start()
            try:
                await self._loop(consumer, producer, stop)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()
        finally:
            await producer.stop()

    async def _loop(
        self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, stop: asyncio.Event
    ) -> None:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            if consumer.assignment():
                self._ready.set()
            for records in batch.values():
                for rec in records:
                    await self._answer(producer, Record.from_aiokafka(rec))
            if batch:
                await consumer.commit()

    async def _answer(self, producer: AIOKafkaProducer, record: Record) -> None:
        try:
            command = decode(record)
            data = CommandData.model_validate(command.data)
        except (BadInputError, ValueError) as exc:
            log.warning("%s: skipping bad command at offset %d: %s", self.name, record.offset, exc)
            return
        reply = self._answers.get(command.key)
        if reply is None:
            answer = self.handle(command, data)
            if answer is None:
                log.info("%s: %s %s -> held, no answer yet", self.name, command.type, data.order_id)
                return
            reply = self._answers[command.key] = answer
            self.handled += 1
            while len(self._answers) > 10_000:
                self._answers.popitem(last=False)
        event = self.reply_event(command, data, reply)
        key, value, headers = encode(event)
        await producer.send_and_wait(self.reply_topic, value=value, key=key, headers=headers)
        log.info("%s: %s %s -> %s", self.name, command.type, data.order_id, reply.type)
