"""The map's graph: static layers from the declarations, live nodes from what the loom saw.

Layers, left to right: event sources (grouped by prefix) -> topics -> event types -> routes
(with their action) -> workflow types -> emitted types -> their topics -> consumers. The
static part comes from the same declarations as the AsyncAPI document
(:mod:`bridge.cli.asyncapi`): the routes, the workflow classes they name, and the
``emits``/``emit_topics`` attributes beside the router; optionally ``emitted_by`` (workflow
type -> the types it emits; by default every declared emit is drawn from every workflow type
started by a route) and ``consumers`` (topic -> who consumes it outside the loom). The live
part adds what only traffic shows: sources, types no route takes, dead-letter edges with
their reasons.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge._loading import load_object
from bridge.actions import ActionKind
from bridge.map.recording import OTHER, Live
from bridge.routing import Route, Router
from bridge.settings import LoomSettings

__all__ = ["LAYERS", "Declared", "Edge", "Graph", "Node", "declared_beside", "live_graph", "source_group", "source_node", "static_graph"]

LAYERS = (
    "sources", "topics", "event types", "routes", "workflows", "emitted types", "topics out",
    "consumers",
)
#: Live nodes drawn per kind at most (the rest are one ``(other)`` node).
LIVE_LIMIT = 30
DLQ = "dlq"


@dataclass(frozen=True)
class Node:
    """One box: ``key`` is unique, ``label`` is what it says (raw text: escaped when drawn)."""

    key: str
    layer: int
    label: str
    kind: str
    detail: str = ""


@dataclass(frozen=True)
class Edge:
    """An arrow; ``dead`` edges go to the dead-letter topic and carry their reason."""

    src: str
    dst: str
    label: str = ""
    dead: bool = False


@dataclass
class Graph:
    """Nodes by key and edges, in a stable order."""

    nodes: dict[str, Node] = field(default_factory=dict)
    edges: dict[tuple[str, str, str], Edge] = field(default_factory=dict)

    def add(self, node: Node) -> str:
        self.nodes.setdefault(node.key, node)
        return node.key

    def link(self, src: str, dst: str, label: str = "", *, dead: bool = False) -> None:
        if src in self.nodes and dst in self.nodes:
            self.edges.setdefault((src, dst, label), Edge(src, dst, label, dead))

    def copy(self) -> Graph:
        return Graph(dict(self.nodes), dict(self.edges))

    @property
    def version(self) -> str:
        """Changes when a node or an edge is added (the page then fetches the new drawing)."""
        digest = hashlib.blake2b(digest_size=8)
        for key in self.nodes:
            digest.update(key.encode("utf-8", "surrogatepass") + b"\0")
        for src, dst, label in self.edges:
            digest.update(f"{src}\0{dst}\0{label}\1".encode("utf-8", "surrogatepass"))
        return digest.hexdigest()


@dataclass(frozen=True)
class Declared:
    """What the application declares beside its router (all optional)."""

    emits: Mapping[str, Any] = field(default_factory=dict)
    emit_topics: Mapping[str, str] = field(default_factory=dict)
    emitted_by: Mapping[str, Sequence[str]] = field(default_factory=dict)
    consumers: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @classmethod
    def load(cls, spec: str) -> Declared:
        """The attributes of the module named by ``LOOM_ROUTES`` (``module[:attr]``)."""
        module = load_object(spec.partition(":")[0], default_attr=None, setting="LOOM_ROUTES")
        return cls(
            emits=dict(getattr(module, "emits", None) or {}),
            emit_topics=dict(getattr(module, "emit_topics", None) or {}),
            emitted_by={k: list(v) for k, v in (getattr(module, "emitted_by", None) or {}).items()},
            consumers={k: list(v) for k, v in (getattr(module, "consumers", None) or {}).items()},
        )


def declared_beside(spec: str | None) -> Declared:
    """:meth:`Declared.load` of ``LOOM_ROUTES``, or nothing when the routes were handed over
    in code (or their module cannot be read again: the map then draws the routes alone)."""
    if not spec:
        return Declared()
    try:
        return Declared.load(spec)
    except Exception:
        return Declared()


def type_label(route: Route) -> str:
    """The event types a route's match selects (exact, ``prefix*`` or a glob)."""
    m = route.match
    if m.type is not None:
        return m.type
    if m.type_prefix is not None:
        return m.type_prefix + "*"
    return m.type_glob or "*"


def source_group(source: str) -> str:
    """The group a source is drawn in: its path without the last segment (``services/*``)."""
    head, sep, _ = source.rpartition("/")
    return f"{head}/*" if sep and head else source


def source_node(graph: Graph, source: str) -> str:
    """The key of the node a source counts for: a source a route names, else its group."""
    exact = f"source:{source}"
    return exact if exact in graph.nodes else f"source:{source_group(source)}"


def _workflow_of(route: Route, by_template: Mapping[str, str]) -> str | None:
    if route.workflow_type is not None:
        return route.workflow_type
    # A signal or cancel names its workflow by id: the type started under the same template.
    template = getattr(route.action, "workflow_id", None)
    return by_template.get(template) if isinstance(template, str) else None


def static_graph(router: Router, settings: LoomSettings, declared: Declared) -> Graph:
    """The layers every replica can draw from the declarations alone."""
    g = Graph()
    consumed = list(settings.kafka.topics)
    for topic in consumed:
        g.add(Node(f"topic:{topic}", 1, topic, "topic"))
    by_template = {
        str(r.action.workflow_id): r.workflow_type for r in router.routes
        if r.workflow_type is not None and isinstance(getattr(r.action, "workflow_id", None), str)
    }
    started: list[str] = []
    for route in router.routes:
        label = type_label(route)
        tkey = g.add(Node(f"type:{label}", 2, label, "type"))
        rkey = g.add(Node(f"route:{route.name}", 3, route.name, "route", _action(route.kind)))
        g.link(tkey, rkey)
        topics = [t for t in consumed if route.match.binds(t)] if route.match.topics else consumed
        for topic in topics:
            g.link(f"topic:{topic}", tkey)
        for source in _static_sources(route):
            skey = g.add(Node(f"source:{source}", 0, source, "source"))
            for topic in topics:
                g.link(skey, f"topic:{topic}")
        wf = _workflow_of(route, by_template)
        if wf is not None:
            g.link(rkey, g.add(Node(f"wf:{wf}", 4, wf, "workflow")))
            if route.workflow_type is not None and wf not in started:
                started.append(wf)
    emit_settings = settings.emit.with_defaults(dict(declared.emit_topics))
    for wf, types in _emitters(declared, started).items():
        wkey = g.add(Node(f"wf:{wf}", 4, wf, "workflow"))
        for etype in types:
            ekey = g.add(Node(f"emit:{etype}", 5, etype, "emitted"))
            g.link(wkey, ekey)
            out = emit_settings.topic_for(etype)
            if out is None:
                continue
            okey = g.add(Node(f"out:{out}", 6, out, "topic"))
            g.link(ekey, okey)
            for consumer in _consumers_of(router, declared, etype, out, consumed):
                g.link(okey, g.add(Node(f"consumer:{consumer}", 7, consumer, "consumer")))
    g.add(Node(DLQ, 4, settings.kafka.deadletter_topic, "dlq", "dead letters"))
    return g


def _action(kind: ActionKind) -> str:
    return kind.value


def _static_sources(route: Route) -> list[str]:
    source = getattr(route.match, "source", None)
    return [str(source)] if isinstance(source, str) else []


def _emitters(declared: Declared, started: list[str]) -> dict[str, list[str]]:
    if declared.emitted_by:
        return {wf: list(types) for wf, types in declared.emitted_by.items()}
    return {wf: list(declared.emits) for wf in started} if declared.emits else {}


def _consumers_of(
    router: Router, declared: Declared, etype: str, topic: str, consumed: Iterable[str]
) -> list[str]:
    names = list(declared.consumers.get(topic, ()))
    if topic in consumed:
        names += [
            f"route {r.name}" for r in router.routes
            if r.match._type_matches(etype) and (not r.match.topics or r.match.binds(topic))
        ]
    return names


def unconsumed(graph: Graph) -> set[str]:
    """Keys of emitted types whose topic nothing consumes (no route, no declared consumer)."""
    out_edges: dict[str, list[str]] = {}
    for src, dst, _ in graph.edges:
        out_edges.setdefault(src, []).append(dst)
    lonely = set()
    for key, node in graph.nodes.items():
        if node.kind != "emitted":
            continue
        topics = out_edges.get(key, [])
        if not any(out_edges.get(t) for t in topics):
            lonely.add(key)
    return lonely


def live_graph(static: Graph, live: Live) -> Graph:
    """``static`` plus what the traffic showed: sources, unrouted types, dead-letter edges."""
    g = static.copy()
    groups: dict[str, None] = {}
    for source, topic in list(live.sources):
        key = source_node(static, str(source))
        if key not in static.nodes:
            past = source == OTHER or (len(groups) >= LIVE_LIMIT and key[7:] not in groups)
            group = OTHER if past else key[7:]
            groups[group] = None
            key = g.add(Node(f"source:{group}", 0, group, "source"))
        g.link(key, f"topic:{topic}")
    unrouted = list(live.unrouted.items())
    for event_type, (_count, sample) in unrouted[:LIVE_LIMIT]:
        key = f"type:{event_type}"
        if key not in g.nodes:
            shown = sample if len(sample) <= 32 else sample[:31] + "\u2026"
            g.add(Node(key, 2, event_type, "unrouted", f"no route; e.g. id {shown}"))
    for topic, event_type in list(live.types):
        if f"type:{event_type}" in g.nodes:
            g.link(f"topic:{topic}", f"type:{event_type}")
    for route, event_type, reason in list(live.dead):
        if route is not None:
            src = g.add(Node(f"route:{route}", 3, str(route), "route"))
        elif f"type:{event_type}" in g.nodes:
            src = f"type:{event_type}"
        else:  # nothing decoded, or a type past the drawn ones
            src = g.add(Node("type:(undecodable)", 2, "(undecodable)", "unrouted"))
        g.link(src, DLQ, str(reason), dead=True)
    return g
