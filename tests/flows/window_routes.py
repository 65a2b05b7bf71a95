"""The routes of the windows tests, for ``loom run --routes flows.window_routes:router``: events
of type ``win.item`` to the collector or the debouncer (the ``wf`` field of their data), one
workflow per ``key``. The task queue comes from ``LOOM_FAULTS_TASK_QUEUE``."""

from __future__ import annotations

import os

from pydantic import BaseModel

from bridge.actions import SignalWithStart
from bridge.routing import Match, Route, Router
from flows.windows import ITEM, Collector, Debouncer


class WindowItem(BaseModel):
    """The data of a ``win.item`` event."""

    wf: str  # "collect" or "debounce"
    key: str
    seq: int
    sent_at: float = 0.0
    last: bool = False


def make_router(task_queue: str) -> Router:
    return Router([
        Route(name, Match(type=ITEM, subject=name), data=WindowItem, action=SignalWithStart(
            workflow=workflow, task_queue=task_queue, workflow_id=f"win-{name}-{{data.key}}",
        ))
        for name, workflow in (("collect", Collector), ("debounce", Debouncer))
    ])


router = make_router(os.environ.get("LOOM_FAULTS_TASK_QUEUE", "loom-windows"))
