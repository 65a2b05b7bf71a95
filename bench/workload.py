"""The shape every measured path shares: the events, the route, the target workflow.

One event = one binary-mode CloudEvent of type ``bench.event`` whose data names its workflow
(``wf``, also the ``partitionkey`` and so the Kafka key), a sequence number and a fixed pad,
so every path (the ceiling, the naive loop, FastStream, the loom) sends the same events to
the same small workflow: a ``LoomWorkflow`` that takes each event from its inbox. The loom's
route gives it as a class, so the loom coalesces the events queued behind a workflow id into
one ``loom_events`` call (on by default for such a route); the other paths signal
``loom_event`` once per event, as a hand-written client does.

``ROUTES`` names the loom's route shapes: ``class`` (the above), ``byname`` (the same
signal-with-start with the workflow given by name, as a team with Go or Java workflows writes
it: such a route does not coalesce) and ``uws`` (update-with-start by name: never coalesces,
each update waits for its result). ``decoys`` adds routes that never match (the growth table).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from temporalio import workflow

from bridge.actions import SignalWithStart, UpdateWithStart
from bridge.events import Event
from bridge.routing import Match, Route, Router
from bridge.workflow import InboxState, LoomWorkflow

EVENT_TYPE = "bench.event"
SOURCE = "bench://producer"
WORKFLOW_TYPE = "BenchWorkflow"
PAD = "x" * 200  # a realistic small business payload (~300 bytes of data)
ROUTES = ("class", "byname", "uws")


@workflow.defn(name=WORKFLOW_TYPE, sandboxed=False)
class BenchWorkflow(LoomWorkflow):
    """Takes every routed event from its inbox (deduplicated, in order) and stays open,
    continuing as new when the inbox asks (a hot id gets thousands of signals)."""

    def __init__(self) -> None:
        self.count = 0

    @workflow.run
    async def run(self, carried: InboxState | None = None) -> int:
        if carried is not None:
            self.inbox.restore(carried)
        while True:
            await self.inbox.next()
            self.count += 1
            await self.inbox.continue_as_new_if_needed(lambda state: state)

    def on_update(self, event: Event) -> int:
        """The update of update-with-start routes: a small answer, as a reply would carry."""
        self.count += 1
        return self.count


class BenchData(BaseModel):
    """The route's data model (validated by the loom, as a real route would)."""

    wf: str
    seq: int
    pad: str


def workflow_id(phase: str, n: int, workflows: int) -> str:
    return f"{phase}-wf-{n % workflows}"


def make_event(phase: str, n: int, workflows: int, pad: str = PAD) -> Event:
    wf = workflow_id(phase, n, workflows)
    return Event(
        id=f"{phase}-{n}",
        source=SOURCE,
        type=EVENT_TYPE,
        time=datetime.now(UTC),
        datacontenttype="application/json",
        data={"wf": wf, "seq": n, "pad": pad},
        extensions={"partitionkey": wf},
    )


def bench_router(task_queue: str, coalesce: bool | None = None, route: str = "class",
                 decoys: int = 0) -> Router:
    """The loom's route to ``BenchWorkflow`` keyed by ``data.wf``, of shape ``route`` (see
    ``ROUTES``; ``class`` coalesces by default, False turns it off), after ``decoys`` routes
    of other exact types that never match (the router's index must keep their cost flat)."""
    action: SignalWithStart | UpdateWithStart
    if route == "class":
        action = SignalWithStart(
            workflow=BenchWorkflow, task_queue=task_queue, workflow_id="{data.wf}"
        )
    elif route == "byname":
        action = SignalWithStart(
            workflow=WORKFLOW_TYPE, task_queue=task_queue, workflow_id="{data.wf}"
        )
    elif route == "uws":
        action = UpdateWithStart(
            workflow=WORKFLOW_TYPE, task_queue=task_queue, workflow_id="{data.wf}"
        )
    else:
        raise ValueError(f"unknown bench route {route!r}: one of {ROUTES}")
    decoy = SignalWithStart(workflow=WORKFLOW_TYPE, task_queue=task_queue, workflow_id="{subject}")
    routes = [Route(f"decoy-{i}", match=Match(type=f"bench.decoy{i}.happened"), action=decoy)
              for i in range(decoys)]
    routes.append(Route("bench", match=Match(type=EVENT_TYPE), data=BenchData, action=action,
                        coalesce=coalesce if route == "class" else None))
    return Router(routes)


def naive_payload(headers: list[tuple[str, bytes]], value: bytes) -> tuple[str, dict[str, Any]]:
    """What a hand-written loop does with a record: ce_ headers + JSON data, no validation.

    Returns the workflow id and the signal payload, the same dict (CloudEvents JSON form) the
    loom signals, so both send the same bytes.
    """
    return ce_payload(headers, json.loads(value))


def ce_payload(headers: list[tuple[str, bytes]], data: Any) -> tuple[str, dict[str, Any]]:
    """The workflow id and signal payload of a binary-mode record whose data is decoded."""
    payload: dict[str, Any] = {}
    for name, raw in headers:
        if name.startswith("ce_"):
            payload[name[3:]] = raw.decode()
        elif name == "content-type":
            payload["datacontenttype"] = raw.decode()
    payload["data"] = data
    return str(data["wf"]), payload
