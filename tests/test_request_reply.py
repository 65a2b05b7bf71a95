"""Answers over the event bus, through the sidecar: update-with-start replies and request()."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from flows.asking import AskWorkflow, QuoteWorkflow
from kit import loom_settings
from temporalio.client import Client

from bridge.actions import UpdateWithStart
from bridge.events import CAUSATION, CORRELATION, Event
from bridge.kafka.binding import decode, encode
from bridge.kafka.clients import LoomProducer
from bridge.kafka.record import Record
from bridge.matching import Match
from bridge.routing import Route, Router
from bridge.settings import EmitSettings
from bridge.sidecar.loop import Loom, running
from bridge.testing import loom_worker, read_records
from bridge.worker.activities import loom_activities

pytestmark = [pytest.mark.kafka, pytest.mark.temporal]


async def read(bootstrap: str, topic: str, count: int) -> list[Event]:
    return [decode(r) for r in await read_records(bootstrap, topic, count=count, timeout=60)]


async def test_update_with_start_result_goes_back_to_kafka_once_per_request(
    temporal_client: Client,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    task_queue: str,
) -> None:
    topic, replies, dlq = await new_topic(), await new_topic(), await new_topic()
    customer = uuid.uuid4().hex[:8]
    router = Router([
        Route("quote", Match(type="quote.requested"), UpdateWithStart(
            workflow=QuoteWorkflow, task_queue=task_queue, workflow_id="quote-{subject}",
            reply_topic=replies,
        )),
    ])
    request_event = Event(id="q-1", source="test/shop", type="quote.requested",
                          subject=customer, data={"qty": 3})
    key, value, headers = encode(request_event)
    producer = await make_producer()
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[QuoteWorkflow]):
        async with running(Loom(router, temporal_client, loom_settings(loom_kafka_bootstrap, [topic], dlq))):
            await producer.send_and_wait(topic, value=value, key=key, headers=headers)
            first = await read(loom_kafka_bootstrap, replies, 1)
            # Redelivered: the same update id returns the first result; the handler ran once.
            await producer.send_and_wait(topic, value=value, key=key, headers=headers)
            both = await read(loom_kafka_bootstrap, replies, 2)
    assert [e.data for e in both] == [{"price": 30, "calls": 1}] * 2
    reply = first[0]
    assert reply.type == "quote.requested.reply"
    assert reply.extensions[CAUSATION] == "q-1"
    assert reply.subject == f"quote-{customer}"
    assert both[0].id == both[1].id  # deterministic: consumers can drop the repeat


async def test_request_reply_round_trip_through_the_sidecar_without_a_route(
    temporal_client: Client,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    task_queue: str,
) -> None:
    commands, replies, dlq = await new_topic(), await new_topic(), await new_topic()
    producer = await make_producer()

    async def pricing_service() -> None:
        """A plain Kafka service: answers each command, copying its correlation."""
        consumer = AIOKafkaConsumer(
            commands, bootstrap_servers=loom_kafka_bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=200)
                for rec in (r for rs in batch.values() for r in rs):
                    command = decode(Record.from_aiokafka(rec))
                    answer = Event(
                        id=f"answer-{command.id}", source="test/pricing", type="price.quoted",
                        data={"sku": command.data["sku"], "price": 42},
                        extensions={CORRELATION: command.extensions[CORRELATION],
                                    CAUSATION: command.id},
                    )
                    k, v, h = encode(answer)
                    await producer.send_and_wait(replies, value=v, key=k, headers=h)
        finally:
            await consumer.stop()

    publisher = LoomProducer(factory=lambda: AIOKafkaProducer(
        bootstrap_servers=loom_kafka_bootstrap, enable_idempotence=False))
    service = asyncio.create_task(pricing_service())
    try:
        async with publisher, loom_worker(
            temporal_client, task_queue=task_queue, workflows=[AskWorkflow],
            activities=loom_activities(publisher, EmitSettings(default_topic=commands)),
        ):
            loom = Loom(Router([]), temporal_client, loom_settings(loom_kafka_bootstrap, [replies], dlq))
            async with running(loom):
                result = await temporal_client.execute_workflow(
                    AskWorkflow.run, commands, id=f"ask-{uuid.uuid4().hex[:8]}",
                    task_queue=task_queue, execution_timeout=timedelta(seconds=90),
                )
    finally:
        service.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await service
    assert result == {"sku": "sku-1", "price": 42}
