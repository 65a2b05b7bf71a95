"""The publish activity and emit()/request() end to end, on a real broker and Temporal server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from flows.activities_flows import (
    ChargeWorkflow,
    EmitWorkflow,
    NoTopicWorkflow,
    TwoEventsWorkflow,
    UnsandboxedTwoEventsWorkflow,
)
from pydantic import SecretStr
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError

from bridge.events import CORRELATION, EVENT_SIGNAL, Event
from bridge.kafka.clients import LoomProducer
from bridge.kafka.record import Record
from bridge.settings import EmitSettings, KafkaSettings
from bridge.testing import loom_worker, read_records
from bridge.worker.activities import PublishActivities, loom_activities
from bridge.workflow import (
    CAUSATION,
    PUBLISH_ACTIVITY,
    PublishRequest,
    PublishResult,
    emitted_event_id,
)

# --- pure logic --------------------------------------------------------------------------------


def test_topic_map_prefers_exact_types_then_first_pattern_then_default() -> None:
    settings = EmitSettings(
        topic_map={"payment.*": "payments", "payment.refund": "refunds", "*.failed": "failures"},
        default_topic="events",
    )
    assert settings.topic_for("payment.refund") == "refunds"
    assert settings.topic_for("payment.failed") == "payments"
    assert settings.topic_for("shipping.failed") == "failures"
    assert settings.topic_for("order.placed") == "events"
    assert EmitSettings(topic_map={"a": "b"}, default_topic=None).topic_for("c") is None


def test_configured_topics_win_over_the_applications_defaults() -> None:
    configured = EmitSettings(topic_map={"payment.*": "mine"}, default_topic="events")
    merged = configured.with_defaults({"payment.*": "theirs", "shipment.*": "shipping"})
    assert merged.topic_map == {"payment.*": "mine", "shipment.*": "shipping"}
    assert merged.topic_for("payment.charge") == "mine"
    assert merged.topic_for("shipment.ship") == "shipping"
    assert merged.default_topic == "events"


def test_producer_options_defaults_and_secrets() -> None:
    options = KafkaSettings().producer_options()
    assert options["acks"] == "all"
    assert options["enable_idempotence"] is False
    assert options["max_request_size"] > 2 * 1024 * 1024
    assert "sasl_mechanism" not in options
    sasl = KafkaSettings(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="u",
        sasl_password=SecretStr("hunter2"),
    )
    assert "hunter2" not in repr(sasl)
    assert sasl.producer_options()["sasl_plain_password"] == "hunter2"


# --- helpers -------------------------------------------------------------------------------------


@pytest.fixture
async def loom_producer(loom_kafka_bootstrap: str) -> AsyncIterator[LoomProducer]:
    async with LoomProducer(KafkaSettings(bootstrap=loom_kafka_bootstrap)) as producer:
        yield producer


async def read_exactly(bootstrap: str, topics: list[str], count: int) -> list[Record]:
    """Read ``count`` records from the start of ``topics`` and on to their end; fail on more
    or fewer (records written before the read, or while it waited for ``count``)."""
    records = await read_records(bootstrap, *topics, count=count, timeout=20)
    assert len(records) == count, records
    return records


def sdk_event(record: Any) -> Any:
    """Decode a record with the cloudevents SDK's Kafka binding (auto-detects the mode)."""
    message = ce_kafka.KafkaMessage(
        headers=dict(record.headers), key=record.key, value=record.value or b""
    )
    return ce_kafka.from_kafka_event(message)


# --- emit ------------------------------------------------------------------------------------------


@pytest.mark.kafka
@pytest.mark.temporal
async def test_emitted_events_are_valid_cloudevents_with_deterministic_ids(
    temporal_client: Client,
    task_queue: str,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    loom_producer: LoomProducer,
) -> None:
    events_topic, payments, explicit = await new_topic(), await new_topic(), await new_topic()
    settings = EmitSettings(topic_map={"payment.*": payments}, default_topic=events_topic)
    wid = f"emit-{uuid.uuid4()}"
    before = datetime.now(UTC)
    # No workflow cache: every activation replays from the start, so ids must replay too.
    async with loom_worker(
        temporal_client,
        task_queue=task_queue,
        workflows=[EmitWorkflow],
        activities=loom_activities(loom_producer, settings),
        max_cached_workflows=0,
    ):
        handle = await temporal_client.start_workflow(
            EmitWorkflow.run, explicit, id=wid, task_queue=task_queue
        )
        ids = await handle.result()
    assert handle.result_run_id is not None
    assert ids == [emitted_event_id(wid, handle.result_run_id, n) for n in range(4)]
    assert len(set(ids)) == 4

    records = await read_exactly(loom_kafka_bootstrap, [events_topic, payments, explicit], 4)
    by_id = {sdk_event(r).get_id(): (r, sdk_event(r)) for r in records}
    assert set(by_id) == set(ids)

    record, event = by_id[ids[0]]
    assert record.topic == events_topic
    assert record.key == wid.encode()
    assert event.get_type() == "order.accepted"
    assert event.get_source() == f"loom://default/{EmitWorkflow.__name__}"
    assert event.get_subject() == wid
    assert event.get_datacontenttype() == "application/json"
    assert event.get_data() == {"order_id": "o-1", "cents": 250}
    assert event.get_extension("partitionkey") == wid
    assert event.get_extension(CORRELATION) is None
    assert before <= event.get_time() <= datetime.now(UTC)
    assert dict(record.headers)["ce_id"] == ids[0].encode()  # binary mode by default

    record, event = by_id[ids[1]]
    assert record.topic == payments
    assert record.key == b"o-1"
    assert event.get_extension(CORRELATION) == wid
    assert event.get_extension("traceparent").startswith("00-0af765")

    record, event = by_id[ids[2]]
    assert record.topic == explicit
    assert dict(record.headers)["content-type"].startswith(b"application/cloudevents+json")
    assert (event.get_source(), event.get_subject()) == ("urn:shop", "custom")
    assert event.get_data() == {"note": "hi"}

    record, event = by_id[ids[3]]
    assert record.topic == explicit
    assert record.value is None
    assert event.get_data() is None


@pytest.mark.kafka
@pytest.mark.temporal
async def test_retried_publish_repeats_the_same_cloudevent_id(
    temporal_client: Client,
    task_queue: str,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    loom_producer: LoomProducer,
) -> None:
    topic = await new_topic()
    real = PublishActivities(loom_producer)
    attempts: list[int] = []

    # Same name as the real activity: the record is written, then the "ack is lost".
    @activity.defn(name=PUBLISH_ACTIVITY)
    async def publish_then_fail(request: PublishRequest) -> PublishResult:
        result = await real.publish(request)
        attempts.append(activity.info().attempt)
        if activity.info().attempt == 1:
            raise RuntimeError("connection lost after send")
        return result

    async with loom_worker(
        temporal_client,
        task_queue=task_queue,
        workflows=[TwoEventsWorkflow],
        activities=[publish_then_fail],
    ):
        ids = await temporal_client.execute_workflow(
            TwoEventsWorkflow.run, topic, id=f"retry-{uuid.uuid4()}", task_queue=task_queue
        )
    assert attempts == [1, 2, 1, 2]
    records = await read_exactly(loom_kafka_bootstrap, [topic], 4)
    assert [sdk_event(r).get_id() for r in records] == [ids[0], ids[0], ids[1], ids[1]]


@pytest.mark.kafka
@pytest.mark.temporal
async def test_event_ids_replay_identically_outside_the_sandbox(
    temporal_client: Client,
    task_queue: str,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    loom_producer: LoomProducer,
) -> None:
    topic = await new_topic()
    wid = f"replay-{uuid.uuid4()}"
    # No cache: each activation replays on a new instance of the workflow class.
    async with loom_worker(
        temporal_client,
        task_queue=task_queue,
        workflows=[UnsandboxedTwoEventsWorkflow],
        activities=loom_activities(loom_producer),
        max_cached_workflows=0,
    ):
        handle = await temporal_client.start_workflow(
            UnsandboxedTwoEventsWorkflow.run, topic, id=wid, task_queue=task_queue
        )
        ids = await handle.result()
    assert handle.result_run_id is not None
    assert ids == [emitted_event_id(wid, handle.result_run_id, n) for n in range(2)]
    records = await read_exactly(loom_kafka_bootstrap, [topic], 2)
    assert [sdk_event(r).get_id() for r in records] == ids


@pytest.mark.kafka
@pytest.mark.temporal
async def test_event_without_topic_fails_without_retrying(
    temporal_client: Client, task_queue: str, loom_producer: LoomProducer
) -> None:
    async with loom_worker(
        temporal_client,
        task_queue=task_queue,
        workflows=[NoTopicWorkflow],
        activities=loom_activities(loom_producer, EmitSettings(default_topic=None)),
    ):
        with pytest.raises(WorkflowFailureError) as failure:
            await asyncio.wait_for(
                temporal_client.execute_workflow(
                    NoTopicWorkflow.run, id=f"notopic-{uuid.uuid4()}", task_queue=task_queue
                ),
                15,
            )
    cause = failure.value.cause
    assert isinstance(cause, ActivityError)
    assert isinstance(cause.cause, ApplicationError)
    assert cause.cause.type == "LoomNoTopic"
    assert "nowhere.to.go" in cause.cause.message


@pytest.mark.kafka
async def test_producer_starts_lazily_and_refuses_sends_after_close(
    loom_kafka_bootstrap: str, new_topic: Callable[..., Awaitable[str]]
) -> None:
    topic = await new_topic()
    producer = LoomProducer(KafkaSettings(bootstrap=loom_kafka_bootstrap))
    assert not producer.started
    metadata = await producer.send(topic, b"v", key=b"k", headers=[("h", b"1")])
    assert producer.started
    assert (metadata.topic, metadata.offset) == (topic, 0)
    await producer.close()
    assert not producer.started
    with pytest.raises(RuntimeError, match="closed"):
        await producer.send(topic, b"v")


@pytest.mark.kafka
async def test_content_mode_defaults_to_the_activity_settings(
    loom_kafka_bootstrap: str, new_topic: Callable[..., Awaitable[str]]
) -> None:
    from temporalio.testing import ActivityEnvironment

    topic = await new_topic()
    event = Event(id="m-1", source="test", type="mode.check", data={"n": 1})
    async with LoomProducer(KafkaSettings(bootstrap=loom_kafka_bootstrap)) as producer:
        publish = PublishActivities(producer, EmitSettings(default_topic=topic, mode="structured"))
        env = ActivityEnvironment()
        await env.run(publish.publish, PublishRequest(event=event.to_payload()))
        await env.run(publish.publish, PublishRequest(event=event.to_payload(), mode="binary"))
    records = await read_records(loom_kafka_bootstrap, topic, count=2, timeout=20)
    content_types = [dict(r.headers).get("content-type", b"").decode() for r in records]
    assert content_types[0].startswith("application/cloudevents+json")  # the settings' mode
    assert not content_types[1].startswith("application/cloudevents")  # the call's own mode


# --- request-reply ---------------------------------------------------------------------------------


@pytest.mark.kafka
@pytest.mark.temporal
async def test_request_reply_round_trip(
    temporal_client: Client,
    task_queue: str,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    loom_producer: LoomProducer,
) -> None:
    topic = await new_topic()
    async with loom_worker(
        temporal_client,
        task_queue=task_queue,
        workflows=[ChargeWorkflow],
        activities=loom_activities(loom_producer),
    ):
        handle = await temporal_client.start_workflow(
            ChargeWorkflow.run,
            args=[topic, 30.0],
            id=f"charge-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        # The test plays the payment service and the loom's routing of the reply.
        [record] = await read_exactly(loom_kafka_bootstrap, [topic], 1)
        command = sdk_event(record)
        assert command.get_type() == "payment.charge"
        target = command.get_extension(CORRELATION)
        assert target == handle.id

        def reply(id: str, causation: str, type: str) -> dict[str, Any]:
            event = Event(
                id=id,
                source="test://payments",
                type=type,
                data={"charged": command.get_data()["cents"]},
                extensions={CORRELATION: target, CAUSATION: causation},
            )
            return event.to_payload()

        replies = temporal_client.get_workflow_handle(target)
        await replies.signal(EVENT_SIGNAL, reply("r0", "some-other-command", "payment.charged"))
        await replies.signal(EVENT_SIGNAL, reply("r1", command.get_id(), "payment.charged"))
        result = await asyncio.wait_for(handle.result(), 20)
    assert result == ["payment.charged", {"charged": 250}, 1]


@pytest.mark.kafka
@pytest.mark.temporal
async def test_request_without_reply_fails_with_a_timeout_error(
    temporal_client: Client,
    task_queue: str,
    new_topic: Callable[..., Awaitable[str]],
    loom_producer: LoomProducer,
) -> None:
    topic = await new_topic()
    async with loom_worker(
        temporal_client,
        task_queue=task_queue,
        workflows=[ChargeWorkflow],
        activities=loom_activities(loom_producer),
    ):
        with pytest.raises(WorkflowFailureError) as failure:
            await asyncio.wait_for(
                temporal_client.execute_workflow(
                    ChargeWorkflow.run,
                    args=[topic, timedelta(seconds=1).total_seconds()],
                    id=f"charge-{uuid.uuid4()}",
                    task_queue=task_queue,
                ),
                15,
            )
    assert isinstance(failure.value.cause, ApplicationError)
    assert failure.value.cause.type == "LoomRequestTimeout"
