"""A workload whose workflows close: a LoomWorkflow per entity that ends on its last event.

The sidecar subprocess loads :data:`router` with ``--routes faults.closing:router`` (task
queue from ``LOOM_FAULTS_TASK_QUEUE``). The workflow records the events it takes (the inbox
drops repeats) and answers the ``events`` query, like the recorder, also once closed.
"""

from __future__ import annotations

import os

from pydantic import BaseModel
from temporalio import workflow

from bridge.actions import SignalWithStart
from bridge.events import Event
from bridge.routing import Match, Route, Router
from bridge.workflow import LoomWorkflow

EVENT_TYPE = "faults.closing"
SOURCE = "test://faults/closing"
WORKFLOW_PREFIX = "closing-"
WORKFLOW_TYPE = "FaultClosing"


class Step(BaseModel):
    entity: str
    seq: int
    last: bool = False


@workflow.defn(name=WORKFLOW_TYPE)
class ClosingWorkflow(LoomWorkflow):
    """Takes its entity's events in order; completes after the one marked ``last``."""

    def __init__(self) -> None:
        self.taken: list[str] = []

    @workflow.run
    async def run(self) -> list[str]:
        while True:
            event = await self.inbox.next()
            assert event is not None
            self.taken.append(event.id)
            if event.data.get("last"):
                return self.taken

    @workflow.query
    def events(self) -> list[str]:
        return self.taken


def make_router(task_queue: str) -> Router:
    """``faults.closing`` -> signal-with-start ``closing-{entity}`` (REJECT_DUPLICATE, the
    default: a closed workflow is never started again)."""
    return Router([
        Route("closing", match=Match(type=EVENT_TYPE), data=Step, action=SignalWithStart(
            workflow=WORKFLOW_TYPE, task_queue=task_queue,
            workflow_id=WORKFLOW_PREFIX + "{data.entity}",
        )),
    ])


router = make_router(os.environ.get("LOOM_FAULTS_TASK_QUEUE", "loom-faults"))


def closing_events(prefix: str, entities: int, per_entity: int) -> list[Event]:
    """``entities * per_entity`` events, interleaved; each entity's last is marked ``last``."""
    return [
        Event(id=f"{prefix}-{n}-{seq}", source=SOURCE, type=EVENT_TYPE,
              data={"entity": f"{prefix}-{n}", "seq": seq, "last": seq == per_entity - 1},
              extensions={"partitionkey": f"{prefix}-{n}"})
        for seq in range(per_entity)
        for n in range(entities)
    ]
