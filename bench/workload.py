"""The shape every measured path shares: the events, the route, the target workflow.

One event = one binary-mode CloudEvent of type ``bench.event`` whose data names its workflow
(``wf``, also the ``partitionkey`` and so the Kafka key), a sequence number and a fixed pad,
so the ceiling, the naive loop and the loom send signals of the same size to the same
trivial workflow.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from temporalio import workflow

from bridge.actions import SignalWithStart
from bridge.events import EVENT_SIGNAL, Event
from bridge.routing import Match, Route, Router

EVENT_TYPE = "bench.event"
SOURCE = "bench://producer"
WORKFLOW_TYPE = "BenchWorkflow"
PAD = "x" * 200  # a realistic small business payload (~300 bytes of data)


@workflow.defn(name=WORKFLOW_TYPE, sandboxed=False)
class BenchWorkflow:
    """Accepts routed events and stays open: the cheapest workflow a signal can reach."""

    def __init__(self) -> None:
        self.count = 0

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: False)
        return self.count  # pragma: no cover (never reached: the server is stopped)

    @workflow.signal(name=EVENT_SIGNAL)
    def on_event(self, payload: dict[str, Any]) -> None:
        self.count += 1


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


def bench_router(task_queue: str) -> Router:
    """The loom's one route: signal-with-start ``BenchWorkflow`` keyed by ``data.wf``."""
    return Router([
        Route(
            "bench",
            match=Match(type=EVENT_TYPE),
            data=BenchData,
            action=SignalWithStart(
                workflow=WORKFLOW_TYPE, task_queue=task_queue, workflow_id="{data.wf}"
            ),
        )
    ])


def naive_payload(headers: list[tuple[str, bytes]], value: bytes) -> tuple[str, dict[str, Any]]:
    """What a hand-written loop does with a record: ce_ headers + JSON data, no validation.

    Returns the workflow id and the signal payload, the same dict (CloudEvents JSON form) the
    loom signals, so both send the same bytes.
    """
    payload: dict[str, Any] = {}
    for name, raw in headers:
        if name.startswith("ce_"):
            payload[name[3:]] = raw.decode()
        elif name == "content-type":
            payload["datacontenttype"] = raw.decode()
    data = json.loads(value)
    payload["data"] = data
    return str(data["wf"]), payload
