"""The shape every measured path shares: the events, the route, the target workflow.

One event = one binary-mode CloudEvent of type ``bench.event`` whose data names its workflow
(``wf``, also the ``partitionkey`` and so the Kafka key), a sequence number and a fixed pad,
so every path (the ceiling, the naive loop, FastStream, the loom) sends the same events to
the same small workflow: a ``LoomWorkflow`` that takes each event from its inbox. The loom's
route gives it as a class, so the loom coalesces the events queued behind a workflow id into
one ``loom_events`` call (on by default for such a route); the other paths signal
``loom_event`` once per event, as a hand-written client does.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from temporalio import workflow

from bridge.actions import SignalWithStart
from bridge.events import Event
from bridge.routing import Match, Route, Router
from bridge.workflow import InboxState, LoomWorkflow

EVENT_TYPE = "bench.event"
SOURCE = "bench://producer"
WORKFLOW_TYPE = "BenchWorkflow"
PAD = "x" * 200  # a realistic small business payload (~300 bytes of data)


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


class BenchData(BaseModel):
    """The route's data model (validated by the loom, as a real route would)."""

    wf: str
    seq: int
    pad: str


def workflow_id(phase: str, n: int, workflows: int) -> str:
    return f"{phase}-wf-{n % workflows}"


def make_event(phase: str, n: int, workflows: int) -> Event:
    wf = workflow_id(phase, n, workflows)
    return Event(
        id=f"{phase}-{n}",
        source=SOURCE,
        type=EVENT_TYPE,
        time=datetime.now(UTC),
        datacontenttype="application/json",
        data={"wf": wf, "seq": n, "pad": PAD},
        extensions={"partitionkey": wf},
    )


def bench_router(task_queue: str, coalesce: bool | None = None) -> Router:
    """The loom's one route: signal-with-start ``BenchWorkflow`` keyed by ``data.wf``
    (coalescing by default: the workflow is a ``LoomWorkflow`` class; False turns it off)."""
    return Router([
        Route(
            "bench",
            match=Match(type=EVENT_TYPE),
            data=BenchData,
            action=SignalWithStart(
                workflow=BenchWorkflow, task_queue=task_queue, workflow_id="{data.wf}"
            ),
            coalesce=coalesce,
        )
    ])


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
