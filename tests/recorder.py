"""Test workflows that record the routed events they receive, and the workload around them:
route modules for a loom subprocess, known step events, publishing them, and reading back
what each workflow got.

Shared by the end-to-end, sidecar and fault tests. :class:`RecorderWorkflow` never
deduplicates (and has no handler for coalesced calls): the ids it recorded show exactly
what reached Temporal. :class:`InboxRecorderWorkflow` is a ``LoomWorkflow``: routes to it
coalesce, and it records what its inbox lets through (each event once, in order), which is
the guarantee when a redelivered batch was cut differently; it counts the repeats dropped.
The workflows live in :mod:`recorders` (a light module: the sandbox re-imports it per run).
"""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kit import eventually
from recorders import INBOX_RECORDER, RECORDER, InboxRecorderWorkflow, RecorderWorkflow
from temporalio.client import Client

from bridge.events import Event
from bridge.kafka.binding import encode

__all__ = [
    "INBOX_RECORDER",
    "RECORDER",
    "ROUTES_EMPTY",
    "ROUTES_WITH_STEP",
    "InboxRecorderWorkflow",
    "RecorderWorkflow",
    "expected_by_workflow",
    "publish",
    "query_all",
    "step_events",
    "wait_delivered",
    "write_routes",
]

# --- route modules for a loom subprocess -------------------------------------------------------

#: A routes module as a user writes one: ``test.step`` to the workflow type ``wf`` on the task
#: queue ``tq``, workflow id ``cli-<data.entity>`` (for ``loom run --routes`` in a subprocess).
ROUTES_WITH_STEP = '''
from pydantic import BaseModel
from bridge.actions import SignalWithStart
from bridge.routing import Match, Route, Router

class Step(BaseModel):
    """One step of an entity."""
    entity: str
    seq: int

router = Router([
    Route("step", match=Match(type="test.step"), data=Step,
          action=SignalWithStart(workflow={wf!r}, task_queue={tq!r},
                                 workflow_id="cli-{{data.entity}}")),
])
'''

#: A routes module without routes.
ROUTES_EMPTY = '''
from bridge.routing import Router
router = Router([])
'''


def write_routes(directory: Path, source: str, **params: str) -> str:
    """Write a routes module under ``directory``; returns its module name."""
    name = f"loomtest_routes_{uuid.uuid4().hex[:10]}"
    text = source.format(**params) if params else source
    (directory / f"{name}.py").write_text(textwrap.dedent(text))
    return name


# --- the workload -----------------------------------------------------------------------------


def step_events(
    prefix: str, entities: int, per_entity: int, *, type: str, source: str
) -> list[Event]:
    """``entities * per_entity`` events, interleaved, each entity's in ``seq`` order."""
    events = []
    for seq in range(per_entity):
        for n in range(entities):
            entity = f"{prefix}-{n}"
            events.append(
                Event(
                    id=f"{entity}-{seq}",
                    source=source,
                    type=type,
                    data={"entity": entity, "seq": seq},
                    extensions={"partitionkey": entity},
                )
            )
    return events


def expected_by_workflow(events: Iterable[Event], workflow_prefix: str) -> dict[str, list[str]]:
    """The ids each workflow ``<workflow_prefix><data.entity>`` should record, in order."""
    out: dict[str, list[str]] = defaultdict(list)
    for event in events:
        out[workflow_prefix + str(event.data["entity"])].append(event.id)
    return dict(out)


async def publish(producer: Any, topic: str, events: Sequence[Event]) -> None:
    """Send ``events`` (binary mode, key = partitionkey) and wait for every ack."""
    futures = []
    for event in events:
        key, value, headers = encode(event)
        futures.append(await producer.send(topic, value=value, key=key, headers=headers))
    await asyncio.gather(*futures)


async def query_all(client: Client, workflow_ids: Iterable[str]) -> dict[str, list[str]]:
    """The received ids of every workflow (empty for a workflow that never started)."""
    sem = asyncio.Semaphore(32)

    async def one(wf_id: str) -> tuple[str, list[str]]:
        async with sem:
            try:
                got = await client.get_workflow_handle(wf_id).query(RecorderWorkflow.events)
            except Exception:
                return wf_id, []
            return wf_id, list(got)

    return dict(await asyncio.gather(*(one(w) for w in workflow_ids)))


async def wait_delivered(
    client: Client, expected: Mapping[str, Sequence[str]], timeout: float
) -> dict[str, list[str]]:
    """Query until every workflow holds at least its expected ids (or ``timeout``).

    Returns what each workflow held then, also after a timeout: the caller's comparison with
    ``expected`` shows what was lost, duplicated or out of order.
    """
    seen: dict[str, list[str]] = {}

    def short(workflows: Iterable[str]) -> set[str]:
        return {w for w in workflows if len(set(seen.get(w, ()))) < len(expected[w])}

    async def missing() -> set[str]:
        seen.update(await query_all(client, short(expected)))
        return short(expected)

    with contextlib.suppress(AssertionError):
        await eventually(missing, until=lambda pending: not pending, timeout=timeout, interval=0.5)
    return seen
