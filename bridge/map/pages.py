"""The map's HTTP answers, on the sidecar's own port (see :mod:`bridge.sidecar.http`).

``/map`` (the page: the drawing, a search box, the live script), ``/map/graph.svg`` (the
drawing alone), ``/map/live.json`` (the live numbers), ``/map/map.js`` and ``/map/map.css``,
``/map/search?q=`` (a workflow id, event id or correlation id: a redirect to the timeline, or
a 404 page with the search box) and ``/map/workflows/{id}`` (:mod:`bridge.map.timeline`).

Drawing (layout and SVG) runs in a thread and is cached per graph version, so the event loop
never waits for it; live numbers are made from bounded counters. Every answer forbids any
origin but the sidecar's (Content-Security-Policy) and, when ``LOOM_MAP__TOKEN`` is set,
needs the token.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hmac
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from prometheus_client import Gauge
from temporalio.client import Client

from bridge.map._assets import CSS, ICON, SCRIPT
from bridge.map._page import page, search_form
from bridge.map.graph import (
    DLQ,
    Declared,
    Graph,
    live_graph,
    source_node,
    static_graph,
    unconsumed,
)
from bridge.map.recording import Recording
from bridge.map.svg import render, text
from bridge.map.timeline import timeline_page
from bridge.routing import Router
from bridge.settings import LoomSettings

__all__ = ["MapPages", "Response"]

#: ``(status, content type, body, extra headers)``
Response = tuple[int, str, bytes, list[tuple[str, str]]]

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_COOKIE = "loom_map"
log = logging.getLogger("loom.map")
WINDOW_S = 60.0


def _headers(extra: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    return [
        ("Content-Security-Policy", _CSP),
        ("X-Content-Type-Options", "nosniff"),
        ("Cache-Control", "no-store"),
        ("Referrer-Policy", "no-referrer"),
        *(extra or []),
    ]


@dataclass
class _Visibility:
    counts: dict[str, int] = field(default_factory=dict)
    at: float = 0.0
    task: asyncio.Task[None] | None = None


class MapPages:
    """Answers the map's requests for one sidecar.

    Args:
        router: The routes (the static layers).
        settings: The sidecar's settings (topics, emits, ``map``).
        recording: What this replica saw.
        client: Returns the Temporal client once connected (None before).
        lag: The ``loom_consumer_lag`` gauge (per topic and partition).
        declared: The declarations beside the router (emits, consumers).
        replica: Names this replica on the page (e.g. its group member and partitions).
    """

    def __init__(
        self,
        router: Router,
        settings: LoomSettings,
        recording: Recording,
        client: Callable[[], Client | None],
        *,
        lag: Gauge | None = None,
        declared: Declared | None = None,
        replica: Callable[[], str] = lambda: "this replica",
    ) -> None:
        self.router = router
        self.settings = settings
        self.recording = recording
        self.client = client
        self.lag = lag
        self.replica = replica
        self.static = static_graph(router, settings, declared or Declared())
        self._drawn: tuple[str, str] | None = None  # (version, svg)
        self._draw_lock = asyncio.Lock()
        # Totals as they were, for the rates over the last minute (from zero at the start).
        self._samples: deque[tuple[float, dict[str, int]]] = deque([(time.monotonic(), {})])
        self._visibility = _Visibility()
        self._matched: tuple[str, dict[str, list[str]]] = ("", {})

    # --- dispatch ------------------------------------------------------------------------------

    async def handle(self, method: str, target: str, headers: Mapping[str, str]) -> Response:
        """Answer one request whose path starts with ``/map``."""
        url = urlsplit(target)
        query = parse_qs(url.query)
        extra: list[tuple[str, str]] = []
        token = self.settings.map.token
        if token is not None:
            given = query.get("token", [None])[0] or _cookie(headers) or _bearer(headers)
            if given is None or not hmac.compare_digest(given, token.get_secret_value()):
                return 401, "text/plain; charset=utf-8", b"the map needs its token\n", _headers()
            if "token" in query:
                extra.append(("Set-Cookie", f"{_COOKIE}={quote(given)}; Path=/map; HttpOnly; SameSite=Strict"))
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"method not allowed\n", _headers()
        path = url.path.rstrip("/") or "/"
        status, ctype, body, more = await self._route(path, query)
        return status, ctype, body, _headers(extra + more)

    async def _route(self, path: str, query: Mapping[str, list[str]]) -> Response:
        if path == "/map":
            return 200, "text/html; charset=utf-8", await self._page(), []
        if path == "/map/graph.svg":
            version, svg = await self._draw()
            return 200, "image/svg+xml", svg.encode("utf-8"), [("X-Map-Version", version)]
        if path == "/map/live.json":
            return 200, "application/json", json.dumps(self.live()).encode(), []
        if path == "/map/map.js":
            return 200, "text/javascript; charset=utf-8", SCRIPT.encode(), []
        if path == "/map/icon.svg":
            return 200, "image/svg+xml", ICON.encode(), []
        if path == "/map/map.css":
            return 200, "text/css; charset=utf-8", CSS.encode(), []
        if path == "/map/search":
            return await self._search(query.get("q", [""])[0].strip())
        if path.startswith("/map/workflows/"):
            workflow_id = unquote(path[len("/map/workflows/"):])
            status, body = await timeline_page(
                workflow_id, self.recording, self.client(), self.settings
            )
            return status, "text/html; charset=utf-8", body, []
        return 404, "text/html; charset=utf-8", page("not found", "<p>No such page.</p>"), []

    async def _search(self, q: str) -> Response:
        found = self.recording.find(q) if q else None
        if found is None and q and await _exists(self.client(), q):
            found = q
        if found is not None:
            return 303, "text/plain", b"", [("Location", f"/map/workflows/{quote(found, safe='')}")]
        body = (
            f"<h1>Nothing found for {text(q)!s}</h1>" if q else "<h1>Search</h1>"
        ) + f"<p>{search_form(q)}</p>"
        return 404, "text/html; charset=utf-8", page("not found", body), []

    # --- drawing --------------------------------------------------------------------------------

    def graph(self) -> Graph:
        """The graph now: static layers plus what this replica saw."""
        return live_graph(self.static, self.recording.live)

    async def _draw(self) -> tuple[str, str]:
        graph = self.graph()
        version = graph.version
        async with self._draw_lock:
            if self._drawn is None or self._drawn[0] != version:
                lonely = unconsumed(graph)
                svg = await asyncio.to_thread(render, graph, lonely)
                self._drawn = (version, svg)
            return self._drawn

    async def _page(self) -> bytes:
        version, svg = await self._draw()
        legend = (
            '<p class="legend"><span>dashed amber: no route takes it / nothing consumes it'
            "</span><span>dashed: no traffic yet</span><span>red: dead letters, with their "
            "reasons</span><span>numbers: total · per minute (last minute)</span></p>"
        )
        body = (
            f'<p class="note"><span id="replica">{text(self.replica())}</span> · updated '
            f'<span id="updated">-</span></p>{legend}'
            f'<div id="graph" data-version="{version}">{svg}</div>'
        )
        return page("temporal-loom map", body, script=True)

    # --- live numbers ---------------------------------------------------------------------------

    def _totals(self, graph: Graph) -> dict[str, int]:
        live = self.recording.live
        totals: dict[str, int] = {}

        def add(key: str, n: int) -> None:
            totals[key] = totals.get(key, 0) + n

        for (topic, event_type), n in list(live.types.items()):
            add(f"topic:{topic}", n)
            for key in self._type_nodes(graph, str(event_type)):
                add(key, n)
        for (source, _topic), n in list(live.sources.items()):
            key = source_node(graph, str(source))
            add(key if key in graph.nodes else "source:(other)", n)
        for route, n in list(live.routes.items()):
            add(f"route:{route}", n)
        for (route, event_type, reason), n in list(live.dead.items()):
            add(DLQ, n)
            # The same edge as live_graph draws for it.
            if route is not None:
                src = f"route:{route}"
            elif f"type:{event_type}" in graph.nodes:
                src = f"type:{event_type}"
            else:
                src = "type:(undecodable)"
            add(f"dead:{src}\0{reason}", n)
        return totals

    def _type_nodes(self, graph: Graph, event_type: str) -> list[str]:
        # The type nodes (exact, prefix* or glob) an event type counts for; cached per graph.
        if self._matched[0] != graph.version:
            self._matched = (graph.version, {})
        found = self._matched[1].get(event_type)
        if found is None:
            found = [
                key for key, node in graph.nodes.items()
                if node.layer == 2
                and (fnmatch.fnmatchcase(event_type, node.label) if node.kind == "type"
                     else node.label == event_type)
            ]
            self._matched[1][event_type] = found
        return found

    def _rates(self, totals: dict[str, int]) -> dict[str, float]:
        now = time.monotonic()
        samples = self._samples
        if not samples or now - samples[-1][0] >= 2.0:
            samples.append((now, totals))
        while len(samples) > 1 and now - samples[1][0] >= WINDOW_S:
            samples.popleft()
        then, old = samples[0]
        span = max(now - then, 1.0)
        return {k: (v - old.get(k, 0)) * 60.0 / span for k, v in totals.items()}

    def live(self) -> dict[str, Any]:
        """The live numbers, by node and edge index of the current graph."""
        graph = self.graph()
        totals = self._totals(graph)
        rates = self._rates(totals)
        running = self._running(graph)
        lags = self._lags()
        nodes: dict[str, dict[str, Any]] = {}
        for i, (key, node) in enumerate(graph.nodes.items()):
            total = totals.get(key, 0)
            words = []
            if node.kind == "workflow":
                words.append(f"{running[node.label]} running" if node.label in running else "")
            elif node.kind not in ("emitted", "consumer") and node.layer != 6:
                # (the emitted side is the worker's: this sidecar does not see it)
                words.append(f"{total} · {rates.get(key, 0.0):.0f}/min")
            if node.kind == "topic" and node.layer == 1 and key[6:] in lags:
                words.append(f"lag {lags[key[6:]]}")
            if node.kind == "unrouted":
                words.append(node.detail)
            spike = key == DLQ and _spike(rates.get(key, 0.0), total, self.recording.started)
            nodes[str(i)] = {
                "text": " · ".join(w for w in words if w),
                "idle": node.kind == "route" and total == 0,
                "spike": spike,
            }
        edges: dict[str, dict[str, Any]] = {}
        for j, edge in enumerate(graph.edges.values()):
            if edge.dead:
                key = f"dead:{edge.src}\0{edge.label}"
                n = totals.get(key, 0)
                edges[str(j)] = {"text": f"{edge.label} ({n})", "busy": False,
                                 "spike": _spike(rates.get(key, 0.0), n, self.recording.started)}
            else:
                edges[str(j)] = {"busy": rates.get(edge.dst, 0.0) > 0 and rates.get(edge.src, 0.0) > 0}
        return {
            "version": graph.version,
            "nodes": nodes,
            "edges": edges,
            "replica": self.replica(),
            "updated": datetime.now(UTC).strftime("%H:%M:%S UTC"),
            "malformed_links": self.recording.live.malformed,
        }

    def _lags(self) -> dict[str, int]:
        out: dict[str, int] = {}
        if self.lag is None:
            return out
        for metric in self.lag.collect():
            for sample in metric.samples:
                topic = sample.labels.get("topic", "")
                out[topic] = out.get(topic, 0) + int(sample.value)
        return out

    def _running(self, graph: Graph) -> dict[str, int]:
        vis = self._visibility
        stale = time.monotonic() - vis.at > self.settings.map.visibility_ttl_s
        client = self.client()
        if stale and client is not None and (vis.task is None or vis.task.done()):
            types = [n.label for n in graph.nodes.values() if n.kind == "workflow"]
            vis.task = asyncio.get_running_loop().create_task(self._count(client, types))
        return vis.counts

    async def _count(self, client: Client, types: list[str]) -> None:
        counts: dict[str, int] = {}
        for workflow_type in types:
            name = workflow_type.replace("\\", "\\\\").replace("'", "\\'")
            try:
                found = await client.count_workflows(
                    f"WorkflowType = '{name}' AND ExecutionStatus = 'Running'"
                )
            except Exception as exc:  # visibility is optional: the map goes on without it
                log.debug("counting running %s workflows failed: %s", workflow_type, exc)
                continue
            counts[workflow_type] = found.count
        self._visibility.counts = counts
        self._visibility.at = time.monotonic()


def _spike(per_minute: float, total: int, started: float) -> bool:
    # At least 5 dead letters, at more than 5 a minute and more than twice the average minute
    # so far.
    minutes = max((time.time() - started) / 60.0, 1.0)
    return total >= 5 and per_minute >= 5 and per_minute > 2 * (total / minutes)


def _cookie(headers: Mapping[str, str]) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == _COOKIE:
            return unquote(value)
    return None


def _bearer(headers: Mapping[str, str]) -> str | None:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


async def _exists(client: Client | None, workflow_id: str) -> bool:
    if client is None:
        return False
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except Exception:
        return False
    return True
