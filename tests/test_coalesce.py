"""Coalescing: the events queued behind one workflow id ride in one Temporal call.

The dispatcher's rule (which items share a call, its bounds, the split of a call refused for
good), which routes coalesce (safe by construction), the inbox's side (a batch fed event by
event, deduplicated per event), and end to end on the real servers: batches form, a route
whose workflow has no batch handler never gets one, a redelivered batch cut differently keeps
exactly-once, a refused batch is split so that only the events that fail alone are
dead-lettered, and a hot workflow id is not limited to one event per round trip.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
import recorder
from flows.coalesce_flows import OverriddenWorkflow
from kit import check_loop, eventually
from prometheus_client import Histogram
from pydantic import BaseModel
from recorder import (
    INBOX_RECORDER,
    InboxRecorderWorkflow,
    RecorderWorkflow,
    publish,
    query_all,
    wait_delivered,
)
from temporalio.client import Client

from bridge._ids import batch_request_id, request_id
from bridge.actions import Signal, SignalWithStart, StartWorkflow, UpdateWithStart
from bridge.events import EVENTS_SIGNAL, Event
from bridge.exceptions import (
    BatchRefusedError,
    DataValidationError,
    PermanentTemporalError,
    RouteDefinitionError,
    SignalLimitError,
    TransientTemporalError,
)
from bridge.routing import Match, Route, Router
from bridge.settings import LoomSettings
from bridge.sidecar.coalesce import coalesced_invocation
from bridge.sidecar.dispatch import Coalescing, Dispatcher, RetryPolicy
from bridge.sidecar.loop import Loom, running
from bridge.sidecar.metrics import metric_total
from bridge.temporal.calls import TemporalExecutor
from bridge.testing import loom_worker, read_records
from bridge.workflow import Inbox
from bridge.workflow.loom import takes_batches

FAST = RetryPolicy(initial=0.001, maximum=0.005, jitter=False)
Item = tuple[str, int]


# --- the dispatcher's rule -------------------------------------------------------------------


@dataclasses.dataclass
class Calls:
    """What a coalescing dispatcher did: its calls (items per call) and callbacks."""

    calls: list[list[int]] = dataclasses.field(default_factory=list)
    done: list[int] = dataclasses.field(default_factory=list)
    failed: list[tuple[int, BaseException]] = dataclasses.field(default_factory=list)
    splits: list[tuple[list[int], BaseException]] = dataclasses.field(default_factory=list)
    retries: int = 0


def coalescing_dispatcher(
    calls: Calls,
    call: Callable[[list[Item]], Awaitable[None]],
    *,
    joins: Callable[[Item, Item], bool] = lambda head, item: True,
    size: Callable[[Item], int] = lambda item: 1,
    max_items: int = 100,
    max_bytes: int = 1_000_000,
    **kwargs: Any,
) -> Dispatcher[str, Item, str]:
    async def one(key: str, item: Item) -> str:
        calls.calls.append([item[1]])
        await call([item])
        return "ok"

    async def many(key: str, items: list[Item]) -> str:
        calls.calls.append([n for _, n in items])
        await call(items)
        return "ok"

    def retried(item: Item, attempt: int, exc: BaseException, delay: float) -> None:
        calls.retries += 1

    return Dispatcher(
        one,
        max_in_flight=kwargs.pop("max_in_flight", 10),
        on_done=lambda item, result: calls.done.append(item[1]),
        on_failed=lambda item, exc: calls.failed.append((item[1], exc)),
        retry=kwargs.pop("retry", FAST),
        on_retry=retried,
        coalescing=Coalescing(
            handler=many, joins=joins, size=size, max_items=max_items, max_bytes=max_bytes,
            on_split=lambda items, exc: calls.splits.append(([n for _, n in items], exc)),
        ),
        **kwargs,
    )


async def gated(gate: asyncio.Event, items: list[Item]) -> None:
    await gate.wait()


async def submit_behind_a_running_call(d: Dispatcher[str, Item, str], count: int) -> None:
    """Submit ``count`` items of key "a": the first runs alone and waits for the gate, the
    others queue behind it meanwhile."""
    for n in range(count):
        await d.submit("a", ("a", n))
        await asyncio.sleep(0)


async def test_items_queued_behind_their_key_ride_in_one_call_in_order() -> None:
    calls, gate = Calls(), asyncio.Event()
    d = coalescing_dispatcher(calls, lambda items: gated(gate, items))
    await submit_behind_a_running_call(d, 10)
    assert calls.calls == [[0]]  # its turn came when it was alone
    assert d.running == 1
    gate.set()
    assert await d.drain(timeout=5)
    assert calls.calls == [[0], list(range(1, 10))]
    assert calls.done == list(range(10))
    assert d.in_flight == 0


async def test_a_call_takes_at_most_max_items_and_max_bytes() -> None:
    calls, gate = Calls(), asyncio.Event()
    d = coalescing_dispatcher(calls, lambda items: gated(gate, items), max_items=4)
    await submit_behind_a_running_call(d, 10)
    gate.set()
    assert await d.drain(timeout=5)
    assert calls.calls == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9]]

    calls, gate = Calls(), asyncio.Event()
    # Item n weighs n + 1 bytes, 10 bytes a call at most: 2 + 3 + 4, then 5 (+ 6 is 11)...;
    # item 9 (10 bytes) fits alone.
    d = coalescing_dispatcher(
        calls, lambda items: gated(gate, items), size=lambda item: item[1] + 1, max_bytes=10
    )
    await submit_behind_a_running_call(d, 10)
    gate.set()
    assert await d.drain(timeout=5)
    assert calls.calls == [[0], [1, 2, 3], [4], [5], [6], [7], [8], [9]]
    assert calls.done == list(range(10))


async def test_an_item_that_cannot_join_ends_the_call_and_keeps_its_place() -> None:
    calls, gate = Calls(), asyncio.Event()
    # Items 4 and 5 never share a call (another action, another signal...).
    d = coalescing_dispatcher(
        calls, lambda items: gated(gate, items),
        joins=lambda head, item: head[1] not in (4, 5) and item[1] not in (4, 5),
    )
    await submit_behind_a_running_call(d, 9)
    gate.set()
    assert await d.drain(timeout=5)
    assert calls.calls == [[0], [1, 2, 3], [4], [5], [6, 7, 8]]
    assert calls.done == list(range(9))


async def test_a_call_refused_for_good_is_split_and_only_the_items_bad_alone_fail() -> None:
    calls, gate = Calls(), asyncio.Event()
    bad = {3, 6}

    async def call(items: list[Item]) -> None:
        await gate.wait()
        if len(items) > 1 and any(n in bad for _, n in items):
            raise PermanentTemporalError("the call as a whole was refused")
        if items[0][1] in bad:
            raise DataValidationError(f"item {items[0][1]} is bad on its own")

    d = coalescing_dispatcher(calls, call)
    await submit_behind_a_running_call(d, 9)
    gate.set()
    assert await d.drain(timeout=5)
    assert calls.calls == [[0], list(range(1, 9)), *([n] for n in range(1, 9))]
    assert [s[0] for s in calls.splits] == [list(range(1, 9))]
    assert isinstance(calls.splits[0][1], PermanentTemporalError)
    # Only the items that fail alone fail, each with its own error; the rest are done.
    assert [(n, str(exc)) for n, exc in calls.failed] == [
        (3, "item 3 is bad on its own"), (6, "item 6 is bad on its own"),
    ]
    assert calls.done == [0, 1, 2, 4, 5, 7, 8]
    assert calls.retries == 0


async def test_a_retriable_error_retries_the_whole_call_in_order() -> None:
    calls, gate = Calls(), asyncio.Event()
    failures = [TransientTemporalError("unavailable"), TransientTemporalError("deadline")]

    async def call(items: list[Item]) -> None:
        await gate.wait()
        if len(items) > 1 and failures:
            raise failures.pop(0)

    d = coalescing_dispatcher(calls, call)
    await submit_behind_a_running_call(d, 6)
    gate.set()
    assert await d.drain(timeout=5)
    assert calls.calls == [[0], [1, 2, 3, 4, 5], [1, 2, 3, 4, 5], [1, 2, 3, 4, 5]]
    assert calls.retries == 2
    assert not calls.splits
    assert calls.done == list(range(6))


async def test_a_split_call_does_not_wait_a_time_bounded_error_out_again() -> None:
    calls, gate = Calls(), asyncio.Event()

    async def call(items: list[Item]) -> None:
        await gate.wait()
        if items[0][1] > 0:
            err = SignalLimitError("exceeded workflow execution limit for signal events")
            err.retry_for = 0.05
            raise err

    d = coalescing_dispatcher(calls, call)
    await submit_behind_a_running_call(d, 5)
    gate.set()
    assert await d.drain(timeout=5)
    batch_tries = [c for c in calls.calls if len(c) > 1]
    alone = [c for c in calls.calls[1:] if len(c) == 1]
    assert len(batch_tries) > 1  # the call was retried for its 50 ms
    # Then each item was tried once alone: the 50 ms were spent already.
    assert alone == [[1], [2], [3], [4]]
    assert [n for n, _ in calls.failed] == [1, 2, 3, 4]
    assert all(isinstance(exc, SignalLimitError) for _, exc in calls.failed)


async def test_a_bound_in_bytes_lets_queues_form_and_pauses_at_its_size() -> None:
    calls, gate = Calls(), asyncio.Event()
    d = coalescing_dispatcher(
        calls, lambda items: gated(gate, items), max_in_flight=2, max_buffered=1_000_000,
        max_buffered_bytes=100, weight=lambda item: 10,
    )
    for n in range(10):  # 10 items of one key, far over max_in_flight: they queue
        await d.submit("a", ("a", n))
    assert d.full
    assert d.buffered_bytes == 100
    assert d.free_slots == 0
    blocked = asyncio.create_task(d.submit("b", ("b", 0)))
    await asyncio.sleep(0.01)
    assert not blocked.done()  # waits for space, as the consumer pauses
    gate.set()
    await asyncio.wait_for(blocked, 5)
    assert await d.drain(timeout=5)
    assert d.buffered_bytes == 0
    assert sorted(calls.done) == [0, *range(10)]


async def test_a_hot_key_is_not_limited_to_one_item_per_round_trip() -> None:
    calls = Calls()

    async def round_trip(items: list[Item]) -> None:
        await asyncio.sleep(0.005)

    # Room for the queue to form: a bound of 10 items would cut calls to 10 items.
    d = coalescing_dispatcher(calls, round_trip, max_items=500, max_buffered=5_000)
    for n in range(2_000):
        await d.submit("hot", ("hot", n))
    assert await d.drain(timeout=30)
    assert calls.done == list(range(2_000))
    assert len(calls.calls) <= 10  # one call per round trip would be 2,000


# --- which routes coalesce -------------------------------------------------------------------


class Step(BaseModel):
    entity: str
    seq: int
    pad: str = ""


def swss(workflow: Any, **kwargs: Any) -> SignalWithStart:
    return SignalWithStart(workflow=workflow, task_queue="q", workflow_id="wf-{data.entity}",
                           **kwargs)


def test_routes_coalesce_by_default_only_when_safe_by_construction() -> None:
    def note(action: Any, **kwargs: Any) -> str:
        return Route("r", "t", action, data=Step, **kwargs).coalescing

    assert takes_batches(InboxRecorderWorkflow)
    assert not takes_batches(RecorderWorkflow)
    assert not takes_batches(OverriddenWorkflow)
    assert note(swss(InboxRecorderWorkflow)) == "on: LoomWorkflow"
    assert note(swss(InboxRecorderWorkflow, start_args=lambda e, d: (d.entity,))) == (
        "on: LoomWorkflow"  # start arguments are part of what calls must share, not a bar
    )
    assert note(swss(INBOX_RECORDER)).startswith("off: workflow not given as a class")
    assert note(swss(RecorderWorkflow)).startswith("off: not a LoomWorkflow")
    assert note(swss(OverriddenWorkflow)).startswith("off: not a LoomWorkflow")
    assert note(swss(InboxRecorderWorkflow, args=lambda e, d: (d.seq,))).startswith(
        "off: signal or args"
    )
    assert note(Signal(workflow_id="wf-{data.entity}")).startswith("off: signal route")
    assert note(StartWorkflow(workflow=InboxRecorderWorkflow, task_queue="q",
                              workflow_id="{id}")) == "off: start"
    assert note(UpdateWithStart(workflow=InboxRecorderWorkflow, task_queue="q",
                                workflow_id="wf-{data.entity}")) == "off: update-with-start"
    # The route's coalesce overrides.
    assert note(swss(InboxRecorderWorkflow), coalesce=False) == "off: declared"
    assert note(swss(OverriddenWorkflow), coalesce=True) == "on: declared"
    named = note(swss(INBOX_RECORDER), coalesce=True)
    assert named.startswith("on: declared (workflow named by string, not checked")
    assert note(Signal(workflow_id="wf-{data.entity}"), coalesce=True).startswith(
        "on: declared (signal route"
    )
    route = Route("r", "t", swss(InboxRecorderWorkflow), data=Step)
    assert route.coalesce
    assert route.describe()["coalesce"] == "on: LoomWorkflow"
    inv = route.resolve(Event(id="1", source="s", type="t", data={"entity": "e", "seq": 0}))
    assert inv is not None
    assert inv.coalesce


def test_coalesce_true_is_refused_where_a_batch_would_be_lost_or_wrong() -> None:
    with pytest.raises(RouteDefinitionError, match="has no 'loom_events' signal handler"):
        Route("r", "t", swss(RecorderWorkflow), data=Step, coalesce=True)
    with pytest.raises(RouteDefinitionError, match="update-with-start routes never coalesce"):
        Route("r", "t", UpdateWithStart(workflow=InboxRecorderWorkflow, task_queue="q",
                                        workflow_id="x"), coalesce=True)
    with pytest.raises(RouteDefinitionError, match="start routes never coalesce"):
        Route("r", "t", StartWorkflow(workflow=InboxRecorderWorkflow, task_queue="q",
                                      workflow_id="{id}"), coalesce=True)
    with pytest.raises(RouteDefinitionError, match="default signal and args"):
        Route("r", "t", swss(INBOX_RECORDER, args=lambda e, d: (1,)), data=Step, coalesce=True)
    with pytest.raises(RouteDefinitionError, match="default signal and args"):
        Route("r", "t", Signal(workflow_id="x", signal="other"), coalesce=True)
    with pytest.raises(RouteDefinitionError, match="coalesce must be"):
        Route("r", "t", swss(InboxRecorderWorkflow), coalesce="yes")  # type: ignore[arg-type]


def test_a_coalesced_call_is_the_batch_signal_with_a_request_id_from_its_events() -> None:
    route = Route("r", "t", swss(InboxRecorderWorkflow), data=Step)
    invs = [
        route.resolve(Event(id=f"e{n}", source="s", type="t", data={"entity": "e", "seq": n}))
        for n in range(3)
    ]
    assert all(inv is not None for inv in invs)
    batch = coalesced_invocation([inv for inv in invs if inv is not None])
    assert batch.name == EVENTS_SIGNAL
    assert batch.args == ([{"id": f"e{n}", "source": "s", "type": "t", "specversion": "1.0",
                            "data": {"entity": "e", "seq": n}} for n in range(3)],)
    first, last = request_id("r", invs[0].event), request_id("r", invs[2].event)  # type: ignore[union-attr]
    assert batch.request_id == batch_request_id(first, last, 3)
    # The same events cut differently are another call: the inbox's dedup then decides.
    assert batch_request_id(first, last, 2) != batch.request_id
    assert batch_request_id(first, request_id("r", invs[1].event), 2) != batch.request_id  # type: ignore[union-attr]
    assert batch.batch == tuple(invs)
    assert batch.workflow_id == "wf-e"


# --- the inbox's side ----------------------------------------------------------------------


def payloads(ids: Sequence[str]) -> list[dict[str, Any]]:
    return [Event(id=i, source="s", type="t", data={"n": i}).to_payload() for i in ids]


def test_the_inbox_takes_a_batch_event_by_event_deduplicated_in_order() -> None:
    inbox = Inbox()
    assert inbox.handle(payloads(["a"])[0])
    before = inbox.carried_bytes()
    # A repeat of "a", two new ones, "b" twice in the same batch.
    assert inbox.handle_batch(payloads(["a", "b", "c", "b"])) == 2
    assert inbox.signals_this_run == 2  # a coalesced call is one signal for Temporal's cap
    assert inbox.duplicates_this_run == 2
    # Each new event is carried (and measured) like one that came alone.
    one = Inbox()
    one.handle(payloads(["b"])[0])
    one.handle(payloads(["c"])[0])
    assert inbox.carried_bytes() - before == one.carried_bytes() - Inbox().carried_bytes()
    assert [getattr(inbox.take(), "id", None) for _ in range(3)] == ["a", "b", "c"]
    assert inbox.take() is None
    # A redelivered batch cut differently: only what was never seen comes through.
    assert inbox.handle_batch(payloads(["b", "c", "d"])) == 1
    taken = inbox.take()
    assert taken is not None
    assert taken.id == "d"
    assert inbox.has_seen("s", "a")


# --- end to end, on the real servers ---------------------------------------------------------

COALESCED_TYPE = "test.coalesced"
SINGLE_TYPE = "test.single"


def loom_settings(bootstrap: str, topic: str, dlq: str, **dispatch: Any) -> LoomSettings:
    temporal = dispatch.pop("temporal", {})
    return LoomSettings.model_validate({
        "kafka": {
            "bootstrap": bootstrap, "topics": [topic], "deadletter_topic": dlq,
            "group_id": dispatch.pop("group_id", f"g-{uuid.uuid4().hex[:8]}"),
            # The embedded broker forms a group in about half the session timeout.
            "session_timeout_ms": 2000, "heartbeat_interval_ms": 100,
        },
        "temporal": temporal,
        "dispatch": {"commit_interval_s": 0.2, "drain_timeout_s": 10, **dispatch},
        "http_port": 0,
    })


def two_routes(task_queue: str) -> Router:
    """``test.coalesced`` to the inbox recorder (coalesces), ``test.single`` to the raw
    recorder (no batch handler: never coalesces)."""
    return Router([
        Route("coalesced", Match(type=COALESCED_TYPE), data=Step, action=SignalWithStart(
            workflow=InboxRecorderWorkflow, task_queue=task_queue,
            workflow_id="co-{data.entity}",
        )),
        Route("single", Match(type=SINGLE_TYPE), data=Step, action=SignalWithStart(
            workflow=RecorderWorkflow, task_queue=task_queue, workflow_id="one-{data.entity}",
        )),
    ])


def events_of(event_type: str, prefix: str, entities: int, per_entity: int,
              pad: str = "") -> list[Event]:
    events = recorder.step_events(prefix, entities, per_entity, type=event_type,
                                  source="test://coalesce")
    if pad:
        for event in events:
            event.data["pad"] = pad
    return events


def calls_of(histogram: Histogram) -> tuple[float, float, float]:
    """(calls, events, calls that carried more than one event) of ``loom_batch_events``."""
    samples = {s.name: s for family in histogram.collect() for s in family.samples
               if s.name != "loom_batch_events_created" and s.labels.get("le") in (None, "1.0")}
    count = samples["loom_batch_events_count"].value
    ones = next(s.value for family in histogram.collect() for s in family.samples
                if s.name == "loom_batch_events_bucket" and s.labels["le"] == "1.0")
    return count, samples["loom_batch_events_sum"].value, count - ones


async def arrivals(client: Client, workflow_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    return {w: await client.get_workflow_handle(w).query(InboxRecorderWorkflow.arrivals)
            for w in workflow_ids}


def by_workflow(events: Sequence[Event], prefix: str) -> dict[str, list[str]]:
    return recorder.expected_by_workflow(events, prefix)


async def all_committed(loom: Loom, count: int) -> None:
    """Wait until the loom committed ``count`` records (failing at once if its loop died)."""

    def committed() -> float:
        check_loop(loom)
        return metric_total(loom.metrics.committed)

    await eventually(committed, timeout=60, until=lambda n: n >= count, what=f"{count} records committed")


@pytest.mark.kafka
@pytest.mark.temporal
async def test_a_backlog_coalesces_and_a_workflow_without_a_batch_handler_never_gets_one(
    temporal_client: Client,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    task_queue: str,
) -> None:
    topic, dlq = await new_topic(partitions=2), await new_topic()
    prefix = uuid.uuid4().hex[:6]
    # The same backlog shape for both routes: 4 workflows, 30 events each, all in the topic
    # before the loom starts, so that events queue behind their workflow id.
    coalesced = events_of(COALESCED_TYPE, f"{prefix}c", 4, 30)
    single = events_of(SINGLE_TYPE, f"{prefix}s", 4, 30)
    await publish(await make_producer(), topic, [*coalesced, *single])
    expected_co, expected_one = by_workflow(coalesced, "co-"), by_workflow(single, "one-")
    loom = Loom(two_routes(task_queue), temporal_client,
                loom_settings(loom_kafka_bootstrap, topic, dlq, max_in_flight=8))
    async with loom_worker(temporal_client, task_queue=task_queue,
                      workflows=[InboxRecorderWorkflow, RecorderWorkflow]):
        async with running(loom):
            seen = await wait_delivered(temporal_client, {**expected_co, **expected_one}, 90)
        repeats = await arrivals(temporal_client, list(expected_co))
    assert {w: seen[w] for w in expected_co} == expected_co  # each once, in order
    # The raw recorder saw every event as its own signal, exactly once: no batch reached it
    # (a batch signal would have been buffered by Temporal, unseen: its events missing).
    assert {w: seen[w] for w in expected_one} == expected_one
    calls, carried, multi = calls_of(loom.metrics.batch_events)
    assert carried == len(coalesced) + len(single)
    # The same wait saw batches on the coalescing route: the check above could have failed.
    assert multi > 0
    assert calls < len(coalesced) + len(single) - len(coalesced) / 2
    assert all(a["repeats"] == 0 for a in repeats.values())
    assert sum(a["signals"] for a in repeats.values()) < len(coalesced)
    assert metric_total(loom.metrics.deadlettered) == 0
    assert metric_total(loom.metrics.routed, route="single") == len(single)


@pytest.mark.kafka
@pytest.mark.temporal
async def test_a_redelivered_backlog_cut_into_other_batches_stays_exactly_once(
    temporal_client: Client,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    task_queue: str,
) -> None:
    """A second consumer group reads the same records again (a redelivery of everything)
    with other batch bounds: the calls carry other events, so other request ids, and the
    server lets them through; the inbox drops every repeat, event by event."""
    topic, dlq = await new_topic(partitions=1), await new_topic()
    prefix = uuid.uuid4().hex[:6]
    events = events_of(COALESCED_TYPE, prefix, 3, 40)
    await publish(await make_producer(), topic, events)
    expected = by_workflow(events, "co-")
    async with loom_worker(temporal_client, task_queue=task_queue,
                      workflows=[InboxRecorderWorkflow, RecorderWorkflow]):
        counts: list[tuple[float, float]] = []
        for max_events in (7, 11):
            loom = Loom(two_routes(task_queue), temporal_client, loom_settings(
                loom_kafka_bootstrap, topic, dlq, max_in_flight=2, batch_max_events=max_events,
            ))
            async with running(loom):
                await all_committed(loom, len(events))
            _calls, carried, multi = calls_of(loom.metrics.batch_events)
            counts.append((carried, multi))
        seen = await query_all(temporal_client, expected)
        repeats = await arrivals(temporal_client, list(expected))
    assert all(carried == len(events) and multi > 0 for carried, multi in counts)
    assert seen == expected  # each event once, in order, after two deliveries
    # The second delivery reached the workflows (batches cut otherwise: other request ids)
    # and the inbox dropped its repeats. A call that happened to be cut the same both times
    # may have been dropped by the server instead (its request id was the same).
    assert 0 < sum(a["repeats"] for a in repeats.values()) <= len(events)


@pytest.mark.kafka
@pytest.mark.temporal
async def test_a_batch_refused_for_good_is_split_and_only_what_fails_alone_is_dead_lettered(
    temporal_client: Client,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    task_queue: str,
) -> None:
    """Calls over 20 KB are refused (``payload-too-large``, permanent): each batch of small
    events with one big one among them is refused as a whole, then its events go alone."""
    topic, dlq = await new_topic(partitions=1), await new_topic()
    prefix = uuid.uuid4().hex[:6]
    events = events_of(COALESCED_TYPE, prefix, 2, 30, pad="p" * 400)
    big = {events[21].id, events[40].id}  # one in each workflow's queue, mid-batch
    for event in events:
        if event.id in big:
            event.data["pad"] = "B" * 30_000
    await publish(await make_producer(), topic, events)
    good = [e for e in events if e.id not in big]
    expected = by_workflow(good, "co-")
    loom = Loom(two_routes(task_queue), temporal_client, loom_settings(
        loom_kafka_bootstrap, topic, dlq, max_in_flight=2, batch_max_bytes=200_000,
        temporal={"payload_limit_bytes": 20_000},
    ))
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[InboxRecorderWorkflow]):
        async with running(loom):
            seen = await wait_delivered(temporal_client, expected, 60)
            await all_committed(loom, len(events))
    # Every letter was written before its offset was committed; the metric counts them all.
    letters = await read_records(loom_kafka_bootstrap, dlq, count=len(big), timeout=10)
    assert seen == expected  # every good event once, in order, the bad ones skipped
    assert {dict(r.headers)["loom-dlq-offset"].decode() for r in letters} == {
        str(events.index(e)) for e in events if e.id in big
    }
    assert {dict(r.headers)["loom-dlq-reason"] for r in letters} == {b"payload-too-large"}
    assert metric_total(loom.metrics.batch_splits, reason="payload-too-large") >= 2
    assert metric_total(loom.metrics.deadlettered) == len(big)
    _calls, carried, _multi = calls_of(loom.metrics.batch_events)
    assert carried == len(good)  # the calls that went through carried the good events once


@pytest.mark.kafka
@pytest.mark.temporal
async def test_one_hot_workflow_id_gets_many_events_per_round_trip(
    temporal_client: Client,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    task_queue: str,
) -> None:
    topic, dlq = await new_topic(partitions=1), await new_topic()
    events = events_of(COALESCED_TYPE, uuid.uuid4().hex[:6], 1, 2_000)
    await publish(await make_producer(), topic, events)
    expected = by_workflow(events, "co-")
    loom = Loom(two_routes(task_queue), temporal_client,
                loom_settings(loom_kafka_bootstrap, topic, dlq))
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[InboxRecorderWorkflow]):
        async with running(loom):
            seen = await wait_delivered(temporal_client, expected, 90)
    assert seen == expected
    calls, carried, _multi = calls_of(loom.metrics.batch_events)
    assert carried == len(events)
    assert calls <= len(events) / 20  # one call per round trip would be 2,000 calls


@pytest.mark.temporal
async def test_a_batch_to_a_closed_run_is_refused_for_its_events_to_go_alone(
    temporal_client: Client, task_queue: str
) -> None:
    route = Route("coalesced", Match(type=COALESCED_TYPE), data=Step, action=SignalWithStart(
        workflow=InboxRecorderWorkflow, task_queue=task_queue, workflow_id="co-{data.entity}",
    ))
    entity = uuid.uuid4().hex[:8]

    def inv(event_id: str) -> Any:
        found = route.resolve(Event(id=event_id, source="s", type=COALESCED_TYPE,
                                    data={"entity": entity, "seq": 0}))
        assert found is not None
        return found

    executor = TemporalExecutor(temporal_client)
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[InboxRecorderWorkflow]):
        await executor.execute(coalesced_invocation([inv("a"), inv("stop")]))
        await temporal_client.get_workflow_handle(f"co-{entity}").result()  # closed
        with pytest.raises(BatchRefusedError, match="is closed"):
            await executor.execute(coalesced_invocation([inv("a"), inv("late")]))
