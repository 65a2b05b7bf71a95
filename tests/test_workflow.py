"""Workflow-side helpers: inbox dedup and continue-as-new, wait_for_event, compensations."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from flows.collecting import (
    CollectInput,
    CollectResult,
    CollectWorkflow,
    SuggestedCollectWorkflow,
)
from flows.workflow_flows import Amount, InstalledInboxWorkflow, WaitWorkflow
from kit import eventually, query_when_ready
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from bridge._ids import identity_digest
from bridge.dev import EmbeddedTemporal
from bridge.events import EVENT_SEEN_QUERY, EVENT_SIGNAL, Event
from bridge.testing import loom_worker
from bridge.workflow import DEFAULT_SEEN_LIMIT, Inbox, InboxState, event_data
from bridge.workflow.memory import DIGEST_JSON_BYTES
from bridge.workflow.saga import Compensations


def _event(id: str, type: str = "thing.happened", data: Any = None) -> Event:
    return Event(id=id, source="test://producer", type=type, data=data)


# --- pure logic --------------------------------------------------------------------------------


def test_inbox_drops_repeats_by_source_and_id() -> None:
    inbox = Inbox()
    assert inbox.push(_event("a"))
    assert not inbox.push(_event("a"))
    # Same id from another source is another event.
    assert inbox.push(Event(id="a", source="test://other", type="t"))
    assert inbox.handle(_event("b").to_payload())
    assert not inbox.handle(_event("b").to_payload())
    assert [e.id for e in inbox._queue] == ["a", "a", "b"]
    assert inbox.duplicates_this_run == 2
    assert inbox.signals_this_run == 2


def test_inbox_seen_memory_is_bounded_fifo() -> None:
    inbox = Inbox(seen_limit=3)
    for name in "abcd":
        inbox.push(_event(name))
    # "a" was forgotten (oldest), "b".."d" are remembered.
    assert inbox.push(_event("a"))
    assert not inbox.push(_event("d"))
    assert inbox.snapshot().seen == [identity_digest(_event(n).key) for n in "cda"]


def _long(n: int) -> Event:
    return Event(id=f"{n:08d}" + "i" * 192, source="test://" + "s" * 193, type="item")


def test_identities_are_carried_as_fixed_size_digests() -> None:
    inbox = Inbox()
    for n in range(DEFAULT_SEEN_LIMIT + 5):
        inbox.push(_long(n))
        inbox.take()
    state = inbox.snapshot()
    # 10,000 identities of 400 characters: 25 bytes each once carried, 4 MB as full keys.
    assert len(state.seen) == DEFAULT_SEEN_LIMIT
    assert {len(d) for d in state.seen} == {22}
    carried = len(pydantic_data_converter.payload_converter.to_payloads([state])[0].data)
    assert carried < 260_000
    assert inbox.carried_bytes() >= carried  # the inbox's own measure errs on the safe side
    assert inbox.carried_bytes() < carried * 1.05
    # Repeats are still told apart after the round trip through a next run's input.
    restored = Inbox(InboxState(**dataclasses.asdict(state)))
    assert not restored.push(_long(DEFAULT_SEEN_LIMIT + 4))
    assert restored.has_seen(_long(DEFAULT_SEEN_LIMIT).source, _long(DEFAULT_SEEN_LIMIT).id)
    assert restored.push(_long(3))  # forgotten: the oldest went first


def test_state_carried_by_an_older_version_restores() -> None:
    # Runs started before the digests carried full "source\x1fid" keys.
    old = InboxState(
        pending=[_event("p").to_payload()],
        seen=[_event("a").key, _event("b").key, _event("p").key],
        runs=4,
    )
    inbox = Inbox(old)
    assert not inbox.push(_event("a"))
    assert not inbox.push(_event("p"))
    assert inbox.push(_event("c"))
    assert [e.id for e in inbox._queue] == ["p", "c"]
    assert inbox.runs == 4
    assert inbox.snapshot().seen == [identity_digest(_event(n).key) for n in "abpc"]


def test_events_taken_before_being_measured_are_not_kept() -> None:
    inbox = Inbox()
    for n in range(10_000):
        inbox.push(_event(f"e{n}", data={"n": n}))
        assert inbox.take() is not None
    assert len(inbox._unmeasured) <= 64 + 2  # sizes are measured lazily, memory stays flat
    before = inbox.carried_bytes()
    inbox.push(_event("last", data={"blob": "x" * 1_000}))
    assert inbox.carried_bytes() - before > 1_000  # what is queued is measured when asked
    assert inbox._unmeasured == []


def test_carried_bytes_follow_the_queue() -> None:
    inbox = Inbox()
    empty = inbox.carried_bytes()
    big = _event("big", data={"blob": "x" * 10_000})
    inbox.push(big)
    assert inbox.carried_bytes() - empty >= 10_000 + DIGEST_JSON_BYTES
    assert inbox.take() is big
    assert inbox.carried_bytes() - empty == DIGEST_JSON_BYTES  # the identity stays


def test_continue_as_new_when_the_carried_state_grows_past_the_budget() -> None:
    # The size rules come before Temporal's suggestion (None: "ask Temporal"): pure logic.
    inbox = Inbox(seen_limit=100, max_carried_bytes=20_000, carry_limit=50_000)
    assert inbox._size_verdict(0) is None  # the run's first look: under the budget
    inbox.push(_event("x", data={"blob": "x" * 25_000}))
    assert inbox._size_verdict(0) is True  # grew past it during the run
    assert inbox.take() is not None
    assert inbox._size_verdict(0) is None
    # The workflow's own state counts in the same budget.
    assert inbox._size_verdict(20_000) is True
    # Over the limit that Temporal takes, it never asks: taking events brings it down.
    inbox.push(_event("y", data={"blob": "y" * 60_000}))
    assert inbox.carried_bytes() > 50_000
    assert inbox._size_verdict(0) is False
    assert inbox.take() is not None
    assert inbox._size_verdict(0) is None


def test_a_run_that_starts_over_the_budget_does_not_continue_after_every_event() -> None:
    carried = [_event(f"p{n}", data={"blob": "x" * 1_000}).to_payload() for n in range(30)]
    inbox = Inbox(InboxState(pending=carried), seen_limit=100, max_carried_bytes=20_000,
                  carry_limit=50_000)
    assert inbox.carried_bytes() > 20_000
    verdicts = []
    while inbox.take() is not None:
        verdicts.append(inbox._size_verdict(0))
    assert set(verdicts) == {None}  # the signal backstop and Temporal decide, as usual


def test_inbox_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="half of max_carried_bytes"):
        Inbox(seen_limit=50_000)
    with pytest.raises(ValueError, match="carry_limit"):
        Inbox(max_carried_bytes=3_000_000)
    with pytest.raises(ValueError, match="positive"):
        Inbox(seen_limit=0)


def test_inbox_restore_orders_carried_events_first_and_drops_known_ones() -> None:
    previous = Inbox()
    for name in "abc":
        previous.push(_event(name))
    assert previous.take() is not None  # "a" processed in the previous run
    state = previous.snapshot()
    assert state.runs == 1
    assert [p["id"] for p in state.pending] == ["b", "c"]

    current = Inbox()
    # Signals handled in the new run before its main code restored the state:
    current.push(_event("c"))  # a repeat of a carried event
    current.push(_event("a"))  # a repeat of a processed one
    current.push(_event("d"))
    current.restore(state)
    assert [e.id for e in current._queue] == ["b", "c", "d"]
    assert current.runs == 1
    assert not current.push(_event("a"))
    assert current.push(_event("e"))


def test_take_matches_type_globs_and_predicates() -> None:
    inbox = Inbox()
    inbox.push(_event("1", "payment.failed", {"n": 1}))
    inbox.push(_event("2", "payment.charged", {"n": 2}))
    inbox.push(_event("3", "payment.charged", {"n": 3}))
    assert inbox.take("shipping.*") is None
    found = inbox.take("payment.charged", where=lambda e: e.data["n"] == 3)
    assert found is not None and found.id == "3"
    found = inbox.take("payment.*")
    assert found is not None and found.id == "1"
    assert len(inbox) == 1


def test_event_data_parses_dicts_and_json_bytes() -> None:
    assert event_data(_event("1", data={"cents": 5}), Amount) == Amount(cents=5)
    assert event_data(_event("2", data=b'{"cents": 7}'), Amount) == Amount(cents=7)


async def test_compensations_run_in_reverse_and_collect_errors() -> None:
    calls: list[str] = []

    async def undo(name: str) -> None:
        calls.append(name)

    def failing(name: str) -> None:
        calls.append(name)
        raise RuntimeError(name)

    comp = Compensations()
    comp.add(undo, "first")
    comp.add(failing, "second")
    comp.add(undo, name="third")
    errors = await comp.compensate()
    assert calls == ["third", "second", "first"]
    assert [str(e) for e in errors] == ["second"]
    assert len(comp) == 0
    assert await comp.compensate() == []


async def test_compensations_context_manager_compensates_only_on_error() -> None:
    calls: list[int] = []
    async with Compensations() as comp:
        comp.add(calls.append, 1)
    assert calls == []
    with pytest.raises(ValueError, match="boom"):
        async with Compensations() as comp:
            comp.add(calls.append, 1)
            comp.add(calls.append, 2)
            raise ValueError("boom")
    assert calls == [2, 1]


# --- workflows -----------------------------------------------------------------------------------


@pytest.mark.temporal
async def test_inbox_dedups_3000_signals_in_order_across_continue_as_new(
    temporal_client: Client, task_queue: str
) -> None:
    workflows, unique = 20, 120
    rng = random.Random(7)

    def sequence(wid: str) -> list[Event]:
        # 120 distinct events, 30 repeats of earlier ones (often from earlier runs), then done.
        source = f"test://producer/{wid}"
        events: list[Event] = []
        for i in range(unique):
            events.append(Event(id=f"e{i}", source=source, type="item", data={"i": i}))
            if i % 4 == 3:
                j = i - rng.randint(0, min(i, 100))
                events.append(Event(id=f"e{j}", source=source, type="item", data={"i": j}))
        events.append(Event(id="end", source=source, type="done"))
        return events

    async def feed(wid: str) -> CollectResult:
        events = sequence(wid)
        handle = await temporal_client.start_workflow(
            CollectWorkflow.run,
            CollectInput(),
            id=wid,
            task_queue=task_queue,
            start_signal=EVENT_SIGNAL,
            start_signal_args=[events[0].to_payload()],
        )
        for event in events[1:]:
            await handle.signal(EVENT_SIGNAL, event.to_payload())
        return await handle.result()

    ids = [f"collect-{uuid.uuid4().hex[:8]}-{n}" for n in range(workflows)]
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[CollectWorkflow]):
        # A bound for a stuck run, not a speed check: 3,000 signals take 15 s on a quiet machine
        # and three times that under load.
        results = await asyncio.wait_for(asyncio.gather(*(feed(w) for w in ids)), 150)

    sent = sum(len(sequence(w)) for w in ids)
    assert sent >= 3000
    for wid, result in zip(ids, results, strict=True):
        assert result.processed == [f"e{i}" for i in range(unique)] + ["end"], wid
        assert result.runs > 1, wid
    # The run count is Temporal's, not only the workflow's own counter.
    history_runs = 0
    async for _ in temporal_client.list_workflows(f"WorkflowId = '{ids[0]}'"):
        history_runs += 1
    assert history_runs == results[0].runs


#: Signals the sender of the suggestion test lets run ahead of the workflow.
AHEAD = 10


@pytest.mark.temporal
async def test_inbox_continues_as_new_when_temporal_suggests_it() -> None:
    # Own server: it suggests continue-as-new once a run's history has 60 events (the default
    # is thousands), so a steady signal stream crosses several runs on the suggestion alone.
    async with EmbeddedTemporal(
        dynamic_config={"limit.historyCount.suggestContinueAsNew": "60"}
    ) as server:
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        task_queue, wid = f"tq-{uuid.uuid4().hex[:8]}", f"suggested-{uuid.uuid4().hex[:8]}"
        source = "test://producer/suggested"
        events = [Event(id=f"e{i}", source=source, type="item") for i in range(150)]
        # Every tenth event is sent twice; the repeat may land in the next run.
        stream = [e for i, e in enumerate(events) for e in ([e, e] if i % 10 == 9 else [e])]
        stream.append(Event(id="end", source=source, type="done"))
        async with loom_worker(client, task_queue=task_queue, workflows=[SuggestedCollectWorkflow]):
            handle = await client.start_workflow(
                SuggestedCollectWorkflow.run, CollectInput(), id=wid, task_queue=task_queue,
                start_signal=EVENT_SIGNAL, start_signal_args=[stream[0].to_payload()],
            )

            def seen(event: Event) -> Callable[[], Awaitable[bool]]:
                return lambda: query_when_ready(handle, EVENT_SEEN_QUERY, event.source, event.id)

            for n, event in enumerate(stream[1:], start=1):
                # Paced: at most AHEAD signals before the workflow saw an earlier one, so every
                # run takes signals while its history grows. Unpaced, a worker that fell
                # behind could find the whole stream queued and take it in two runs.
                if n > AHEAD:
                    await eventually(seen(stream[n - AHEAD]), timeout=30, interval=0.02,
                                     what=f"the workflow saw {stream[n - AHEAD].id}")
                await handle.signal(EVENT_SIGNAL, event.to_payload())
            result = await asyncio.wait_for(handle.result(), 60)
        assert result.processed == [e.id for e in events] + ["end"]
        history_runs = 0
        async for _ in client.list_workflows(f"WorkflowId = '{wid}'"):
            history_runs += 1
        # 166 signals in runs of at most ~60 history events (a workflow task at least every
        # AHEAD signals adds 3 of them): the suggestion ended runs.
        assert history_runs == result.runs >= 3


@pytest.mark.temporal
async def test_wait_for_event_returns_the_match_and_none_on_timeout(
    temporal_client: Client, task_queue: str
) -> None:
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[WaitWorkflow]):
        handle = await temporal_client.start_workflow(
            WaitWorkflow.run, id=f"wait-{uuid.uuid4()}", task_queue=task_queue
        )
        skipped = _event("x1", "order.placed", {"n": 1, "cents": 1})
        await handle.signal(EVENT_SIGNAL, skipped.to_payload())
        await handle.signal(EVENT_SIGNAL, _event("x0", "other", {"n": 2}).to_payload())
        assert await handle.query(WaitWorkflow.queued) == 2
        await handle.signal(
            EVENT_SIGNAL, _event("x2", "order.paid", {"n": 2, "cents": 9}).to_payload()
        )
        result = await asyncio.wait_for(handle.result(), 20)
    # "x1" did not match but stayed queued in order ahead of "x0".
    assert result == ["x2", 9, "x1", None]


@pytest.mark.temporal
async def test_installed_inbox_receives_signals_sent_before_install(
    temporal_client: Client, task_queue: str
) -> None:
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[InstalledInboxWorkflow]):
        handle = await temporal_client.start_workflow(
            InstalledInboxWorkflow.run,
            id=f"installed-{uuid.uuid4()}",
            task_queue=task_queue,
            start_signal=EVENT_SIGNAL,
            start_signal_args=[_event("a").to_payload()],
        )
        await handle.signal(EVENT_SIGNAL, _event("a").to_payload())
        await handle.signal(EVENT_SIGNAL, _event("b").to_payload())
        assert await asyncio.wait_for(handle.result(), 20) == ["a", "b"]
