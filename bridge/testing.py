"""pytest plugin: real Temporal and Kafka servers for the loom's tests and for users' own.

Registered through the ``pytest11`` entry point ``loom``, so any project that installs
temporal-loom gets these fixtures. The servers are session-scoped; every test gets fresh
topics and a fresh task queue. ``LOOM_TEST_KAFKA_BOOTSTRAP`` and
``LOOM_TEST_TEMPORAL_ADDRESS`` point the fixtures at real external servers instead of the
embedded ones (``LOOM_TEST_TEMPORAL_NAMESPACE`` picks the namespace, default ``default``).

Fixtures:
    loom_kafka_bootstrap: bootstrap servers of the session broker.
    loom_temporal: the session Temporal server (``.address``, ``.namespace``).
    temporal_client: a connected Temporal client with the pydantic data converter.
    new_topic: ``await new_topic(partitions=1) -> str`` creates a unique topic.
    make_producer: ``await make_producer(**kwargs)`` returns a started aiokafka producer
        (idempotence off, as Tansu requires), stopped after the test.
    task_queue: a unique task queue name.

Helper:
    read_records: read a topic from its start, e.g. the dead-letter topic or emitted events.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from bridge.dev import EmbeddedKafka, EmbeddedTemporal, create_topic
from bridge.kafka.record import Record

#: Search attributes the session Temporal server registers (tests of memo/search mapping).
TEST_SEARCH_ATTRIBUTES = {"LoomOrderId": "Keyword", "LoomAmount": "Double"}


@dataclass(frozen=True)
class TemporalServer:
    """Where the session's Temporal server answers."""

    address: str
    namespace: str
    embedded: EmbeddedTemporal | None


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def loom_kafka_bootstrap() -> AsyncIterator[str]:
    """Bootstrap servers of the session broker (embedded Tansu unless overridden)."""
    external = os.environ.get("LOOM_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    async with EmbeddedKafka() as kafka:
        yield kafka.bootstrap


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def loom_temporal() -> AsyncIterator[TemporalServer]:
    """The session Temporal server (embedded dev server unless overridden)."""
    external = os.environ.get("LOOM_TEST_TEMPORAL_ADDRESS")
    namespace = os.environ.get("LOOM_TEST_TEMPORAL_NAMESPACE", "default")
    if external:
        yield TemporalServer(external, namespace, None)
        return
    async with EmbeddedTemporal(search_attributes=TEST_SEARCH_ATTRIBUTES) as server:
        yield TemporalServer(server.address, server.namespace, server)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal_client(loom_temporal: TemporalServer) -> Client:
    """A Temporal client on the session server, with the pydantic data converter."""
    return await Client.connect(
        loom_temporal.address,
        namespace=loom_temporal.namespace,
        data_converter=pydantic_data_converter,
    )


@pytest_asyncio.fixture(loop_scope="session")
async def new_topic(loom_kafka_bootstrap: str) -> Callable[..., Awaitable[str]]:
    """Factory creating a unique topic: ``await new_topic(partitions=1)``."""

    async def make(partitions: int = 1, prefix: str = "loom-test") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        await create_topic(loom_kafka_bootstrap, name, partitions)
        return name

    return make


@pytest_asyncio.fixture(loop_scope="session")
async def make_producer(loom_kafka_bootstrap: str) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Factory of started aiokafka producers; all are stopped after the test."""
    from aiokafka import AIOKafkaProducer

    from bridge.kafka.clients import start_client, stop_client

    producers: list[Any] = []

    async def make(**kwargs: Any) -> Any:
        options: dict[str, Any] = {
            "bootstrap_servers": loom_kafka_bootstrap,
            "enable_idempotence": False,
            "max_request_size": 8 * 1024 * 1024,
        }
        options.update(kwargs)
        producer = await start_client(AIOKafkaProducer(**options))
        producers.append(producer)
        return producer

    yield make
    for producer in producers:
        await stop_client(producer)


@pytest.fixture
def task_queue() -> str:
    """A task queue name no other test uses."""
    return f"loom-tq-{uuid.uuid4().hex[:12]}"


async def read_records(
    bootstrap: str, *topics: str, count: int, timeout: float = 30.0
) -> list[Record]:
    """Read ``topics`` from their start until ``count`` records came (or ``timeout`` passed).

    Returns what was read: fewer than ``count`` records when the timeout passed first, so the
    caller's assertion says what was missing.
    """
    import asyncio

    from aiokafka import AIOKafkaConsumer

    from bridge.kafka.clients import started

    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    records: list[Record] = []
    async with started(consumer):
        deadline = asyncio.get_running_loop().time() + timeout
        while len(records) < count and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            records.extend(Record.from_aiokafka(r) for rs in batch.values() for r in rs)
    return records
