"""The timeline of one workflow instance: ``/map/workflows/{id}``.

Joins two sources, in time order: the sidecar's ring (events received with their topic,
partition, offset and outcome; the calls made to Temporal; dead letters) and the workflow's
history in Temporal (the events it emitted through ``loom.publish``, each with its
``causationid``). An emitted event links to its cause's row, a reply to the emitted event it
answers. The status comes from Temporal, with a link to the workflow's page in the Temporal
UI. An id neither knows is a 404 page with the search box.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from bridge.events import CAUSATION, CAUSATION_ID, CORRELATION_ID, link_value
from bridge.map._page import page, search_form
from bridge.map.recording import Entry, Recording
from bridge.map.svg import text
from bridge.settings import LoomSettings

__all__ = ["anchor", "timeline_page"]

log = logging.getLogger("loom.map")

PUBLISH = "loom.publish"
HISTORY_LIMIT = 2_000  # history events read per page at most (a long run shows its start)


def anchor(event_id: str) -> str:
    """The HTML id of an event's row (a digest: any event id gives a safe fragment)."""
    digest = hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=8)
    return "ev-" + digest.hexdigest()


@dataclass
class _Status:
    status: str
    run_id: str | None
    workflow_type: str | None


async def _temporal(client: Client | None, workflow_id: str) -> tuple[_Status | None, list[tuple[float, dict[str, Any]]]]:
    """The workflow's status and the events it emitted (time, CloudEvent payload)."""
    if client is None:
        return None, []
    handle = client.get_workflow_handle(workflow_id)
    try:
        described = await handle.describe()
    except Exception:
        return None, []
    status = _Status(
        described.status.name if described.status is not None else "UNKNOWN",
        described.run_id, described.workflow_type,
    )
    emitted: list[tuple[float, dict[str, Any]]] = []
    try:
        seen = 0
        async for event in handle.fetch_history_events():
            seen += 1
            if seen > HISTORY_LIMIT:
                break
            if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                continue
            attrs = event.activity_task_scheduled_event_attributes
            if attrs.activity_type.name != PUBLISH or not attrs.input.payloads:
                continue
            (request,) = await client.data_converter.decode(attrs.input.payloads[:1])
            payload = request.get("event") if isinstance(request, dict) else None
            if isinstance(payload, dict):
                emitted.append((event.event_time.ToDatetime(tzinfo=UTC).timestamp(), payload))
    except Exception as exc:  # history unreadable: the ring's rows still show
        log.debug("reading the history of %s failed: %s", workflow_id, exc)
    return status, emitted


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S.%f")[:-3]


def _cause(cause: Any, known: set[str]) -> str:
    cause = link_value(cause)
    if cause is None:
        return ""
    if cause in known:
        return f'<a class="cause" href="#{anchor(cause)}">{text(cause)}</a>'
    return text(cause)


def _rows(entries: list[Entry], emitted: list[tuple[float, dict[str, Any]]], show_data: bool) -> list[tuple[float, str]]:
    calls: dict[str, tuple[int, int]] = {}
    outcomes: dict[str, str] = {}
    for e in entries:
        if e[0] == "call":
            for event_id in e[6]:
                calls[event_id] = (e[3], len(e[6]))
        elif e[0] == "out":
            outcomes[e[3]] = str(e[5])
        elif e[0] == "dead" and e[7] is not None:
            outcomes[e[7]] = f"dead-lettered: {e[9]}"
    emitted_ids = {str(p.get("id")) for _, p in emitted}
    known = {str(e[7]) for e in entries if e[0] == "in"} | emitted_ids
    rows: list[tuple[float, str]] = []
    for e in entries:
        kind = e[0]
        if kind == "in":
            event_id = str(e[7])
            outcome = outcomes.get(event_id, "in flight")
            if event_id in calls and not outcome.startswith("dead"):
                number, size = calls[event_id]
                outcome += f", coalesced into call {number} ({size} events)" if size > 1 else f" (call {number})"
            cause = e[10]
            what = "reply" if cause in emitted_ids else "received"
            data = f"<pre>{text(json.dumps(e[12], default=str))}</pre>" if show_data and e[12] is not None else ""
            rows.append((e[1], (
                f'<tr class="in" id="{anchor(event_id)}"><td>{_when(e[1])}</td><td>{what}</td>'
                f"<td>{text(e[6])}</td><td>{text(event_id)}</td><td>{text(e[8])}</td>"
                f"<td>{text(e[3])}[{e[4]}]@{e[5]}</td><td>{text(outcome)}</td>"
                f"<td>{_cause(cause, known)}</td><td>{text(e[11] or '')}{data}</td></tr>"
            )))
        elif kind == "call":
            rows.append((e[1], (
                f'<tr class="call"><td>{_when(e[1])}</td><td>call {e[3]}</td><td>{text(e[4])}</td>'
                f"<td colspan=\"4\">{len(e[6])} event(s) to Temporal</td><td></td>"
                f"<td>{text(e[5])}</td></tr>"
            )))
        elif kind == "dead":
            rows.append((e[1], (
                f'<tr class="dead"><td>{_when(e[1])}</td><td>dead-lettered</td><td>{text(e[6] or "")}</td>'
                f"<td>{text(e[7] or '')}</td><td></td><td>{text(e[3])}[{e[4]}]@{e[5]}</td>"
                f"<td>{text(e[9])}</td><td></td><td>{text(e[8] or '')}</td></tr>"
            )))
    for t, p in emitted:
        event_id = str(p.get("id"))
        cause = p.get(CAUSATION_ID, p.get(CAUSATION))
        rows.append((t, (
            f'<tr class="emitted" id="{anchor(event_id)}"><td>{_when(t)}</td><td>emitted</td>'
            f"<td>{text(p.get('type'))}</td><td>{text(event_id)}</td><td>{text(p.get('source'))}</td>"
            f"<td></td><td>correlation {text(p.get(CORRELATION_ID, ''))}</td>"
            f"<td>{_cause(cause, known)}</td><td></td></tr>"
        )))
    rows.sort(key=lambda r: r[0])
    return rows


async def timeline_page(
    workflow_id: str, recording: Recording, client: Client | None, settings: LoomSettings
) -> tuple[int, bytes]:
    """The timeline page of ``workflow_id`` (status 200), or the 404 page."""
    entries = [e for e in recording.snapshot() if e[2] == workflow_id]
    status, emitted = await _temporal(client, workflow_id)
    if not entries and status is None:
        body = f"<h1>No workflow {text(workflow_id)}</h1><p>{search_form(workflow_id)}</p>"
        return 404, page("not found", body)
    rows = _rows(entries, emitted, settings.map.show_data)
    ns = client.namespace if client is not None else settings.temporal.namespace or "default"
    link = f"{settings.map.temporal_ui.rstrip('/')}/namespaces/{quote(ns, safe='')}/workflows/{quote(workflow_id, safe='')}"
    if status is not None and status.run_id:
        link += f"/{quote(status.run_id, safe='')}/history"
    state = status.status if status is not None else "unknown to Temporal"
    kind = f" ({text(status.workflow_type)})" if status is not None and status.workflow_type else ""
    body = (
        f"<h1>{text(workflow_id)}{kind}</h1>"
        f'<p>Status: <span class="status" id="status">{text(state)}</span> · '
        f'<a id="temporal-ui" href="{text(link)}">open in the Temporal UI</a> · '
        f"{len(entries)} record(s) in this replica's ring</p>"
        "<table><thead><tr><th>time (UTC)</th><th>what</th><th>type</th><th>id</th>"
        "<th>source</th><th>topic[partition]@offset</th><th>outcome</th><th>caused by</th>"
        "<th>route</th></tr></thead><tbody>" + "".join(r for _, r in rows) + "</tbody></table>"
    )
    return 200, page(f"timeline {workflow_id}", body)
