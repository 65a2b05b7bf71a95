"""Entities and inbox workflows across continue-as-new, under the worker ``loom worker`` builds.

Issue 22's matrix: both ways of importing the loom's workflow side (module top level, and
inside ``workflow.unsafe.imports_passed_through()`` as the tutorial does), an entity whose
state model lives in another module (started through a route whose start input is
``EntityInput(state=...)``) and one whose model lives in the workflow's module (started with
the default input), and ``LoomWorkflow`` runs whose input is ``InboxState | None``, a user
dataclass or a user pydantic model carrying an ``InboxState``. States are nested: a list of
sub-models, a datetime and an enum. The events go through Kafka and the sidecar, coalesced
(two events per call at most), and each workflow continues as new every two signals: several
runs each. The worker is :func:`bridge.worker.run.run_worker`, what ``loom worker`` runs
(Temporal's sandbox, the loom's data converter). One worker and one sidecar serve the whole
matrix; each case is checked by its own test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from flows import passed, toplevel
from flows.models import Item, Kind, Ledger, apply
from kit import eventually, loom_settings, workflow_started
from pydantic import BaseModel, TypeAdapter
from recorder import publish
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from bridge.actions import SignalWithStart
from bridge.dev import create_topic
from bridge.events import Event
from bridge.kafka.clients import start_client, stop_client
from bridge.routing import Match, Route, Router
from bridge.sidecar.loop import Loom, running
from bridge.sidecar.metrics import metric_total
from bridge.testing import read_records
from bridge.worker.run import run_worker
from bridge.workflow import EntityInput, EntityStats, InboxState, PublishResult

STYLES = {"toplevel": toplevel, "passed": passed}
ENTITIES = ("Room", "LocalRoom")
FINISHING = ("Pending", "DataclassCarrier", "ModelCarrier")
CASES = [(style, name) for style in STYLES for name in (*ENTITIES, *FINISHING)]
EVENTS = toplevel.EVENTS
#: Runs each workflow must have had (so at least 3 continue-as-new).
MIN_RUNS = 4
#: Waves the events are published in: a continue-as-new between two waves.
WAVES = 6
#: How long the whole matrix may take to settle (a broken case fails at this timeout).
SETTLE_S = 60


def test_the_two_workflow_modules_differ_only_in_their_imports() -> None:
    def without_imports(module: Any) -> list[str]:
        lines = Path(module.__file__).read_text().splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("# --- the imports"))
        end = next(i for i, line in enumerate(lines) if line.startswith("# --- end of the imports"))
        code = lines.index("from __future__ import annotations")
        return lines[code:start] + lines[end:]  # the docstrings differ too

    assert without_imports(toplevel) == without_imports(passed)
    assert toplevel.EVENTS == passed.EVENTS


@contextlib.contextmanager
def loom_modules_unseen() -> Iterator[None]:
    """``sys.modules`` as the sandbox shows it to a workflow module that imported
    ``bridge.workflow`` through ``imports_passed_through()``: without the loom's submodules."""
    hidden = {name: sys.modules.pop(name) for name in list(sys.modules)
              if name.startswith("bridge.workflow.")}
    try:
        yield
    finally:
        sys.modules.update(hidden)


def test_the_carried_types_are_defined_without_their_module_in_sys_modules() -> None:
    with loom_modules_unseen():
        class Fresh(BaseModel):  # as re-created by every run's sandbox
            items: list[Item] = []
            when: datetime | None = None

        carried = {"pending": [{"id": "1"}], "seen": ["d"], "runs": 2}
        assert TypeAdapter(InboxState | None).validate_json(json.dumps(carried)) == InboxState(
            pending=[{"id": "1"}], seen=["d"], runs=2)
        entity_input = TypeAdapter(EntityInput[Fresh] | None).validate_json(
            json.dumps({"state": {"when": "2026-01-01T00:00:00Z"}, "inbox": carried}))
        assert entity_input is not None and entity_input.inbox.runs == 2
        assert TypeAdapter(PublishResult).validate_python(
            {"id": "i", "topic": "t", "partition": 0, "offset": 1}).offset == 1


def item(room: str, seq: int) -> Item:
    return Item(
        room=room, seq=seq, at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=seq),
        kind=Kind.LARGE if seq % 3 == 0 else Kind.SMALL,
    )


WRONG_SOURCE = "test://cas/wrong"


def source_of(style: str, name: str) -> str:
    return f"test://cas/{style}/{name}"


def router(task_queue: str) -> Router:
    routes = []
    for style, module in STYLES.items():
        for name in (*ENTITIES, *FINISHING):
            start_args = None
            if name == "Room":  # the route gives the initial state
                def start_args(event: Event, data: Any) -> tuple[Any, ...]:
                    return (EntityInput(state=Ledger(name=data.room)),)
            routes.append(Route(
                f"{style}-{name}", Match(type="cas.item", source=source_of(style, name)),
                data=Item,
                action=SignalWithStart(
                    workflow=getattr(module, name), task_queue=task_queue,
                    workflow_id="cas-{data.room}", start_args=start_args,
                ),
            ))
    # An entity started with a state of another model: refused by the sidecar.
    routes.append(Route(
        "wrong-state", Match(type="cas.item", source=WRONG_SOURCE), data=Item,
        action=SignalWithStart(
            workflow=toplevel.Room, task_queue=task_queue, workflow_id="cas-{data.room}",
            start_args=lambda event, data: (EntityInput(state=data),),
        ),
    ))
    return Router(routes)


@dataclass
class Matrix:
    """What the run left: per case, the room, its outcome (or the error seen last)."""

    rooms: dict[tuple[str, str], str]
    outcomes: dict[tuple[str, str], Any]
    deadlettered: float
    task_queue: str
    deadletter_topic: str


async def settle(client: Client, case: tuple[str, str], room: str) -> Any:
    """An entity's state and stats once it took every event; a finishing workflow's result."""
    await workflow_started(client, f"cas-{room}", timeout=SETTLE_S)
    handle = client.get_workflow_handle(f"cas-{room}")
    if case[1] in FINISHING:
        return await asyncio.wait_for(handle.result(), SETTLE_S)

    async def probe() -> tuple[dict[str, Any], EntityStats]:
        state = await handle.query("loom_state")
        assert state is not None and len(state["items"]) >= EVENTS, state
        return state, await handle.query("loom_stats", result_type=EntityStats)

    return await eventually(probe, timeout=SETTLE_S, interval=0.2, what=f"{case} took all")


async def latest_run(client: Client, workflow_id: str) -> str | None:
    try:
        return (await client.get_workflow_handle(workflow_id).describe()).run_id
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return None
        raise


async def feed_in_waves(
    client: Client, producer: Any, topic: str, rooms: dict[tuple[str, str], str],
    events: dict[tuple[str, str], list[Event]],
) -> None:
    """Publish each workflow's events in waves; before the next wave, wait until every
    workflow continued as new since the last one (each wave's first signal ends a run), so
    that each crosses a run boundary once per wave whatever the machine's speed. A workflow
    that cannot continue stops the waiting (the rest is published at once: its test fails)."""
    size = EVENTS // WAVES
    for wave in range(WAVES):
        before = {case: await latest_run(client, f"cas-{room}") for case, room in rooms.items()}
        batch = [e for case in CASES for e in events[case][wave * size:(wave + 1) * size]]
        await publish(producer, topic, batch)  # each workflow's events queue behind its id
        if wave == WAVES - 1:
            return

        async def moved_on(before: dict[tuple[str, str], str | None] = before) -> list[Any]:
            return [case for case, room in rooms.items()
                    if await latest_run(client, f"cas-{room}") in (None, before[case])]

        try:
            await eventually(moved_on, until=lambda stuck: not stuck, timeout=SETTLE_S / 2,
                             interval=0.2, what=f"wave {wave}: every workflow continued as new")
        except AssertionError:
            rest = [e for case in CASES for e in events[case][(wave + 1) * size:]]
            await publish(producer, topic, rest)
            return


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def matrix(
    temporal_client: Client, loom_kafka_bootstrap: str
) -> AsyncIterator[Matrix]:
    tag = uuid.uuid4().hex[:8]
    topic, dlq = f"cas-{tag}", f"cas-dlq-{tag}"
    await create_topic(loom_kafka_bootstrap, topic, 2)
    await create_topic(loom_kafka_bootstrap, dlq, 1)
    task_queue = f"cas-{tag}"
    rooms = {case: f"{case[0]}-{case[1]}-{tag}".lower() for case in CASES}
    events = {
        case: [
            Event(
                id=f"{rooms[case]}-{seq}", source=source_of(*case), type="cas.item",
                data=item(rooms[case], seq).model_dump(mode="json"),
                extensions={"partitionkey": rooms[case]},
            )
            for seq in range(EVENTS)
        ]
        for case in CASES
    }
    producer = await start_client(AIOKafkaProducer(
        bootstrap_servers=loom_kafka_bootstrap, enable_idempotence=False))
    # Coalesced calls of two events at most: each wave is two signals per workflow.
    settings = loom_settings(loom_kafka_bootstrap, [topic], dlq,
                             dispatch={"batch_max_events": 2, "max_in_flight": 16})
    loom = Loom(router(task_queue), temporal_client, settings)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(
        settings, [*toplevel.WORKFLOWS, *passed.WORKFLOWS], task_queue=task_queue, stop=stop,
        client=temporal_client,
    ))
    outcomes: dict[tuple[str, str], Any] = {}
    wrong = Event(id=f"wrong-{tag}", source=WRONG_SOURCE, type="cas.item",
                  data=item(f"wrong-{tag}", 0).model_dump(mode="json"))
    try:
        async with running(loom):
            await publish(producer, topic, [wrong])
            await feed_in_waves(temporal_client, producer, topic, rooms, events)

            async def one(case: tuple[str, str]) -> None:
                try:
                    outcomes[case] = await settle(temporal_client, case, rooms[case])
                except Exception as exc:
                    outcomes[case] = exc

            await asyncio.gather(*(one(case) for case in CASES))
            deadlettered = metric_total(loom.metrics.deadlettered)
        # The worker keeps running for the tests that start workflows themselves.
        yield Matrix(rooms, outcomes, deadlettered, task_queue, dlq)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(worker, 30)
        await stop_client(producer)


def expected_ledger(room: str, name: str) -> dict[str, Any]:
    state = Ledger(name=room if name == "Room" else "")
    for seq in range(EVENTS):
        apply(state, item(room, seq))
    return state.model_dump(mode="json")


@pytest.mark.kafka
@pytest.mark.temporal
@pytest.mark.parametrize("case", CASES, ids=[f"{s}-{n}" for s, n in CASES])
def test_every_event_taken_once_in_order_across_continue_as_new(
    matrix: Matrix, case: tuple[str, str]
) -> None:
    outcome = matrix.outcomes[case]
    assert not isinstance(outcome, BaseException), f"{case}: {outcome!r}"
    room = matrix.rooms[case]
    ids = [f"{room}-{seq}" for seq in range(EVENTS)]
    if case[1] in ENTITIES:
        state, stats = outcome
        assert state == expected_ledger(room, case[1])
        assert stats.handled == EVENTS and stats.ignored == stats.invalid == 0
        assert stats.last is not None and stats.last.id == ids[-1]
        assert stats.runs >= MIN_RUNS, stats
    else:
        assert outcome["taken"] == ids
        assert outcome["runs"] >= MIN_RUNS - 1, outcome  # runs before the last one
        if case[1] == "ModelCarrier":
            assert outcome["last"] == EVENTS - 1
    assert matrix.deadlettered == 1  # the event of the wrong-state route, alone


@pytest.mark.kafka
@pytest.mark.temporal
async def test_a_route_starting_an_entity_with_a_state_of_another_model_dead_letters(
    matrix: Matrix, loom_kafka_bootstrap: str
) -> None:
    [letter] = await read_records(loom_kafka_bootstrap, matrix.deadletter_topic, count=1)
    headers = {k: v.decode() for k, v in letter.headers}
    assert headers["loom-dlq-route"] == "wrong-state"
    assert "route 'wrong-state'" in headers["loom-dlq-message"]
    assert "EntityInput(state=Item(...))" in headers["loom-dlq-message"]
    assert "keeps a Ledger" in headers["loom-dlq-message"]


@pytest.mark.kafka
@pytest.mark.temporal
async def test_a_state_the_model_no_longer_accepts_fails_the_task_naming_model_and_field(
    matrix: Matrix, temporal_client: Client
) -> None:
    """A run continued as new by an older version, whose state the changed model refuses
    (an item's ``kind`` the enum no longer has): its workflow task fails, and says which
    model and which field, not "Failed decoding arguments"."""
    old = Ledger(items=[item("old", 0)]).model_dump(mode="json")
    old["items"][0]["kind"] = "medium"
    handle = await temporal_client.start_workflow(
        "toplevel.Room", {"state": old}, id=f"cas-old-{uuid.uuid4().hex[:8]}",
        task_queue=matrix.task_queue, task_timeout=timedelta(seconds=3),
    )

    async def failures() -> list[str]:
        history = await handle.fetch_history()
        found = [e.workflow_task_failed_event_attributes.failure.message
                 for e in history.events
                 if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
        assert found
        return found

    [message, *_] = await eventually(failures, timeout=30, interval=0.2, what="task failed")
    assert "Room: the run's input does not fit EntityInput[Ledger]" in message
    assert "state.items.0.kind" in message
    assert "Failed decoding" not in message
    await handle.terminate()

