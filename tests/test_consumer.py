"""The inbound loop end to end: real broker, real Temporal dev server, real worker."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import recorder
from kit import FAST_GROUP, check_loop, eventually, loom_settings
from pydantic import BaseModel, field_validator
from recorder import RecorderWorkflow, publish, wait_delivered
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from bridge.actions import SignalWithStart
from bridge.dev import EmbeddedTemporal
from bridge.events import Event
from bridge.kafka import deadletters as deadletter
from bridge.kafka.binding import encode
from bridge.routing import Match, Route, Router
from bridge.sidecar.loop import Loom, running
from bridge.sidecar.metrics import metric_total
from bridge.testing import loom_worker, read_records

pytestmark = [pytest.mark.kafka, pytest.mark.temporal]


class Step(BaseModel):
    entity: str
    seq: int


def recorder_router(task_queue: str) -> Router:
    return Router([
        Route(
            "step",
            match=Match(type="test.step"),
            data=Step,
            action=SignalWithStart(
                workflow=RecorderWorkflow, task_queue=task_queue, workflow_id="rec-{data.entity}"
            ),
        )
    ])


def step_events(prefix: str, entities: int, per_entity: int) -> list[Event]:
    return recorder.step_events(
        prefix, entities, per_entity, type="test.step", source="test://producer"
    )


def expected_by_workflow(events: Sequence[Event]) -> dict[str, list[str]]:
    return recorder.expected_by_workflow(events, "rec-")


async def test_2000_events_200_workflows_in_order_exactly_once_and_redelivery(
    temporal_client: Client,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    task_queue: str,
) -> None:
    topic = await new_topic(partitions=4)
    dlq = await new_topic()
    prefix = uuid.uuid4().hex[:6]
    events = step_events(prefix, entities=200, per_entity=10)
    expected = expected_by_workflow(events)
    producer = await make_producer()
    settings = loom_settings(loom_kafka_bootstrap, [topic], dlq, dispatch={"max_in_flight": 128})
    loom = Loom(recorder_router(task_queue), temporal_client, settings)
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[RecorderWorkflow],
                      max_concurrent_workflow_tasks=100):
        async with running(loom):
            await publish(producer, topic, events)
            seen = await wait_delivered(temporal_client, expected, 90)
            assert seen == expected
            # The same events again (same source and id): nothing changes in any workflow,
            # once Temporal acknowledged every call of the second round too.
            await publish(producer, topic, events)
            await eventually(lambda: metric_total(loom.metrics.routed), timeout=90,
                             until=lambda routed: routed >= 2 * len(events),
                             what="calls acknowledged (both rounds)")
            seen = await wait_delivered(temporal_client, expected, 90)
            assert seen == expected
        assert metric_total(loom.metrics.committed) == 4000  # every offset committed on stop
    assert metric_total(loom.metrics.deadlettered) == 0


def _header(record: Any, name: str) -> str:
    return str(dict(record.headers)[name].decode())


async def test_poison_records_go_to_the_dead_letter_topic_and_good_ones_pass(
    temporal_client: Client,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    task_queue: str,
) -> None:
    topic = await new_topic(partitions=1)
    dlq = await new_topic()
    prefix = uuid.uuid4().hex[:6]
    good = step_events(prefix, entities=2, per_entity=6)
    expected = expected_by_workflow(good)
    producer = await make_producer()
    k, v, h = encode(Event(id="bad-data", source="t", type="test.step", data={"entity": "x", "seq": "NaN"}))
    k2, v2, h2 = encode(Event(id="nobody", source="t", type="test.unrouted", data={}))
    big = {"entity": f"{prefix}-big", "seq": 0, "blob": "x" * (3 * 1024 * 1024)}
    k3, v3, h3 = encode(Event(id="big", source="t", type="test.step", data=big))
    poison: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]], str]] = [
        (b"k", b"\xff\xfe not a cloudevent", [], "decode"),
        (None, b"{}", [("ce_id", b"1"), ("ce_type", b"test.step"), ("ce_specversion", b"1.0")], "decode"),
        (k, v, h, "data-validation"),
        (k2, v2, h2, "unmatched"),
        (k3, v3, h3, "payload-too-large"),
    ]
    loom = Loom(recorder_router(task_queue), temporal_client,
                loom_settings(loom_kafka_bootstrap, [topic], dlq))
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[RecorderWorkflow]):
        async with running(loom):
            for i, event in enumerate(good):
                await publish(producer, topic, [event])
                if i < len(poison):
                    key, value, headers, _ = poison[i]
                    await producer.send_and_wait(topic, value=value, key=key, headers=headers)
            assert await wait_delivered(temporal_client, expected, 90) == expected
            letters = await read_records(loom_kafka_bootstrap, dlq, count=len(poison))
    assert [_header(r, deadletter.REASON) for r in letters] == [p[3] for p in poison]
    for letter, (key, value, headers, _) in zip(letters, poison, strict=True):
        assert letter.key == key
        assert letter.value == value  # byte for byte
        assert [(n, b) for n, b in letter.headers if not n.startswith(deadletter.PREFIX)] == headers
        assert _header(letter, deadletter.TOPIC) == topic
        assert _header(letter, deadletter.PARTITION) == "0"
        assert int(_header(letter, deadletter.OFFSET)) >= 0
        assert _header(letter, deadletter.ERROR_CLASS).startswith("bridge.exceptions.")
        assert _header(letter, deadletter.MESSAGE)
    routes = [_header(r, deadletter.ROUTE) for r in letters]
    assert routes[4] == "step"  # refused at the Temporal call: the route is known


async def test_temporal_restart_mid_stream_loses_and_duplicates_nothing(
    tmp_path: Path,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    task_queue: str,
) -> None:
    topic = await new_topic(partitions=2)
    dlq = await new_topic()
    prefix = uuid.uuid4().hex[:6]
    events = step_events(prefix, entities=30, per_entity=20)
    expected = expected_by_workflow(events)
    producer = await make_producer()
    async with EmbeddedTemporal(db_file=tmp_path / "t.db") as server:
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        settings = loom_settings(
            loom_kafka_bootstrap, [topic], dlq,
            dispatch={"retry_initial_s": 0.05, "retry_max_s": 0.5},
        )
        loom = Loom(recorder_router(task_queue), client, settings)
        async with loom_worker(client, task_queue=task_queue, workflows=[RecorderWorkflow]):
            async with running(loom):
                await publish(producer, topic, events[:200])
                # Mid-stream: Temporal goes down once the loom delivered part of the stream,
                # and comes back once the loom took the next part and felt the outage.
                await eventually(lambda: metric_total(loom.metrics.routed), timeout=60,
                                 what="a first call acknowledged")
                await server.stop()
                await publish(producer, topic, events[200:400])
                await eventually(
                    lambda: (metric_total(loom.metrics.consumed), metric_total(loom.metrics.retries)),
                    until=lambda c_r: c_r[0] >= 400 and c_r[1] > 0, timeout=60,
                    what="(consumed, retried) while Temporal is down",
                )
                await server.start()
                await publish(producer, topic, events[400:])
                seen = await wait_delivered(client, expected, 90)
        assert metric_total(loom.metrics.retries) > 0  # the outage was felt
    assert seen == expected
    assert metric_total(loom.metrics.deadlettered) == 0


async def test_second_consumer_joins_and_leaves_mid_stream(
    temporal_client: Client,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    task_queue: str,
) -> None:
    topic = await new_topic(partitions=4)
    dlq = await new_topic()
    prefix = uuid.uuid4().hex[:6]
    events = step_events(prefix, entities=40, per_entity=15)
    expected = expected_by_workflow(events)
    producer = await make_producer()
    settings = loom_settings(loom_kafka_bootstrap, [topic], dlq)
    first = Loom(recorder_router(task_queue), temporal_client, settings)
    second = Loom(recorder_router(task_queue), temporal_client, settings)
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[RecorderWorkflow]):
        async with running(first):
            await publish(producer, topic, events[:200])
            async with running(second):
                # Part of the stream while the group rebalances, part once the second member
                # owns partitions: it leaves only after it did real work.
                await publish(producer, topic, events[200:300])
                await eventually(lambda: second.health.assigned, timeout=20,
                                 what="the second member owns partitions")
                await publish(producer, topic, events[300:400])
                await eventually(lambda: metric_total(second.metrics.routed), timeout=30,
                                 what="calls acknowledged by the second member")
            await publish(producer, topic, events[400:])
            seen = await wait_delivered(temporal_client, expected, 90)
    assert seen == expected
    handled = metric_total(first.metrics.routed) + metric_total(second.metrics.routed)
    assert handled >= len(events)
    assert metric_total(second.metrics.routed) > 0  # the second member did real work


async def test_kafka_probe_follows_the_broker(
    temporal_client: Client, task_queue: str
) -> None:
    from bridge.dev import EmbeddedKafka, create_topic

    async with EmbeddedKafka() as kafka:
        await create_topic(kafka.bootstrap, "probe")
        settings = loom_settings(kafka.bootstrap, ["probe"], "probe.dlq")
        loom = Loom(recorder_router(task_queue), temporal_client, settings)
        async with running(loom):
            assert await loom.probe_kafka(timeout=5)
            assert loom.health.kafka_connected
            await kafka.stop()
            assert not await loom.probe_kafka(timeout=2)
            assert not loom.health.ready
            loom.settings.dispatch.drain_timeout_s = 0
        # With the broker gone the consumer's stop() raises its coordinator's CancelledError;
        # the shutdown must still stop the producer (aiokafka warns "Unclosed" otherwise).
        producer = loom._producer
        assert producer is not None and producer._closed
        assert not loom.health.kafka_connected


def partition_series(loom: Loom) -> set[tuple[str, int]]:
    """(metric, partition) of every per-partition series of ``loom``."""
    found: set[tuple[str, int]] = set()
    for gauge in (loom.metrics.committed, loom.metrics.lag):
        for family in gauge.collect():
            found.update((family.name, int(s.labels["partition"])) for s in family.samples)
    return found


def owned(loom: Loom) -> set[int]:
    return {partition for _, partition in loom.health.assigned}


async def test_partition_ownership_is_a_metric_not_readiness(
    temporal_client: Client,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    task_queue: str,
) -> None:
    """Three members, two partitions: the idle member is ready and says it owns nothing; a
    member that loses a partition drops that partition's committed-offset and lag series."""
    from bridge.sidecar.process import _update_lag

    topic = await new_topic(partitions=2)
    settings = loom_settings(loom_kafka_bootstrap, [topic], await new_topic())
    events = step_events(uuid.uuid4().hex[:6], entities=12, per_entity=2)
    first, second, third = (Loom(recorder_router(task_queue), temporal_client, settings)
                            for _ in range(3))
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[RecorderWorkflow]):
        async with running(first):
            await publish(await make_producer(), topic, events)
            both = {("loom_committed_offset", 0), ("loom_committed_offset", 1),
                    ("loom_consumer_lag", 0), ("loom_consumer_lag", 1)}

            def first_reports_both() -> bool:
                _update_lag(first)  # the sidecar's health tick
                return partition_series(first) == both

            await eventually(first_reports_both, timeout=60, interval=0.1,
                             what="committed offsets and lag of both partitions")
            assert metric_total(first.metrics.partitions) == 2
            async with running(second):
                await eventually(lambda: len(owned(first)) == 1 and len(owned(second)) == 1,
                                 timeout=60, interval=0.1, what="one partition each")
                (kept,) = owned(first)

                def first_reports_the_kept_one() -> bool:
                    _update_lag(first)
                    return partition_series(first) == {
                        ("loom_committed_offset", kept), ("loom_consumer_lag", kept)}

                # The lost partition's series go at once; the kept one's committed offset is
                # back when the rebalance ends, its lag at the next fetch.
                assert ("loom_committed_offset", 1 - kept) not in partition_series(first)
                await eventually(first_reports_the_kept_one, timeout=60, interval=0.1,
                                 what="the kept partition's series only")
                assert metric_total(first.metrics.partitions) == 1
                assert metric_total(second.metrics.partitions) == 1
                async with running(third):
                    members = (first, second, third)
                    await eventually(
                        lambda: all(m.health.group_joined for m in members)
                        and sorted(p for m in members for p in owned(m)) == [0, 1],
                        timeout=60, interval=0.1, what="three members sharing two partitions",
                    )
                    idle = [m for m in members if not owned(m)]
                    assert len(idle) == 1
                    assert idle[0].health.ready  # in the group, connected: ready
                    assert metric_total(idle[0].metrics.partitions) == 0
                    assert partition_series(idle[0]) == set()
                    for member in members:
                        assert metric_total(member.metrics.partitions) == len(owned(member))


# --- no record stops the line (issue 12) --------------------------------------------------------


class Strict(BaseModel):
    entity: str
    seq: int

    @field_validator("entity")
    @classmethod
    def _entity(cls, value: str) -> str:
        if value == "boom":
            # Not a ValueError: pydantic lets it out as it is, as a bug in a route's code would.
            raise LookupError("bug in the route's validator")
        return value


def strict_router(task_queue: str) -> Router:
    return Router([
        *recorder_router(task_queue).routes,
        Route(
            "strict",
            match=Match(type="test.strict"),
            data=Strict,
            action=SignalWithStart(
                workflow=RecorderWorkflow, task_queue=task_queue, workflow_id="rec-{data.entity}"
            ),
        ),
    ])


async def wait_delivered_alive(
    client: Client, expected: dict[str, list[str]], loom: Loom, timeout: float = 60
) -> dict[str, list[str]]:
    """Query until every workflow holds its ids; fails at once when the loop died."""

    async def missing() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        check_loop(loom)
        seen = await recorder.query_all(client, expected)
        return seen, {w: sorted(set(ids) - set(seen[w])) for w, ids in expected.items()
                      if set(ids) - set(seen[w])}

    seen, _ = await eventually(missing, until=lambda got: not got[1], timeout=timeout,
                               interval=0.3, what="delivered (seen, missing)")
    return seen


def _structured(**members: str) -> bytes:
    # JSON text written by hand: json.dumps would refuse nothing, but this keeps the escapes
    # exactly as a producer in another language would send them.
    doc = {"specversion": '"1.0"', "id": '"p"', "source": '"t"', "type": '"test.step"',
           "data": '{"entity":"p","seq":0}', **members}
    return ("{" + ",".join(f'"{k}":{v}' for k, v in doc.items()) + "}").encode("ascii")


async def test_records_that_used_to_stop_the_line_are_dead_lettered(
    temporal_client: Client,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    task_queue: str,
) -> None:
    """Lone surrogates in a structured record's id, source or extension name, and a route
    whose own code raises: each is dead-lettered (decode / internal) and the loop goes on."""
    topic, dlq = await new_topic(partitions=1), await new_topic()
    prefix = uuid.uuid4().hex[:6]
    good = step_events(prefix, entities=2, per_entity=5)
    expected = expected_by_workflow(good)
    ctype = [("content-type", b"application/cloudevents+json")]
    _, boom, boom_headers = encode(
        Event(id="boom-1", source="t", type="test.strict", data={"entity": "boom", "seq": 1})
    )
    poison: list[tuple[bytes | None, list[tuple[str, bytes]], str, str]] = [
        (_structured(id='"a\\udc80"'), ctype, "decode", "attribute 'id'"),
        (_structured(source='"t\\udc80"'), ctype, "decode", "attribute 'source'"),
        (_structured(**{"x\\udc80": '"1"'}), ctype, "decode", "extension name"),
        (boom, boom_headers, "internal", "LookupError: bug in the route's validator"),
    ]
    producer = await make_producer()
    loom = Loom(strict_router(task_queue), temporal_client,
                loom_settings(loom_kafka_bootstrap, [topic], dlq, kafka=FAST_GROUP))
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[RecorderWorkflow]):
        async with running(loom):
            for i, event in enumerate(good):
                if i < len(poison):
                    value, headers, _, _ = poison[i]
                    await producer.send_and_wait(topic, value=value, headers=headers)
                await publish(producer, topic, [event])
            assert await wait_delivered_alive(temporal_client, expected, loom) == expected
            letters = await read_records(loom_kafka_bootstrap, dlq, count=len(poison))
            assert loom.error is None
    assert [_header(r, deadletter.REASON) for r in letters] == [p[2] for p in poison]
    for letter, (value, headers, _, words) in zip(letters, poison, strict=True):
        assert words in _header(letter, deadletter.MESSAGE)
        assert letter.value == value  # byte for byte
        assert [(n, b) for n, b in letter.headers if not n.startswith(deadletter.PREFIX)] == headers
    # The internal error names where it was raised (the traceback's last frame).
    assert "test_consumer.py" in _header(letters[3], deadletter.MESSAGE)


async def test_position_moved_back_is_taken_again_and_the_loop_survives(
    temporal_client: Client,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    task_queue: str,
) -> None:
    """A seek back (what an offset reset does on real Kafka) redelivers records already
    taken: the partition is tracked again from there, nothing raises, nothing doubles."""
    from aiokafka import TopicPartition

    topic, dlq = await new_topic(partitions=1), await new_topic()
    prefix = uuid.uuid4().hex[:6]
    events = step_events(prefix, entities=3, per_entity=6)
    expected = expected_by_workflow(events)
    producer = await make_producer()
    loom = Loom(recorder_router(task_queue), temporal_client,
                loom_settings(loom_kafka_bootstrap, [topic], dlq, kafka=FAST_GROUP))
    tp = TopicPartition(topic, 0)
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[RecorderWorkflow]):
        async with running(loom):
            await publish(producer, topic, events[:12])
            first = expected_by_workflow(events[:12])
            await wait_delivered_alive(temporal_client, first, loom)
            await _committed(loom, tp, 12)
            assert loom.consumer is not None
            loom.consumer.seek(tp, 3)  # offsets 3..11 come again
            await publish(producer, topic, events[12:])
            seen = await wait_delivered_alive(temporal_client, expected, loom)
            await _committed(loom, tp, 18)
            assert loom.error is None
    assert seen == expected  # the redelivered calls were dropped by their request ids
    assert metric_total(loom.metrics.consumed) >= 18 + 9


async def _committed(loom: Loom, tp: Any, offset: int, timeout: float = 30) -> None:
    def committed() -> float:
        check_loop(loom)
        return metric_total(loom.metrics.committed, topic=tp.topic, partition=str(tp.partition))

    await eventually(committed, until=lambda done: done >= offset, timeout=timeout,
                     interval=0.1, what=f"{tp} committed up to {offset}")


def _raw(event: Event) -> tuple[bytes | None, bytes | None, list[tuple[bytes, bytes | None]]]:
    key, value, headers = encode(event)
    return key, value, [(name.encode(), val) for name, val in headers]


async def test_record_aiokafka_cannot_parse_is_dead_lettered_and_nothing_else_is_lost(
    temporal_client: Client,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    task_queue: str,
) -> None:
    """A header name that is not UTF-8: aiokafka's getmany raises a bare UnicodeDecodeError on
    every call, and records of other partitions drained in that call are thrown away with
    their positions moved. The loom reads the batch raw, dead-letters that one record with its
    coordinates and its headers, and every other record of both partitions arrives once."""
    from aiokafka import TopicPartition
    from rawkafka import batch, produce_batch

    topic, dlq = await new_topic(partitions=2), await new_topic()
    prefix = uuid.uuid4().hex[:6]
    events = step_events(prefix, entities=1, per_entity=6)
    other = step_events(prefix + "o", entities=1, per_entity=5)
    expected = expected_by_workflow(events[:2] + events[3:] + other)
    producer = await make_producer()
    for event in other:  # partition 1: five good records
        key, value, headers = encode(event)
        await producer.send_and_wait(topic, value=value, key=key, headers=headers, partition=1)
    bad_key, bad_value, bad_headers = _raw(events[2])
    bad_headers = [*bad_headers, (b"\xff\xfe", b"x"), (b"ok", None)]
    # Partition 0: offsets 0..4 in ONE batch, offset 2 unreadable; offset 5 on its own.
    await produce_batch(loom_kafka_bootstrap, topic, 0, batch(
        [_raw(events[0]), _raw(events[1]), (bad_key, bad_value, bad_headers), _raw(events[3]),
         _raw(events[4])]
    ))
    key, value, headers = encode(events[5])
    await producer.send_and_wait(topic, value=value, key=key, headers=headers, partition=0)
    loom = Loom(recorder_router(task_queue), temporal_client,
                loom_settings(loom_kafka_bootstrap, [topic], dlq, kafka=FAST_GROUP))
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[RecorderWorkflow]):
        async with running(loom):
            seen = await wait_delivered_alive(temporal_client, expected, loom)
            await _committed(loom, TopicPartition(topic, 0), 6)
            await _committed(loom, TopicPartition(topic, 1), 5)
            (letter,) = await read_records(loom_kafka_bootstrap, dlq, count=1)
    assert seen == expected
    parsed = deadletter.parse_deadletter(letter)
    assert parsed.info["reason"] == "unreadable"
    assert (parsed.info["topic"], parsed.info["partition"], parsed.info["offset"]) == (topic, "0", "2")
    assert (letter.key, letter.value) == (bad_key, bad_value)
    assert parsed.raw_headers == [(n, v or b"") for n, v in bad_headers]
    assert "\\xff\\xfe" in parsed.info["message"]
    assert metric_total(loom.metrics.deadlettered) == 1


async def test_offset_gap_of_a_control_batch_is_committed_past(
    temporal_client: Client,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    task_queue: str,
) -> None:
    """A transaction marker takes an offset no consumer sees (here a control batch without
    producer id, which the embedded broker accepts): the commit moves past the gap."""
    from aiokafka import TopicPartition
    from rawkafka import control_batch, produce_batch

    topic, dlq = await new_topic(partitions=1), await new_topic()
    events = step_events(uuid.uuid4().hex[:6], entities=1, per_entity=2)
    producer = await make_producer()
    await publish(producer, topic, events[:1])
    assert await produce_batch(loom_kafka_bootstrap, topic, 0, control_batch()) == 1
    await publish(producer, topic, events[1:])
    loom = Loom(recorder_router(task_queue), temporal_client,
                loom_settings(loom_kafka_bootstrap, [topic], dlq, kafka=FAST_GROUP))
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[RecorderWorkflow]):
        async with running(loom):
            seen = await wait_delivered_alive(temporal_client, expected_by_workflow(events), loom)
            await _committed(loom, TopicPartition(topic, 0), 3)  # 0, (1: the marker), 2
    assert seen == expected_by_workflow(events)
    assert metric_total(loom.metrics.consumed) == 2


async def test_record_the_deadletter_topic_refuses_entirely_stays_uncommitted(
    temporal_client: Client,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    task_queue: str,
) -> None:
    """Neither the record nor its headers-only summary fit the dead-letter topic (a producer
    limit of 300 bytes): the record is left uncommitted, counted, and the line goes on."""
    from aiokafka import TopicPartition

    topic, dlq = await new_topic(partitions=1), await new_topic()
    events = step_events(uuid.uuid4().hex[:6], entities=2, per_entity=3)
    expected = expected_by_workflow(events)
    producer = await make_producer()
    await publish(producer, topic, events[:2])
    await producer.send_and_wait(topic, value=b"\xff not a cloudevent")  # offset 2
    await publish(producer, topic, events[2:])
    settings = loom_settings(loom_kafka_bootstrap, [topic], dlq, kafka=FAST_GROUP)
    settings.kafka.producer.max_request_size = 300
    loom = Loom(recorder_router(task_queue), temporal_client, settings)
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[RecorderWorkflow]):
        async with running(loom):
            seen = await wait_delivered_alive(temporal_client, expected, loom)
            await _committed(loom, TopicPartition(topic, 0), 2)
            assert metric_total(loom.metrics.deadletter_failed) == 1
            assert loom.tracker.in_flight() == 1  # the refused record, and only it
    assert seen == expected
    assert metric_total(loom.metrics.committed) == 2  # never past the refused record
    assert metric_total(loom.metrics.deadlettered) == 0
