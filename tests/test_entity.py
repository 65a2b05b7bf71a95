"""Entity workflows: handlers per event type, state and inbox carried, policies, failures.

The device (``flows/entity_flows.py``, with the other workflows of these tests) is the
workflow of issue 17 rewritten with ``EntityWorkflow``: the state model, one handler, nothing
else. Its long test feeds 25,000 events across several continue-as-new runs and counts what
was lost, duplicated or taken out of order.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import itertools
import textwrap
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from flows.entity_flows import (
    POISON,
    Account,
    BatchFedTrail,
    BuggyCounter,
    CountState,
    Device,
    DeviceState,
    FixedCounter,
    FixedStrictCounter,
    LenientCounter,
    Note,
    NotebookEntity,
    SmallRunsDevice,
    StrictCounter,
    TinyRunsDevice,
    Trail,
)
from pydantic import BaseModel, ValidationError
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter

from bridge.dev import EmbeddedTemporal
from bridge.events import CAUSATION, CORRELATION, EVENT_SIGNAL, EVENTS_SIGNAL, Event
from bridge.testing import loom_worker
from bridge.workflow import (
    PUBLISH_ACTIVITY,
    EntityInput,
    EntityStats,
    EntityWorkflow,
    EventRef,
    InboxState,
    PublishRequest,
    PublishResult,
    handles,
)

T = TypeVar("T")


# --- the device ------------------------------------------------------------------------------


def test_the_device_is_under_10_lines_of_business_logic() -> None:
    source = textwrap.dedent(inspect.getsource(Device))
    [cls] = ast.parse(source).body
    assert isinstance(cls, ast.ClassDef) and isinstance(cls.body[0], ast.Expr)  # the docstring
    docstring = range(cls.body[0].lineno, (cls.body[0].end_lineno or 0) + 1)
    lines = [
        line for number, line in enumerate(source.splitlines(), 1)
        if line.strip() and number not in docstring
    ]
    # Decorators, class and def lines included.
    assert len(lines) < 10, "\n".join(lines)


# --- helpers ---------------------------------------------------------------------------------


def event(id: str, type: str, data: Any = None, source: str = "test://entity", **ext: Any) -> Event:
    return Event(id=id, source=source, type=type, data=data, extensions=ext)


async def eventually(probe: Callable[[], Awaitable[T]], check: Callable[[T], bool], timeout: float = 30) -> T:
    """Poll ``probe`` until ``check`` holds for its value; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    value = await probe()
    while not check(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {value!r}")
        await asyncio.sleep(0.05)
        value = await probe()
    return value


#: The workflow task timeout of tests whose workflow tasks fail on purpose. The SDK reports
#: only the first failed attempt of a task and leaves a later one to time out (10 s by
#: default): that is when a fixed worker gets the task again.
FAILING_TASK_TIMEOUT = timedelta(seconds=3)


async def start(
    client: Client, wf: Any, task_queue: str, first: Event, input: Any = None,
    id: str | None = None, task_timeout: timedelta | None = None,
) -> WorkflowHandle[Any, Any]:
    """Signal-with-start, as a route does."""
    return await client.start_workflow(
        wf.run,
        input,
        id=id or f"{wf.__name__.lower()}-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
        start_signal=EVENT_SIGNAL,
        start_signal_args=[first.to_payload()],
        task_timeout=task_timeout,
    )


async def send(handle: WorkflowHandle[Any, Any], events: Sequence[Event]) -> None:
    for e in events:
        await handle.signal(EVENT_SIGNAL, e.to_payload())


async def stats(handle: WorkflowHandle[Any, Any]) -> EntityStats:
    result: EntityStats = await handle.query(EntityWorkflow.entity_stats)
    return result


async def task_failed(handle: WorkflowHandle[Any, Any], message: str) -> None:
    """Wait until a workflow task of the current run failed with ``message`` in its failure
    (other failures, such as a continue-as-new refused while signals came, do not count)."""
    await eventually(lambda: task_failures(handle), lambda fs: any(message in f for f in fs))


async def task_failures(handle: WorkflowHandle[Any, Any]) -> list[str]:
    """Messages of the workflow task failures in the history (what the Temporal UI shows)."""
    history = await handle.fetch_history()
    return [
        e.workflow_task_failed_event_attributes.failure.message
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    ]


def handled(count: int) -> Callable[[EntityStats], bool]:
    """A check for :func:`eventually`: the entity handled at least ``count`` events."""
    return lambda s: s.handled >= count


async def runs_of(client: Client, workflow_id: str) -> int:
    return len([w async for w in client.list_workflows(f"WorkflowId = '{workflow_id}'")])


# --- pure logic ------------------------------------------------------------------------------


class Empty(BaseModel):
    pass


class RoutingEntity(EntityWorkflow[Empty]):
    """Not a workflow: only its handler table is looked at."""

    @handles("a.*")
    def first_glob(self, data: Any) -> None: ...

    @handles("a.exact", "b.exact")
    def exact(self, event: Event) -> None: ...

    @handles("*")
    def catch_all(self, data: Note, event: Event) -> None: ...


def test_exact_types_win_over_globs_and_globs_keep_their_declaration_order() -> None:
    table = RoutingEntity._loom_table
    assert table.find("a.exact") is table.find("b.exact")
    found = table.find("a.exact")
    assert found is not None and found.method == "exact"
    other = table.find("a.other")
    assert other is not None and other.method == "first_glob"
    last = table.find("z")
    assert last is not None and last.method == "catch_all"
    assert [h.method for h in RoutingEntity.handlers()] == ["first_glob", "exact", "catch_all"]


def test_a_handler_receives_validated_data_the_event_or_raw_data() -> None:
    table = RoutingEntity._loom_table
    raw, exact, model = (table.find(t) for t in ("a.x", "a.exact", "z"))
    assert raw is not None and exact is not None and model is not None
    e = event("1", "z", {"text": "hi"})
    assert raw.argument(e) == {"text": "hi"}
    assert exact.argument(e) is e
    assert model.argument(e) == Note(text="hi")
    assert model.argument(event("2", "z", b'{"text": "json"}')) == Note(text="json")
    assert model.with_event and not raw.with_event
    with pytest.raises(ValidationError):
        model.argument(event("3", "z", {"nope": 1}))


def test_subclasses_inherit_override_and_extend_handlers() -> None:
    class Child(RoutingEntity):
        @handles("c.exact")
        def child(self, data: Any) -> None: ...

        def first_glob(self, data: Any) -> None: ...  # overridden undecorated: no handler

    found = Child._loom_table.find("a.other")
    assert found is not None and found.method == "catch_all"
    assert [h.method for h in Child.handlers()] == ["exact", "catch_all", "child"]


def test_bad_declarations_fail_when_the_class_is_built() -> None:
    with pytest.raises(TypeError, match="two handlers"):
        class Twice(EntityWorkflow[Empty]):
            @handles("x")
            def one(self, data: Any) -> None: ...

            @handles("x")
            def two(self, data: Any) -> None: ...

    with pytest.raises(TypeError, match=r"must take \(self, data\)"):
        class NoData(EntityWorkflow[Empty]):
            @handles("x")
            def none(self) -> None: ...

    with pytest.raises(TypeError, match="second parameter receives the Event"):
        class WrongSecond(EntityWorkflow[Empty]):
            @handles("x")
            def two(self, data: Any, other: int) -> None: ...

    with pytest.raises(TypeError, match="must be a pydantic model"):
        class NotAModel(EntityWorkflow[int]):  # type: ignore[type-var]
            pass

    with pytest.raises(TypeError, match="name the state model"):
        class NoModel(EntityWorkflow):  # type: ignore[type-arg]
            pass

    with pytest.raises(TypeError, match="at least one event type"):
        handles()


def test_an_input_built_without_its_type_parameter_keeps_the_whole_state() -> None:
    state = DeviceState(readings=3, total=9, last_seq=2)
    dumped = EntityInput(state=state).model_dump(mode="json")
    assert dumped["state"] == state.model_dump()
    back = EntityInput[DeviceState].model_validate(dumped)
    assert back.state == state
    assert back.inbox == InboxState()


# --- the device, 25,000 events ---------------------------------------------------------------


#: The device test's server lets more signals wait during a workflow task than the default
#: 100 (history.maximumBufferedEventsBatch): over that, the server force-fails the task. It
#: is retried, nothing is lost, but a test that keeps 100 signals in flight would spend its
#: time in retries. The sidecar, one call in flight per workflow, stays far below it.
DEVICE_SERVER_CONFIG = {"history.maximumBufferedEventsBatch": "2000"}


@pytest.mark.temporal
@pytest.mark.parametrize(
    ("device", "total", "batch"),
    [
        # The default run: a short stream on the shared server, across several runs.
        pytest.param(TinyRunsDevice, 400, 40, id="400-events"),
        # Issue 17's figure, on a server of its own: 2.5 to 5 minutes on the shared 2-core
        # machine, so only with -m slow.
        pytest.param(
            SmallRunsDevice, 25_000, 100, id="25000-events",
            marks=[pytest.mark.slow, pytest.mark.timeout(600)],
        ),
    ],
)
async def test_device_takes_every_event_across_runs_none_lost_duplicated_or_out_of_order(
    temporal_client: Client, task_queue: str, device: type[SmallRunsDevice], total: int,
    batch: int,
) -> None:
    # Signals go in concurrent batches, a batch once the previous one was acknowledged and the
    # device had taken all but the last 1,000 events sent (a third of a short stream). Within
    # a batch Temporal fixes the order (the history's); the device must take events in
    # exactly that order, across every continue-as-new. Every 50th event is sent again in the
    # next batch (a redelivery): the inbox drops it.
    window = min(1_000, total // 3)
    source, wid = "test://device", f"device-{uuid.uuid4().hex[:8]}"
    readings = [
        event(f"r{seq}", "device.reading", {"seq": seq, "value": seq % 7}, source)
        for seq in range(total)
    ]
    fresh = [readings[i : i + batch] for i in range(0, total, batch)]
    redelivered = [[e for e in previous if e.data["seq"] % 50 == 49] for previous in fresh]
    batches = [fresh[0], *(new + again for new, again in zip(fresh[1:], redelivered, strict=False))]

    async with contextlib.AsyncExitStack() as stack:
        client = temporal_client
        if batch > 50:  # over half the default limit of signals buffered during a task
            server = await stack.enter_async_context(
                EmbeddedTemporal(dynamic_config=DEVICE_SERVER_CONFIG)
            )
            client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        began = time.monotonic()
        async with loom_worker(client, task_queue=task_queue, workflows=[device]):
            handle = await start(client, device, task_queue, batches[0][0], id=wid)
            for number, signals in enumerate([batches[0][1:], *batches[1:]]):
                await asyncio.gather(*(handle.signal(EVENT_SIGNAL, e.to_payload()) for e in signals))
                await eventually(lambda: stats(handle), handled((number + 1) * batch - window))
            sent = time.monotonic() - began
            final = await eventually(lambda: stats(handle), handled(total), 120)
            elapsed = time.monotonic() - began
            state = await handle.query(SmallRunsDevice.current_state)
            delivered, taken = await delivery_and_processing(client, handle)
            runs = await runs_of(client, wid)

    # What Temporal delivered, repeats dropped, is exactly what the device took, in order.
    first_seen = list(dict.fromkeys(delivered))
    assert len(delivered) == sum(len(b) for b in batches)  # every signal is in the history
    assert sorted(first_seen) == list(range(total))  # 0 lost
    assert len(taken) == total  # 0 duplicated
    assert taken == first_seen  # 0 out of order
    batch_of = [seq // batch for seq in taken]
    assert batch_of == sorted(batch_of)  # a batch's events all before the next batch's
    assert final.handled == total and final.ignored == final.invalid == 0
    assert final.last == EventRef(source=source, id=f"r{taken[-1]}", type="device.reading")
    gaps = sum(1 for a, b in itertools.pairwise([-1, *taken]) if b != a + 1)
    assert state == DeviceState(
        readings=total, total=sum(s % 7 for s in range(total)), last_seq=taken[-1], gaps=gaps
    )
    # 25,498 signals (407), continuing-as-new after 2,000 (60) and what was queued by
    # then per run, or sooner when Temporal suggests it: at least 5 runs either way.
    assert final.runs == runs >= 5
    print(f"\n{total:,} device events, {runs} runs, {gaps} reordered by Temporal within "
          f"batches: sent in {sent:.1f}s, all taken after {elapsed:.1f}s")


async def delivery_and_processing(
    client: Client, handle: WorkflowHandle[Any, Any]
) -> tuple[list[int], list[int]]:
    """The seqs signalled to every run of the chain, in history order, and the seqs the runs
    took (closed runs: their memo; the open run: a query)."""
    delivered: list[int] = []
    taken: list[int] = []
    run_id: str | None = handle.first_execution_run_id
    while run_id is not None:
        history = await client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
        run_id = None
        for e in history.events:
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
                [payload] = await client.data_converter.decode(
                    e.workflow_execution_signaled_event_attributes.input.payloads
                )
                delivered.append(payload["data"]["seq"])
            elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED:
                memo = e.workflow_properties_modified_event_attributes.upserted_memo
                [seqs] = await client.data_converter.decode([memo.fields["taken"]])
                taken.extend(seqs)
            elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
                attrs = e.workflow_execution_continued_as_new_event_attributes
                run_id = attrs.new_execution_run_id
    taken.extend(await handle.query(SmallRunsDevice.taken))
    return delivered, taken


# --- sync and async handlers, glob handlers, finishing ---------------------------------------


class Participant:
    """The ``loom.publish`` activity's stand-in: records events, answers charge commands."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.published: list[Event] = []

    @activity.defn(name=PUBLISH_ACTIVITY)
    async def publish(self, request: PublishRequest) -> PublishResult:
        command = Event.from_payload(request.event)
        self.published.append(command)
        if command.type == "payment.charge":
            answer = "payment.declined" if command.data["amount"] > 100 else "payment.charged"
            reply = event(f"reply-{command.id}", answer, {}, "test://payment",
                          **{CAUSATION: command.id, CORRELATION: command.extensions[CORRELATION]})
            await self.client.get_workflow_handle(command.extensions[CORRELATION]).signal(
                EVENT_SIGNAL, reply.to_payload()
            )
        return PublishResult(id=command.id, topic="test", partition=0, offset=0)


@pytest.mark.temporal
async def test_sync_async_and_glob_handlers_run_one_at_a_time_in_order_and_finish(
    temporal_client: Client, task_queue: str
) -> None:
    participant = Participant(temporal_client)
    async with loom_worker(
        temporal_client, task_queue=task_queue, workflows=[Account],
        activities=[participant.publish],
    ):
        handle = await start(
            temporal_client, Account, task_queue, event("1", "order.placed", {"order_id": "o1", "amount": 10}),
        )
        await send(handle, [
            # Queued behind o1's request: handled only once o1 is done, in this order.
            event("2", "note.added", "first"),
            event("3", "order.placed", {"order_id": "o2", "amount": 500}),  # declined
            event("4", "note.pinned", "second"),
            event("5", "order.placed", {"order_id": "o3", "amount": 20}),
            event("6", "account.close"),
            event("7", "note.added", "during close"),  # the close handler is still waiting
        ])
        await eventually(
            lambda: handle.query(Account.current_state),
            lambda s: s is not None and s.closing == "waiting",
        )
        await send(handle, [event("8", "account.confirmed")])
        result = await asyncio.wait_for(handle.result(), 30)
        final = await handle.query(Account.current_state)
        counters = await stats(handle)

    assert result == {"balance": 30, "orders": ["o1", "o3"]}
    assert final.notes == ["note.added:first", "note.pinned:second"]
    assert final.closing == "confirmed"
    assert [(e.type, e.data.get("order_id")) for e in participant.published] == [
        ("payment.charge", "o1"), ("order.accepted", "o1"),
        ("payment.charge", "o2"),
        ("payment.charge", "o3"), ("order.accepted", "o3"),
    ]
    # The close handler took "account.confirmed" itself; the note that came during the close
    # was still queued when the workflow finished: counted, not silently gone.
    assert counters.handled == 6
    assert counters.last == EventRef(source="test://entity", id="6", type="account.close")
    assert counters.left_at_finish == 1


# --- the unhandled-type policy and invalid data ----------------------------------------------


@pytest.mark.temporal
async def test_ignored_events_are_counted_and_visible_in_a_query(
    temporal_client: Client, task_queue: str
) -> None:
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[LenientCounter]):
        handle = await start(temporal_client, LenientCounter, task_queue, event("1", "tick", {"n": 1}))
        await send(handle, [
            event("2", "tock", {"n": 2}),  # no handler
            event("3", "tick", {"n": "three"}),  # does not fit Tick
            event("4", "tick", {"n": 4}),
        ])
        final = await eventually(lambda: stats(handle), lambda s: s.handled == 2)
        state = await handle.query(LenientCounter.current_state)
    assert state == CountState(count=2, total=5)
    assert (final.ignored, final.invalid) == (1, 1)
    assert final.last_ignored == EventRef(source="test://entity", id="3", type="tick")
    assert final.last == EventRef(source="test://entity", id="4", type="tick")


@pytest.mark.temporal
async def test_fail_policy_fails_the_workflow_task_and_a_fixed_worker_goes_on(
    temporal_client: Client, task_queue: str
) -> None:
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[StrictCounter]):
        handle = await start(
            temporal_client, StrictCounter, task_queue, event("1", "tick", {"n": 1}),
            task_timeout=FAILING_TASK_TIMEOUT,
        )
        await send(handle, [event("2", "tock"), event("3", "tick", {"n": 3})])
        await task_failed(handle, "StrictCounter has no handler for event type 'tock'")

    # A worker whose StrictCounter handles "tock" (the fix, deployed) takes the retried task.
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[FixedStrictCounter]):
        final = await eventually(lambda: stats(handle), lambda s: s.handled == 3)
        state = await handle.query(FixedStrictCounter.current_state)
    assert state == CountState(count=2, total=4)
    assert final.ignored == 0


@pytest.mark.temporal
async def test_invalid_data_fails_the_workflow_task_by_default(
    temporal_client: Client, task_queue: str
) -> None:
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[StrictCounter]):
        handle = await start(temporal_client, StrictCounter, task_queue, event("1", "tick", {"n": "x"}))
        await task_failed(
            handle, "StrictCounter.tick: data of 'tick' (source 'test://entity', id '1') does "
            "not fit Tick: n: Input should be a valid integer"
        )


# --- several events in one signal (a coalesced call) -------------------------------------------


@pytest.mark.temporal
async def test_events_several_to_a_signal_are_taken_like_single_events(
    temporal_client: Client, task_queue: str
) -> None:
    ticks = [event(f"t{n}", "tick", {"n": n}) for n in range(1, 41)]
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[BatchFedTrail]):
        handle = await start(temporal_client, BatchFedTrail, task_queue, ticks[0])
        # Batches and single signals mixed, repeats inside a batch and across. Each call once
        # the previous one was taken: six signals, two per run, so the stream crosses at least
        # two continue-as-new.
        calls: list[list[Event]] = [
            ticks[1:13], [ticks[13]], [*ticks[14:20], ticks[5], ticks[14]], [ticks[20]],
            [*ticks[21:40], ticks[0], ticks[39]],
        ]
        for call in calls:
            if len(call) == 1:
                await send(handle, call)
            else:
                await handle.signal(EVENTS_SIGNAL, [e.to_payload() for e in call])
            newest = max(e.data["n"] for e in call)
            final = await eventually(lambda: stats(handle), handled(newest))
        state = await handle.query(BatchFedTrail.current_state)
    assert state == Trail(ns=list(range(1, 41)))
    assert final.handled == 40 and final.ignored == final.invalid == 0
    assert final.runs >= 3
    assert await runs_of(temporal_client, handle.id) >= 3


# --- a handler that raises, and a worker restart ---------------------------------------------


@pytest.mark.temporal
async def test_a_handler_that_raises_fails_the_task_and_nothing_is_lost_or_applied_twice(
    temporal_client: Client, task_queue: str
) -> None:
    ticks = [event(f"t{n}", "tick", {"n": n}) for n in range(1, 31)]  # 13 is the poison
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[BuggyCounter]):
        handle = await start(
            temporal_client, FixedCounter, task_queue, ticks[0], task_timeout=FAILING_TASK_TIMEOUT
        )
        await send(handle, ticks[1:20])
        await task_failed(handle, f"bug: cannot take {POISON}")
        # Events keep arriving while the task fails: Temporal keeps them in the history.
        await send(handle, ticks[20:25])
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[FixedCounter]):
        await send(handle, [*ticks[25:], ticks[12], ticks[24]])  # and two redeliveries
        final = await eventually(lambda: stats(handle), lambda s: s.handled == 30)
        state = await handle.query(FixedCounter.current_state)
    # The poison tick's first attempt changed the state before raising; the retry rebuilt the
    # state from the history, so every tick counts exactly once.
    assert state == CountState(count=30, total=sum(range(1, 31)))
    assert final.ignored == final.invalid == 0
    # 32 signals at 10 per run: the state crossed continue-as-new (counted by Temporal: a
    # query may still be answered by a run whose continue-as-new is being recorded).
    await eventually(lambda: runs_of(temporal_client, handle.id), lambda runs: runs >= 2)


@pytest.mark.temporal
async def test_state_and_inbox_survive_a_worker_restart_mid_stream(
    temporal_client: Client, task_queue: str
) -> None:
    ticks = [event(f"t{n}", "tick", {"n": n}) for n in range(1, 37)]
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[FixedCounter]):
        handle = await start(temporal_client, FixedCounter, task_queue, ticks[0])
        await send(handle, ticks[1:12])
        await eventually(lambda: stats(handle), lambda s: s.handled == 12)
    # The worker is gone: the restart comes after continue-as-new carried the state (and
    # the memory of what was taken) at least once.
    runs_before = await runs_of(temporal_client, handle.id)
    assert runs_before >= 2
    # No worker: events pile up in the history, with repeats of some taken before.
    await send(handle, [*ticks[12:24], ticks[3], ticks[15]])
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[FixedCounter]):
        await send(handle, [*ticks[24:], ticks[30], ticks[0]])
        final = await eventually(lambda: stats(handle), lambda s: s.handled == 36)
        state = await handle.query(FixedCounter.current_state)
    assert state == CountState(count=36, total=sum(range(1, 37)))
    assert final.last == EventRef(source="test://entity", id="t36", type="tick")
    await eventually(lambda: runs_of(temporal_client, handle.id), lambda runs: runs > runs_before)


# --- the state counts in the inbox's byte budget ---------------------------------------------


@pytest.mark.temporal
async def test_the_state_counts_in_the_inbox_byte_budget(
    temporal_client: Client, task_queue: str
) -> None:
    # 60 notes of 500 characters: the state passes 20,000 bytes at about the 40th, while the
    # inbox's own part (60 digests, and the few notes still queued) stays far below.
    notes = [event(f"n{i}", "note", {"text": f"{i:03d}" + "x" * 497}) for i in range(60)]
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[NotebookEntity]):
        handle = await start(temporal_client, NotebookEntity, task_queue, notes[0])
        await send(handle, notes[1:])
        final = await eventually(lambda: stats(handle), handled(60))
        state = await handle.query(NotebookEntity.current_state)
    assert state is not None and state.notes == [n.data["text"] for n in notes]
    # One continue-as-new, for the bytes; the next run starts over the budget and keeps
    # going (only growth within a run counts).
    assert final.runs == await runs_of(temporal_client, handle.id) == 2
