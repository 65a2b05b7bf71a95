"""``loom replay``: a past time window routed again, on the real broker and Temporal server.

Records carry their own (CreateTime) timestamps hours in the past, all appended now: the
embedded broker answers ``offsets_for_times`` by append time, so only the per-record filter
makes the window exact there, which is what these tests pin.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import textwrap
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from flows.replaying import RECORDER, InboxRecorder
from kit import committed_offsets, eventually, loom_settings
from rawkafka import RawRecord, batch, produce_batch
from temporalio.client import Client
from typer.testing import CliRunner

from bridge.actions import SignalWithStart
from bridge.cli._times import TimeFormatError, format_ms, parse_duration, parse_time
from bridge.cli.app import app
from bridge.events import Event
from bridge.kafka.binding import encode
from bridge.kafka.clients import started
from bridge.routing import Match, Route, Router
from bridge.sidecar.replay import Replay
from bridge.sidecar.window import Span, Window, WindowReader, plan_spans
from bridge.testing import TemporalServer, loom_worker, read_records

HOUR = 3_600_000


ROUTES = '''
from pydantic import BaseModel
from bridge.actions import SignalWithStart
from bridge.routing import Match, Route, Router

class Step(BaseModel):
    entity: str
    seq: int

router = Router([
    Route("step", match=Match(type="test.step"), data=Step,
          action=SignalWithStart(workflow="{recorder}", task_queue="{task_queue}",
                                 workflow_id="{prefix}-step-{{data.entity}}")),
    Route("audit", match=Match(type="test.step"), data=Step,
          action=SignalWithStart(workflow="{recorder}", task_queue="{task_queue}",
                                 workflow_id="{prefix}-audit-{{data.entity}}")),
])
'''


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A clean working directory on sys.path, without any LOOM_* from the outside."""
    for name in list(os.environ):
        if name.startswith(("LOOM_", "TEMPORAL_", "OTEL_")) and not name.startswith("LOOM_TEST"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(tmp_path / "no-temporal.toml"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == "loom":
            root.removeHandler(handler)


def routes_module(directory: Path, task_queue: str, prefix: str) -> str:
    name = f"replayroutes_{uuid.uuid4().hex[:10]}"
    source = ROUTES.format(recorder=RECORDER, task_queue=task_queue, prefix=prefix)
    (directory / f"{name}.py").write_text(textwrap.dedent(source))
    return name


async def loom(*args: str, env: dict[str, str]) -> tuple[int, str]:
    """Run ``loom ARGS`` in process, in a thread (the command runs its own event loop)."""

    def run() -> tuple[int, str]:
        result = CliRunner().invoke(app, list(args), env=env)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.output

    return await asyncio.to_thread(run)


def step(entity: str, seq: int, **data: Any) -> Event:
    return Event(
        id=f"{entity}-{seq}", source="test://replay", type="test.step",
        data={"entity": entity, "seq": seq, **data}, extensions={"partitionkey": entity},
    )


def spread_entities(prefix: str, count: int, *, partitions: int) -> list[str]:
    """``count`` entity names whose keys the producer's partitioner puts on every one of two
    partitions (random names put all four on one partition one time in eight, and the
    window's end then stops one partition, not two)."""
    every = list(range(partitions))

    def partition_of(name: str) -> int:
        return int(DefaultPartitioner()(name.encode(), every, every))

    names = [f"{prefix}-{n}" for n in range(count)]
    n = count
    while {partition_of(name) for name in names} != set(every):
        names[-1] = f"{prefix}-{n}"  # the others stand: try another last name
        n += 1
    return names


async def publish_at(producer: Any, topic: str, events: list[Event], timestamp_ms: int) -> None:
    """Send ``events`` with their own (CreateTime) timestamp; wait for every ack."""
    futures = []
    for event in events:
        key, value, headers = encode(event)
        futures.append(await producer.send(
            topic, value=value, key=key, headers=headers, timestamp_ms=timestamp_ms
        ))
    await asyncio.gather(*futures)


async def seen_by(client: Client, workflow_id: str) -> tuple[list[str], int, int, int] | None:
    try:
        delivered, signals, repeats, runs = await client.get_workflow_handle(workflow_id).query(
            InboxRecorder.seen
        )
    except Exception:
        return None  # never started
    return list(delivered), signals, repeats, runs


def counts(output: str) -> str:
    """The summary line of a replay."""
    return next(line for line in output.splitlines() if line.startswith(("done:", "interrupted")))


# --- time arguments ---------------------------------------------------------------------------


def test_times_are_iso_8601_relative_or_now() -> None:
    now = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    ms = int(now.timestamp() * 1000)
    assert parse_time("now", now) == ms
    assert parse_time("-2h", now) == ms - 2 * HOUR
    assert parse_time("-1d12h", now) == ms - 36 * HOUR
    assert parse_time("-90s", now) == ms - 90_000
    assert parse_time("-1.5h", now) == ms - HOUR * 3 // 2
    assert parse_time("2025-06-01T10:00:00Z", now) == ms - 2 * HOUR
    assert parse_time("2025-06-01T12:00+02:00", now) == ms - 2 * HOUR
    local = datetime(2025, 6, 1, 10, 0).astimezone()  # no offset: the machine's local time
    assert parse_time("2025-06-01 10:00", now) == int(local.timestamp() * 1000)
    assert format_ms(ms) == "2025-06-01T12:00:00Z"
    assert [parse_duration(d) for d in ("0", "90s", "5m", "1h30m", "1.5s")] == [
        0, 90_000, 300_000, 5_400_000, 1_500]
    for bad in ("-5m", "5", "5x", ""):
        with pytest.raises(TimeFormatError):
            parse_duration(bad)
    for bad in ("yesterday", "2h", "-2x", "2025-13-01", ""):
        with pytest.raises(TimeFormatError):
            parse_time(bad, now)


# --- the window against the embedded broker's answers --------------------------------------------


@pytest.mark.kafka
async def test_the_window_is_exact_whatever_the_broker_answers(
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
) -> None:
    topic = await new_topic(partitions=2)
    producer = await make_producer()
    now = int(time.time() * 1000)
    # Out of timestamp order in each partition, all appended now.
    for hours_ago, seq in ((3, 0), (1, 1), (2, 2), (5, 3), (2, 4)):
        await publish_at(producer, topic, [step("a", seq), step("b", seq)], now - hours_ago * HOUR)

    async def window_of(window: Window, lateness_ms: int) -> tuple[list[str], int, int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=loom_kafka_bootstrap, group_id=None)
        async with started(consumer):
            spans = await plan_spans(consumer, [topic], window)
            reader = WindowReader(consumer, spans, window, lateness_ms=lateness_ms)
            reader.open()
            ids: list[str] = []
            while not reader.done:
                ids += [dict(r.headers)["ce_id"].decode() for _, r in await reader.fetch(100)]
            return sorted(ids), reader.read, reader.outside, reader.ended_early

    window = Window(now - 2 * HOUR - 60_000, now - HOUR - 60_000)
    # Lateness enough for the disorder: every record read, each kept by its own timestamp.
    assert await window_of(window, 3 * HOUR) == (["a-2", "a-4", "b-2", "b-4"], 10, 6, 0)
    # None: a partition stops at its first record past the window's end (seq 1, an hour ago),
    # before the later records of the window (seq 2 and 4, two hours ago).
    ids, read, outside, ended = await window_of(window, 0)
    assert (ids, read, outside) == ([], 2, 2) and ended >= 1  # "a" and "b" may share one
    # After the last record: this broker answers offset 0 (timestamp -1), Kafka None; either
    # way there is nothing to read (not the whole partition from offset 0).
    consumer = AIOKafkaConsumer(bootstrap_servers=loom_kafka_bootstrap, group_id=None)
    async with started(consumer):
        tps = [TopicPartition(topic, p) for p in (0, 1)]
        raw = await consumer.offsets_for_times(dict.fromkeys(tps, now + HOUR))
        spans = await plan_spans(consumer, [topic], Window(now + HOUR))
    assert all(s.start == s.stop for s in spans) and sum(s.stop for s in spans) == 10
    assert all(a is None or a.timestamp == -1 for a in raw.values())  # what the guard is for

    # One batch of 4 records: this broker's end offset is the batch's base + 1 (Kafka: 4).
    single = await new_topic()
    tp = TopicPartition(single, 0)
    records: list[RawRecord] = [(None, encode(step("c", n))[1], []) for n in range(4)]
    await produce_batch(loom_kafka_bootstrap, single, 0, batch(records))
    consumer = AIOKafkaConsumer(bootstrap_servers=loom_kafka_bootstrap, group_id=None)
    async with started(consumer):
        end = (await consumer.end_offsets([tp]))[tp]
        spans = await plan_spans(consumer, [single], Window(0))
        reader = WindowReader(consumer, spans, Window(0))
        reader.open()
        taken = []
        while not reader.done:
            taken += [r.offset for _, r in await reader.fetch(100)]
    assert end in (1, 4)
    assert spans == [Span(tp, 0, 4)] and taken == [0, 1, 2, 3]


# --- loom replay end to end ----------------------------------------------------------------------


@pytest.mark.kafka
@pytest.mark.temporal
async def test_replay_routes_a_past_window_again_and_no_repeat_reaches_a_workflow(
    project: Path,
    temporal_client: Client,
    loom_temporal: TemporalServer,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    task_queue: str,
) -> None:
    topic, dlq = await new_topic(partitions=2), await new_topic()
    prefix = f"rp{uuid.uuid4().hex[:6]}"
    entities = spread_entities(prefix, 4, partitions=2)
    producer = await make_producer()
    now = int(time.time() * 1000)
    before = [step(e, 0) for e in entities]
    window = [step(e, seq) for seq in (1, 2, 3) for e in entities]
    bad = Event(id="bad-1", source="test://replay", type="test.step", data={"entity": "x"})
    other = Event(id="other-1", source="test://replay", type="test.other", data={})
    after = [step(e, 4) for e in entities]
    await publish_at(producer, topic, before, now - 3 * HOUR)
    await publish_at(producer, topic, [*window, bad, other], now - 2 * HOUR)
    await publish_at(producer, topic, after, now - HOUR)
    env = {
        "LOOM_ROUTES": routes_module(project, task_queue, prefix),
        "LOOM_KAFKA__BOOTSTRAP": loom_kafka_bootstrap,
        "LOOM_KAFKA__DEADLETTER_TOPIC": dlq,
        "LOOM_TEMPORAL__ADDRESS": loom_temporal.address,
        "LOOM_TEMPORAL__NAMESPACE": loom_temporal.namespace,
        "LOOM_DISPATCH__RETRY_MAX_S": "0.5",
        "COLUMNS": "200",
    }
    span = ("--topic", topic, "--from", "-150m", "--to", "-90m")
    expected = {f"{prefix}-step-{e}": [f"{e}-{seq}" for seq in (1, 2, 3)] for e in entities}
    audit = {f"{prefix}-audit-{e}": ids for e, ids in zip(entities, expected.values(), strict=True)}
    n = len(window)

    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[InboxRecorder]):
        # 1. A route that missed the window (added since): only its workflows get the events.
        group = f"{prefix}-replay"
        code, output = await loom("replay", *span, "--route", "step", "--group", group, env=env)
        assert code == 0, output
        assert "offsets" in output  # the progress bar
        # Each partition stopped at its first record of an hour ago (--lateness 1m by default).
        assert "18 offsets read, 4 records outside the window, 2 partition(s) stopped" in output, (
            output
        )
        assert counts(output).startswith(
            f"done: routed {n}, duplicates 0, unmatched 1, dead-lettered 1;")
        # Its progress is committed in its own group, up to its last record in the window;
        # the sidecar's group is never touched.
        records = await read_records(loom_kafka_bootstrap, topic, count=22, timeout=10)
        last: dict[int, int] = {}
        for r in records:
            if now - 150 * 60_000 <= (r.timestamp or 0) < now - 90 * 60_000:
                last[r.partition] = max(last.get(r.partition, -1), r.offset)
        assert await committed_offsets(loom_kafka_bootstrap, group, topic, 2) == {
            p: last[p] + 1 for p in (0, 1)}
        assert await committed_offsets(loom_kafka_bootstrap, "temporal-loom", topic, 2) == {
            0: None, 1: None}
        code, output = await loom("replay", *span, "--group", "temporal-loom", env=env)
        assert code == 2 and "is the sidecar's consumer group" in output
        for wid, ids in expected.items():
            assert await seen_by(temporal_client, wid) == (ids, 3, 0, 0), wid
        assert [await seen_by(temporal_client, w) for w in audit] == [None] * len(audit)

        # 2. Every route: the step workflows had the events, asked once each, none is sent.
        code, output = await loom("replay", *span, env=env)
        assert code == 0, output
        assert counts(output).startswith(
            f"done: routed {n}, duplicates {n}, unmatched 1, dead-lettered 2;")
        for wid, ids in {**expected, **audit}.items():
            assert await seen_by(temporal_client, wid) == (ids, 3, 0, 0), wid

        # 3. Without asking, after the workflows continued as new (the server no longer
        # knows the calls' request ids): every signal reaches its run, and the inbox drops it.
        for wid in {**expected, **audit}:
            await temporal_client.get_workflow_handle(wid).signal(InboxRecorder.roll)
        for wid, ids in {**expected, **audit}.items():
            rolled = await eventually(
                functools.partial(seen_by, temporal_client, wid), until=lambda v: v and v[3] == 1,
                timeout=10, what=f"{wid} continued as new",
            )
            assert rolled == (ids, 0, 0, 1), wid
        code, output = await loom("replay", *span, "--no-seen-check", env=env)
        assert code == 0, output
        assert counts(output).startswith(
            f"done: routed {2 * n}, duplicates 0, unmatched 1, dead-lettered 2;")
        for wid, ids in {**expected, **audit}.items():
            assert await seen_by(temporal_client, wid) == (ids, 3, 3, 1), wid

    # Dead letters as the sidecar writes them: the bad record once per replay, the unmatched
    # one by the replays through every route.
    letters = await read_records(loom_kafka_bootstrap, dlq, count=5, timeout=10)
    reasons = sorted(dict(r.headers)["loom-dlq-reason"].decode() for r in letters)
    assert reasons == ["data-validation"] * 3 + ["unmatched"] * 2


@pytest.mark.kafka
async def test_dry_run_prints_per_route_and_calls_nothing(
    project: Path,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
) -> None:
    topic, dlq = await new_topic(), await new_topic()
    producer = await make_producer()
    now = int(time.time() * 1000)
    await publish_at(producer, topic, [step("e1", 0), step("e2", 0), step("e1", 1)], now - 600_000)
    await publish_at(producer, topic, [Event(id="o", source="s", type="test.other", data={})], now - 600_000)
    await publish_at(producer, topic, [step("e3", 0)], now - 2 * HOUR)  # before the window
    env = {
        "LOOM_ROUTES": routes_module(project, "tq", "dry"),
        "LOOM_KAFKA__BOOTSTRAP": loom_kafka_bootstrap,
        "LOOM_KAFKA__DEADLETTER_TOPIC": dlq,
        "LOOM_TEMPORAL__ADDRESS": "127.0.0.1:1",  # nothing answers: nothing may be called
        "COLUMNS": "200",
    }
    code, output = await loom("replay", "--topic", topic, "--from", "-1h", "--dry-run", env=env)
    assert code == 0, output
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in output.splitlines() if line.count("│") >= 5}
    assert rows["step"][:3] == ["signal-with-start", "3", "2"]
    assert rows["audit"][:3] == ["signal-with-start", "3", "2"]
    assert "dry-step-e1" in rows["step"][3]
    assert "unmatched 1 (policy dead-letter)" in output
    assert "1 records outside the window" in output

    code, output = await loom("replay", "--topic", topic, "--from", "-1h", "--dry-run",
                              "--route", "nope", env=env)
    assert code == 2 and "no route is named 'nope' (routes: step, audit)" in output
    code, output = await loom("replay", "--topic", topic, "--from", "later", env=env)
    assert code == 2 and "'later' is not a time" in output
    code, output = await loom("replay", "--topic", topic, "--from", "-1h", "--to", "-2h", env=env)
    assert code == 2 and "must be after --from" in output


def test_window_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="after its start"):
        Window(10, 10)
    window = Window(10, 20)
    assert [window.contains(t) for t in (None, -1, 9, 10, 19, 20)] == [
        False, False, False, True, True, False]
    assert Window(0).contains(int(timedelta(days=9_000).total_seconds() * 1000))


@pytest.mark.kafka
async def test_a_record_aiokafka_cannot_parse_does_not_stop_the_window(
    project: Path,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
) -> None:
    topic = await new_topic()
    await publish_at(await make_producer(), topic, [step("u", 0)], int(time.time() * 1000))
    raw = []
    for seq in (1, 2, 3):  # one batch: the second record's header name is not UTF-8
        key, value, headers = encode(step("u", seq))
        names = [(n.encode(), v) for n, v in headers] + [(b"\xff\xfe", b"x")] * (seq == 2)
        raw.append((key, value, names))
    await produce_batch(loom_kafka_bootstrap, topic, 0, batch(raw))
    env = {
        "LOOM_ROUTES": routes_module(project, "tq", "raw"),
        "LOOM_KAFKA__BOOTSTRAP": loom_kafka_bootstrap,
        "LOOM_TEMPORAL__ADDRESS": "127.0.0.1:1",
        "COLUMNS": "200",
    }
    code, output = await loom("replay", "--topic", topic, "--from", "-1h", "--dry-run", env=env)
    assert code == 0, output
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in output.splitlines() if line.count("│") >= 5}
    assert rows["step"][:3] == ["signal-with-start", "3", "1"]  # u-0, u-1 and u-3
    assert "bad input 1 unreadable (would be dead-lettered); 4 offsets read" in output


# --- loom dlq redrive --since / --until ----------------------------------------------------------


@pytest.mark.kafka
async def test_dlq_redrive_and_list_select_by_the_time_records_were_dead_lettered(
    project: Path,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
) -> None:
    topic, dlq = await new_topic(), await new_topic()
    producer = await make_producer()
    now = int(time.time() * 1000)
    for n, failed_ago in enumerate((3 * HOUR, 2 * HOUR, HOUR // 2)):
        key, value, headers = encode(step("d", n))
        dlq_headers = [("loom-dlq-reason", b"unmatched"), ("loom-dlq-topic", topic.encode()),
                       ("loom-dlq-failed-at", str(now - failed_ago).encode())]
        await producer.send_and_wait(dlq, value=value, key=key, headers=[*headers, *dlq_headers])
    env = {"LOOM_KAFKA__BOOTSTRAP": loom_kafka_bootstrap, "LOOM_KAFKA__DEADLETTER_TOPIC": dlq}

    code, output = await loom("dlq", "list", "--json", "--since", "-1h", env=env)
    assert code == 0, output
    assert [line[:22] for line in output.splitlines() if line.startswith("{")] == [
        '{"dlq_offset": "0:2", ']
    code, output = await loom("dlq", "redrive", "--since", "-150m", "--until", "-1h", env=env)
    assert code == 0, output
    assert f"re-drove 0:1 (unmatched) to {topic}" in output and "1 record(s) re-driven" in output
    (record,) = await read_records(loom_kafka_bootstrap, topic, count=1, timeout=5)
    assert dict(record.headers)["ce_id"] == b"d-1"
    assert not [name for name, _ in record.headers if name.startswith("loom-dlq-")]
    # The same wait sees one record more when one more is re-driven: only d-1 went.
    code, output = await loom("dlq", "redrive", "--until", "-150m", env=env)
    assert code == 0 and "re-drove 0:0 (unmatched)" in output, output
    ids = [dict(r.headers)["ce_id"] for r in
           await read_records(loom_kafka_bootstrap, topic, count=3, timeout=2)]
    assert ids == [b"d-1", b"d-0"]

    code, output = await loom("dlq", "redrive", "--since", "yesterday", env=env)
    assert code == 2 and "'yesterday' is not a time" in output
    code, output = await loom("dlq", "redrive", "--since", "-1h", "--until", "-2h", env=env)
    assert code == 2 and "must be after --since" in output


# --- a replay stopped before the window's end ------------------------------------------------------


@pytest.mark.kafka
@pytest.mark.temporal
async def test_a_stopped_replay_ends_within_its_drain_timeout_and_commits_nothing_unfinished(
    temporal_client: Client,
    loom_temporal: TemporalServer,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    task_queue: str,
) -> None:
    topic, dlq = await new_topic(), await new_topic()
    prefix = f"stop{uuid.uuid4().hex[:6]}"
    now = int(time.time() * 1000)
    events = [step(str(n), 0) for n in range(3)]
    await publish_at(await make_producer(), topic, events, now - HOUR)
    # The workflows run, and no worker polls their task queue: the replay's question (what did
    # you see?) waits for one, so every call is still in flight when the replay is stopped.
    for n in range(3):
        await temporal_client.start_workflow(RECORDER, id=f"{prefix}-w{n}", task_queue=task_queue)
    router = Router([Route("step", match=Match(type="test.step"), action=SignalWithStart(
        workflow=RECORDER, task_queue=task_queue, workflow_id=prefix + "-w{data.entity}"))])
    settings = loom_settings(
        loom_kafka_bootstrap, [topic], dlq,
        temporal={"address": loom_temporal.address, "namespace": loom_temporal.namespace,
                  "closed_query_timeout_s": 60},
        dispatch={"drain_timeout_s": 1},
    )
    group = f"{prefix}-replay"
    job = Replay(router, temporal_client, settings, topics=[topic], window=Window(now - 2 * HOUR),
                 group=group)
    await job.start()
    task = asyncio.create_task(job.run())
    await eventually(lambda: job.dispatcher.running, until=lambda n: n == 3, timeout=10,
                     what="calls in flight")
    stopped = time.monotonic()
    job.stop()
    await asyncio.wait_for(task, 10)
    assert time.monotonic() - stopped < 5  # the drain timeout, not the question's
    summary = job.summary()
    assert (summary.complete, summary.read, summary.routed) == (False, 3, 0)
    assert await committed_offsets(loom_kafka_bootstrap, group, topic, 1) == {0: None}
