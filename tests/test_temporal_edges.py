"""Temporal-side edges through the loom: the per-run signal cap, and Kafka timeouts on the way
out (update replies, the publish activity). A namespace typo is scenario 11 of the fault
suite (tests/faults/test_temporal_edges.py)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError
from flows.rollover import SIGNAL_CAP, SlowRollover
from kit import loom_settings, workflow_started
from recorder import RECORDER, RecorderWorkflow, publish
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from bridge.actions import ActionKind, Invocation, SignalWithStart
from bridge.dev import EmbeddedKafka, EmbeddedTemporal
from bridge.events import Event
from bridge.exceptions import error_reason
from bridge.kafka.clients import LoomProducer
from bridge.kafka.deadletters import parse_deadletter
from bridge.routing import Match, Route, Router
from bridge.settings import EmitSettings
from bridge.sidecar.dispatch import is_retriable
from bridge.sidecar.loop import Loom, running
from bridge.sidecar.metrics import metric_total
from bridge.sidecar.replies import publish_reply
from bridge.testing import loom_worker, read_records
from bridge.worker.activities import PublishActivities
from bridge.workflow import PublishRequest, PublishResult

pytestmark = [pytest.mark.kafka, pytest.mark.temporal]

async def workflow_result(client: Client, workflow_id: str, timeout: float) -> Any:
    """The result of the workflow's last run, once it started and finished."""
    await workflow_started(client, workflow_id, timeout)
    return await asyncio.wait_for(client.get_workflow_handle(workflow_id).result(), timeout)


def cap_events(kind: str, entity: str, count: int) -> list[Event]:
    return [
        Event(id=f"{entity}-{n}", source="test://cap", type=f"cap.{kind}",
              data={"entity": entity, "last": n == count - 1},
              extensions={"partitionkey": entity})
        for n in range(count)
    ]


async def test_signal_cap_refusals_wait_for_the_rollover_then_dead_letter_when_it_never_comes(
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    task_queue: str,
) -> None:
    topic, dlq = await new_topic(), await new_topic()
    router = Router([
        Route("roll", Match(type="cap.roll"), SignalWithStart(
            workflow=SlowRollover, task_queue=task_queue, workflow_id="cap-{data.entity}")),
        Route("stuck", Match(type="cap.stuck"), SignalWithStart(
            workflow=RECORDER, task_queue=task_queue, workflow_id="cap-{data.entity}")),
    ])
    rolling, stuck = f"roll-{uuid.uuid4().hex[:6]}", f"stuck-{uuid.uuid4().hex[:6]}"
    # 3 runs' worth for the workflow that rolls over; the one that never does gets 2 over.
    roll_events = cap_events("roll", rolling, 3 * SIGNAL_CAP - 1)
    stuck_events = cap_events("stuck", stuck, SIGNAL_CAP + 2)
    settings = loom_settings(
        loom_kafka_bootstrap, [topic], dlq,
        dispatch={"signal_limit_retry_s": 2.0, "retry_initial_s": 0.05, "retry_max_s": 0.5},
    )
    producer = await make_producer()
    async with EmbeddedTemporal(
        dynamic_config={"history.maximumSignalsPerExecution": str(SIGNAL_CAP)}
    ) as server:
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        async with loom_worker(client, task_queue=task_queue,
                          workflows=[SlowRollover, RecorderWorkflow]):
            loom = Loom(router, client, settings)
            async with running(loom):
                await publish(producer, topic, [*roll_events, *stuck_events])
                got = await workflow_result(client, f"cap-{rolling}", timeout=60)
                letters = [parse_deadletter(r) for r in await read_records(
                    loom_kafka_bootstrap, dlq, count=2, timeout=60)]
                stuck_got = await client.get_workflow_handle(f"cap-{stuck}").query(
                    RecorderWorkflow.events)
            retries = metric_total(loom.metrics.retries, reason="signal-limit")
            deadlettered = metric_total(loom.metrics.deadlettered)
    # The refusals of the capped runs were retried until each run continued as new.
    assert got == [e.id for e in roll_events]
    assert retries >= 2
    # The run that never continues as new: what the cap refused is dead-lettered, in order,
    # with its reason, after the bounded retries, not at the first refusal.
    assert stuck_got == [e.id for e in stuck_events[:SIGNAL_CAP]]
    assert [d.info["reason"] for d in letters] == ["signal-limit", "signal-limit"]
    assert [d.record.key for d in letters] == [stuck.encode()] * 2
    assert [d.info["offset"] for d in letters] == [
        str(len(roll_events) + SIGNAL_CAP), str(len(roll_events) + SIGNAL_CAP + 1)]
    assert deadlettered == 2
    assert retries >= 2 + 2 * 2  # a few retries per refused event over its 2 s at least


# --- Kafka timeouts on the way out ---------------------------------------------------------


@pytest_asyncio.fixture(scope="module")
async def stalled_producer() -> AsyncIterator[tuple[AIOKafkaProducer, str]]:
    """A producer whose broker is gone: sends fail after 1 s, some with ``KafkaTimeoutError``
    (small batches fill up while nothing drains them), others with ``NodeNotReadyError``.
    One for the module: stopping the broker with a client connected takes 5 s."""
    kafka = EmbeddedKafka()
    await kafka.start()
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap, enable_idempotence=False,
        request_timeout_ms=1000, max_batch_size=1024, linger_ms=0,
    )
    try:
        await producer.start()
        topic = f"replies-{uuid.uuid4().hex[:6]}"
        await producer.send_and_wait(topic, b"warm")  # metadata known: sends queue up
        await kafka.stop()
        yield producer, topic
    finally:
        await kafka.stop()
        with contextlib.suppress(Exception):
            await producer.stop()


def outcomes_of_concurrent(results: list[Any]) -> list[BaseException]:
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == len(results)  # nothing can succeed without a broker
    # The case that matters was met: aiokafka raised its KafkaTimeoutError (retriable=False).
    assert any(isinstance(e, KafkaTimeoutError) or isinstance(e.__cause__, KafkaTimeoutError)
               for e in errors), errors
    return errors


async def test_reply_that_times_out_is_retried_never_dead_lettered(
    stalled_producer: tuple[AIOKafkaProducer, str],
) -> None:
    producer, topic = stalled_producer
    request = Event(id="q-1", source="test://shop", type="quote.requested", data={})
    inv = Invocation(kind=ActionKind.UPDATE_WITH_START, route="quote", event=request,
                     workflow_id="quote-1", request_id="r", reply_topic=topic)

    results = await asyncio.gather(
        *(publish_reply(producer, inv, {"pad": "x" * 900, "n": n}, "g") for n in range(10)),
        return_exceptions=True,
    )

    # The update was applied already: a lost ack must not dead-letter the request.
    errors = outcomes_of_concurrent(results)
    assert all(is_retriable(e) for e in errors), [(type(e), e) for e in errors]
    assert {error_reason(e) for e in errors} == {"reply-publish"}


async def test_publish_activity_retries_kafka_timeouts(
    stalled_producer: tuple[AIOKafkaProducer, str],
) -> None:
    producer, topic = stalled_producer
    shared = LoomProducer(factory=lambda: producer)
    shared._producer = producer  # already started by the fixture
    publisher = PublishActivities(shared, EmitSettings(default_topic=topic))
    env = ActivityEnvironment()

    async def publish_one(n: int) -> PublishResult:
        event = Event(id=f"e-{n}", source="test://wf", type="thing.done", data={"pad": "x" * 900})
        return await env.run(publisher.publish, PublishRequest(event=event.to_payload()))

    results = await asyncio.gather(*(publish_one(n) for n in range(10)), return_exceptions=True)

    # emit() must never fail a workflow on a broker hiccup: every failure is retryable.
    errors = outcomes_of_concurrent(results)
    refused = [e for e in errors if isinstance(e, ApplicationError) and e.non_retryable]
    assert refused == []
