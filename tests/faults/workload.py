"""The fault suite's workload: a recording workflow, its route, known events and the tally.

The sidecar subprocess loads :data:`router` with ``--routes faults.workload:router``; the
task queue comes from ``LOOM_FAULTS_TASK_QUEUE`` so every scenario gets its own. The
workflow keeps every event it receives, duplicates included (no workflow-side dedup), so the
tally sees exactly what Temporal delivered.

:data:`coalesced_router` (``--routes faults.workload:coalesced_router``) routes the same
events to :class:`~recorder.InboxRecorderWorkflow`, a ``LoomWorkflow``: its route coalesces
(the events queued behind a workflow id ride in one call), and the tally sees what its inbox
let through, each event once: a batch redelivered after a fault may be cut differently, so
the server lets its repeats through and the inbox drops them (guarantee 2a).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import recorder
from pydantic import BaseModel, field_validator
from recorder import RECORDER, InboxRecorderWorkflow, RecorderWorkflow, publish

from bridge.actions import SignalWithStart
from bridge.events import Event
from bridge.routing import Match, Route, Router

EVENT_TYPE = "faults.step"
#: Events of this type go through a route whose own code raises on ``entity`` "boom-*".
STRICT_TYPE = "faults.strict"
SOURCE = "test://faults"
WORKFLOW_PREFIX = "fault-"


#: The workflow every fault scenario routes to (records duplicates too).
FaultRecorder = RecorderWorkflow


class Step(BaseModel):
    entity: str
    seq: int
    pad: str = ""


class Strict(Step):
    """A model with a bug: its validator raises what pydantic does not turn into a
    validation error (only ValueError and AssertionError are), as a route's code may."""

    @field_validator("entity")
    @classmethod
    def _entity(cls, value: str) -> str:
        if value.startswith("boom"):
            raise LookupError(f"no such entity {value!r}")
        return value


def make_router(task_queue: str, *, coalesced: bool = False) -> Router:
    """The suite's route, ``faults.step`` -> signal-with-start ``fault-{entity}``, and the same
    for ``faults.strict`` through a model whose code raises on some input; ``coalesced``: to
    the inbox recorder, whose routes coalesce."""
    return Router([
        Route(
            name,
            match=Match(type=event_type),
            data=model,
            action=SignalWithStart(
                workflow=InboxRecorderWorkflow if coalesced else RECORDER,
                task_queue=task_queue,
                workflow_id=WORKFLOW_PREFIX + "{data.entity}",
            ),
        )
        for name, event_type, model in (("step", EVENT_TYPE, Step), ("strict", STRICT_TYPE, Strict))
    ])


#: What ``loom run --routes faults.workload:router`` loads in the sidecar subprocess.
router = make_router(os.environ.get("LOOM_FAULTS_TASK_QUEUE", "loom-faults"))
#: The same with coalescing (``--routes faults.workload:coalesced_router``).
coalesced_router = make_router(
    os.environ.get("LOOM_FAULTS_TASK_QUEUE", "loom-faults"), coalesced=True
)


def step_events(prefix: str, entities: int, per_entity: int) -> list[Event]:
    """``entities * per_entity`` fault-suite events, interleaved, each entity's in order."""
    return recorder.step_events(prefix, entities, per_entity, type=EVENT_TYPE, source=SOURCE)


def expected_by_workflow(events: Iterable[Event]) -> dict[str, list[str]]:
    """The ids each ``fault-<entity>`` workflow should record, in order."""
    return recorder.expected_by_workflow(events, WORKFLOW_PREFIX)


async def publish_paced(
    producer: Any, topic: str, events: Sequence[Event], *, rate: float, batch: int = 50
) -> None:
    """Send ``events`` at about ``rate`` per second, so a fault lands mid-stream."""
    for start in range(0, len(events), batch):
        await publish(producer, topic, events[start : start + batch])
        await asyncio.sleep(batch / rate)  # the pace is the point: not a wait for anything


@dataclass(frozen=True)
class Tally:
    """What the workflows received compared with what was sent."""

    sent: int
    lost: int
    duplicated: int
    out_of_order: int
    workflows: int
    worst: Mapping[str, str]  # a few workflow ids with their problem, for the failure message

    @property
    def clean(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.out_of_order == 0


def tally(expected: Mapping[str, Sequence[str]], seen: Mapping[str, Sequence[str]]) -> Tally:
    """Count lost, duplicated and out-of-order events per workflow.

    Out of order: received ids (first occurrences) whose position in the expected sequence is
    lower than that of an id received before them.
    """
    lost = duplicated = out_of_order = sent = 0
    worst: dict[str, str] = {}
    for wf_id, want in expected.items():
        got = list(seen.get(wf_id, []))
        sent += len(want)
        position = {event_id: i for i, event_id in enumerate(want)}
        first: list[str] = []
        seen_ids: set[str] = set()
        dup = 0
        for event_id in got:
            if event_id in seen_ids:
                dup += 1
            else:
                seen_ids.add(event_id)
                first.append(event_id)
        missing = [e for e in want if e not in seen_ids]
        disorder = 0
        highest = -1
        for event_id in first:
            pos = position.get(event_id, -1)
            if pos < highest:
                disorder += 1
            highest = max(highest, pos)
        lost += len(missing)
        duplicated += dup
        out_of_order += disorder
        if (missing or dup or disorder) and len(worst) < 5:
            worst[wf_id] = f"missing={missing[:3]} dup={dup} disorder={disorder} got={len(got)}"
    return Tally(sent, lost, duplicated, out_of_order, len(expected), worst)
