"""Redo after a crash or a rebalance (bridge.sidecar.redo): the dead-letter topic read back,
the commit's metadata (detected, read, refused when undecodable), the read-ahead bound."""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from kit import FAST_GROUP, eventually, loom_settings
from recorder import RecorderWorkflow, publish, query_all
from temporalio.client import Client
from test_consumer import expected_by_workflow, recorder_router, step_events

from bridge.exceptions import DecodeError
from bridge.kafka import deadletters as dl
from bridge.kafka.clients import started
from bridge.kafka.record import Record
from bridge.sidecar.batches import Ownership
from bridge.sidecar.finished import encode
from bridge.sidecar.loop import Loom, running
from bridge.sidecar.metrics import Metrics, metric_total
from bridge.sidecar.offsets import OffsetTracker
from bridge.sidecar.redo import ReadAhead, Redo, broker_keeps_metadata, letters_since
from bridge.testing import loom_worker

REAL_KAFKA = bool(os.environ.get("LOOM_TEST_KAFKA_BOOTSTRAP"))


def _redo(metrics: Metrics) -> Redo:
    return Redo(lambda: AIOKafkaConsumer(), Ownership(), deadletter_topic="dlq", group="g",
                metrics=metrics, margin_s=60, max_scan=1000)


# --- the tracker's side ---------------------------------------------------------------------


def test_finished_beyond_the_commit_point_and_the_uncommitted_count() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    tickets = [tracker.track("p", o) for o in range(10, 20)]
    assert tracker.uncommitted("p") == 10
    for t in (tickets[3], tickets[4], tickets[7]):
        tracker.done(t)
    assert tracker.committable() == {}  # the head is not finished: nothing moved
    # ... but with the finished offsets in the metadata, the head is worth a commit.
    assert tracker.committable(with_finished=True) == {"p": 10}
    assert tracker.finished_after("p", 10) == {13, 14, 17}
    tracker.mark_committed({"p": 10})
    assert tracker.committable(with_finished=True) == {}
    tracker.done(tickets[0])
    assert tracker.committable(with_finished=True) == {"p": 11}
    tracker.mark_committed({"p": 11})
    assert tracker.uncommitted("p") == 9
    assert tracker.revoke(["p"], with_finished=True) == {}  # nothing moved since
    tracker.track("q", 0)
    tracker.done(tracker.track("q", 1))
    assert tracker.revoke(["q"], with_finished=True) == {"q": 0}
    assert tracker.revoked_finished == {"q": {1}}


class _Consumer:
    """What ``ReadAhead`` and ``Redo.read_metadata`` use of a consumer (pure logic tests)."""

    def __init__(self, tps: set[TopicPartition], metadata: str = "") -> None:
        self.tps, self.paused = tps, set[TopicPartition]()
        self._coordinator = self
        self.metadata = metadata

    def assignment(self) -> set[TopicPartition]:
        return self.tps

    def pause(self, *tps: TopicPartition) -> None:
        self.paused |= set(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused -= set(tps)

    async def fetch_committed_offsets(
        self, tps: list[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        return {tp: OffsetAndMetadata(10, self.metadata) for tp in tps}


def test_a_partition_read_far_ahead_is_paused_until_its_commit_moves() -> None:
    a, b = TopicPartition("t", 0), TopicPartition("t", 1)
    consumer, metrics = _Consumer({a, b}), Metrics()
    tracker: OffsetTracker[TopicPartition] = OffsetTracker()
    bound = ReadAhead(5, metrics)
    tickets = [tracker.track(a, o) for o in range(5)]
    tracker.track(b, 0)
    bound.apply(consumer, tracker)
    assert consumer.paused == {a}
    consumer.resume(a)  # a pause for space resumes every partition: the bound pauses again
    bound.apply(consumer, tracker)
    assert consumer.paused == {a}
    for t in tickets[:2]:
        tracker.done(t)
    tracker.mark_committed(tracker.committable())
    bound.apply(consumer, tracker)
    assert consumer.paused == set()
    assert metric_total(metrics.paused) == 1


async def test_metadata_is_read_at_assignment_and_undecodable_metadata_is_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tp = TopicPartition("t", 0)
    metrics = Metrics()
    redo = _redo(metrics)
    await redo.read_metadata(_Consumer({tp}, encode(10, {12, 13}) or ""), [tp])
    assert redo.from_metadata == {tp: (10, {12, 13})}
    redo.from_metadata.clear()
    with caplog.at_level(logging.WARNING, logger="loom"):
        for text in ("written-by-another-tool", "loom:AgA", "loom:!!"):
            await redo.read_metadata(_Consumer({tp}, text), [tp])
    assert redo.from_metadata == {}  # never a skip on its account
    assert metric_total(metrics.metadata_undecodable) == 3
    assert sum("cannot read" in r.getMessage() for r in caplog.records) == 1  # logged once
    # Metadata naming another committed offset than the one committed is not used either.
    await redo.read_metadata(_Consumer({tp}, encode(7, {8}) or ""), [tp])
    assert redo.from_metadata == {}


def test_finished_offsets_that_cannot_fit_fall_back_to_the_plain_commit() -> None:
    tp = TopicPartition("t", 0)
    metrics = Metrics()
    redo = _redo(metrics)
    rng = random.Random(4)
    wide = {o for o in range(1, 200_000) if rng.random() < 0.5}  # compresses to ~25 KB
    sent = redo.commit_offsets({tp: 0}, lambda _tp, _o: wide)
    assert sent == {tp: OffsetAndMetadata(0, "")}
    assert metric_total(metrics.metadata_fallbacks) == 1
    assert redo.commit_offsets({tp: 0}, lambda _tp, _o: {5})[tp].metadata.startswith("loom:")
    redo.metadata_kept = False  # once the broker is known to drop it, none is encoded
    assert redo.commit_offsets({tp: 0}, lambda _tp, _o: {5}) == {tp: OffsetAndMetadata(0, "")}


# --- against the broker -----------------------------------------------------------------------


async def _detect(bootstrap: str, topic: str) -> bool:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=f"g-{uuid.uuid4().hex[:8]}",
                                enable_auto_commit=False)
    async with started(consumer):
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        sent = {tp: OffsetAndMetadata(0, encode(0, {2, 3}) or "")}
        await consumer.commit(sent)
        return await broker_keeps_metadata(consumer, sent)


async def test_the_detection_commits_fetches_and_compares(
    loom_kafka_bootstrap: str, new_topic: Callable[..., Awaitable[str]]
) -> None:
    kept = await _detect(loom_kafka_bootstrap, await new_topic())
    # Measured: the embedded broker (Tansu) accepts metadata and answers it empty; Apache
    # Kafka keeps it.
    assert kept is REAL_KAFKA


async def test_letters_since_finds_its_groups_letters_for_the_partitions_asked(
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
) -> None:
    dlq = await new_topic(partitions=2)
    producer = await make_producer()
    now = int(time.time() * 1000)

    async def letter(group: str, partition: int, offset: int, *, at: int | None = None) -> None:
        record = Record("orders", partition, offset, None, b"x", ())
        headers = [*dl.deadletter_headers(record, DecodeError("bad"), None),
                   (dl.GROUP, group.encode())]
        await producer.send_and_wait(dlq, b"x", headers=headers, timestamp_ms=at,
                                     partition=offset % 2)

    await letter("g", 0, 5, at=now - 3_600_000)  # an hour before: outside the window
    await letter("g", 0, 7)
    await letter("g", 0, 8)
    await letter("g", 1, 9)  # a partition not asked about
    await letter("replay", 0, 11)  # another group's
    consumer = AIOKafkaConsumer(bootstrap_servers=loom_kafka_bootstrap, group_id=None)
    async with started(consumer):
        found = await letters_since(consumer, dlq, now - 600_000, group="g",
                                    origins={("orders", 0)}, max_records=100)
    # Apache Kafka answers the first offset whose own timestamp is in the window and leaves the
    # letter stamped an hour before out; the embedded broker answered the offset of that letter
    # (appended first, just before the others): the window bounds the read, never shortens it.
    assert {7, 8} <= set(found[("orders", 0)]) <= {5, 7, 8}
    assert set(found) == {("orders", 0)}


@pytest.mark.timeout(120)
async def test_a_new_owner_skips_what_the_commit_metadata_names(
    temporal_client: Client,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    task_queue: str,
) -> None:
    topic, dlq = await new_topic(), await new_topic()
    if not await _detect(loom_kafka_bootstrap, topic):
        pytest.skip("the broker drops commit metadata (detected: committed, fetched back "
                    "empty); on it the dead-letter topic alone prevents repeated dead letters "
                    "(tests/faults/test_redo.py)")
    events = step_events(uuid.uuid4().hex[:6], entities=1, per_entity=10)
    await publish(await make_producer(), topic, events)
    group = f"g-{uuid.uuid4().hex[:8]}"
    first = AIOKafkaConsumer(bootstrap_servers=loom_kafka_bootstrap, group_id=group,
                             enable_auto_commit=False)
    async with started(first):  # a "crashed owner": 0..1 committed, 4, 5, 6 finished
        tp = TopicPartition(topic, 0)
        first.assign([tp])
        await first.commit({tp: OffsetAndMetadata(2, encode(2, {4, 5, 6}) or "")})
    settings = loom_settings(loom_kafka_bootstrap, [topic], dlq, group_id=group, kafka=FAST_GROUP)
    loom = Loom(recorder_router(task_queue), temporal_client, settings)
    expected = expected_by_workflow(events)
    wanted = {w: [e for i, e in enumerate(ids) if i in (2, 3, 7, 8, 9)]
              for w, ids in expected.items()}
    async def seen() -> dict[str, list[str]]:
        return await query_all(temporal_client, wanted)

    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[RecorderWorkflow]), \
            running(loom):
        await eventually(seen, until=lambda got: got == wanted, timeout=60)
        assert metric_total(loom.metrics.redo_skipped) == 3


@pytest.mark.timeout(120)
async def test_a_record_dead_lettered_before_a_crash_is_skipped_and_the_redo_is_logged(
    temporal_client: Client,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    task_queue: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A "crashed owner" of the group dead-lettered offset 2 (acknowledged) and committed
    # nothing: the next owner skips it, redoes 0, 1 and 3, and takes 4: the letter naming
    # offset 4 names another record (another timestamp: a topic of the same name before).
    topic, dlq = await new_topic(), await new_topic()
    group = f"g-{uuid.uuid4().hex[:8]}"
    events = step_events(uuid.uuid4().hex[:6], entities=1, per_entity=5)
    poison = dataclasses.replace(events[2], data={"entity": "x"})  # fails the Step model
    producer = await make_producer()
    await publish(producer, topic, [*events[:2], poison, *events[3:]])
    writer = dl.DeadLetterWriter(producer, dlq, group=group)
    await writer.write(Record(topic, 0, 2, None, b"x", ()), DecodeError("bad"), "step")
    await writer.write(Record(topic, 0, 4, None, b"x", (), timestamp=1), DecodeError("old"), "step")
    settings = loom_settings(loom_kafka_bootstrap, [topic], dlq, group_id=group, kafka=FAST_GROUP)
    loom = Loom(recorder_router(task_queue), temporal_client, settings)
    good = [e for i, e in enumerate(events) if i != 2]
    expected = expected_by_workflow(good)

    async def seen() -> dict[str, list[str]]:
        return await query_all(temporal_client, expected)

    with caplog.at_level(logging.INFO, logger="loom"):
        async with loom_worker(temporal_client, task_queue=task_queue, workflows=[RecorderWorkflow]), \
                running(loom):
            await eventually(seen, until=lambda got: got == expected, timeout=60)
    assert metric_total(loom.metrics.redo_skipped) == 1
    assert metric_total(loom.metrics.redo_records) == 3
    assert metric_total(loom.metrics.deadlettered) == 0  # not dead-lettered a second time
    assert f"{topic}[0]: redoing 3 records from offset 0 (2 already finished)" in caplog.text
