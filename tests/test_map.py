"""The choreography map without servers: the recording's bounds, the graph, the layout, the
escaping of hostile input, and the pages (token, search, 404) over a real HTTP port."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import xml.dom.minidom
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import SecretStr

from bridge.actions import ActionKind, Invocation, Outcome
from bridge.events import CAUSATION_ID, CORRELATION_ID, Event
from bridge.kafka.record import Record
from bridge.map.graph import Declared, live_graph, static_graph, unconsumed
from bridge.map.layout import place
from bridge.map.pages import MapPages
from bridge.map.recording import KEY_LIMIT, Recording
from bridge.map.svg import clean, render, text
from bridge.map.timeline import anchor
from bridge.settings import LoomSettings, MapSettings
from bridge.sidecar.http import HealthServer
from routes import consumers as declared_consumers
from routes import emit_topics, emits, emitted_by, router

TOPICS = ["orders", "payments", "inventory", "shipping"]


def settings_(**map_settings: Any) -> LoomSettings:
    return LoomSettings(kafka={"topics": TOPICS}, map=MapSettings(**map_settings))


def declared() -> Declared:
    return Declared(emits=emits, emit_topics=emit_topics, emitted_by=emitted_by,
                    consumers=declared_consumers)


def record(offset: int = 0, topic: str = "orders", value: bytes = b"{}") -> Record:
    return Record(topic=topic, partition=0, offset=offset, key=None, value=value, headers=())


def event(type: str = "order.placed", id: str = "e-1", source: str = "shop/web", **ext: Any) -> Event:
    return Event(id=id, source=source, type=type, data={"order_id": "1"}, extensions=ext)


def inv(ev: Event, wid: str = "order-1", route: str = "order-placed") -> Invocation:
    return Invocation(kind=ActionKind.SIGNAL_WITH_START, route=route, event=ev, workflow_id=wid,
                      request_id="r")


# --- the recording ------------------------------------------------------------------------------


def test_the_ring_keeps_its_bound_in_entries_and_counts_evictions() -> None:
    rec_registry = CollectorRegistry()
    rec = Recording(max_entries=10, registry=rec_registry)
    for n in range(25):
        ev = event(id=f"e-{n}")
        rec.received(record(n), ev, [inv(ev)])
    assert len(rec.ring) == 10
    assert rec.evictions == 15
    assert generate_latest(rec_registry).count(b"loom_map_evicted_total 15.0") == 1
    assert [e[7] for e in rec.ring] == [f"e-{n}" for n in range(15, 25)]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.text(max_size=300), min_size=1, max_size=60), st.integers(2_000, 20_000))
def test_the_ring_stays_within_its_bytes(ids: list[str], bound: int) -> None:
    rec = Recording(max_bytes=bound, registry=CollectorRegistry())
    for n, event_id in enumerate(ids):
        ev = event(id=event_id)
        rec.received(record(n), ev, [inv(ev)])
        assert rec.bytes <= bound
        assert rec.bytes == sum(rec._sizes)


def test_a_recording_that_is_off_records_nothing() -> None:
    rec = Recording(enabled=False, registry=CollectorRegistry())
    ev = event()
    rec.received(record(), ev, [inv(ev)])
    rec.done(inv(ev), Outcome.DELIVERED)
    assert not rec.ring and not rec.live.types


def test_malformed_links_are_counted_and_ignored_but_the_event_is_recorded() -> None:
    rec = Recording(registry=CollectorRegistry())
    bad = [event(id="a", **{CORRELATION_ID: ""}), Event(id="b", source="s", type="t", extensions={CAUSATION_ID: 5}),
           event(id="c", **{CORRELATION_ID: "x" * 1025, CAUSATION_ID: "fine"})]
    for n, ev in enumerate(bad):
        rec.received(record(n), ev, [inv(ev)])
    assert rec.live.malformed == 3
    assert rec.malformed_links.labels("correlationid")._value.get() == 2
    assert [(e[7], e[9], e[10]) for e in rec.ring] == [("a", None, None), ("b", None, None),
                                                      ("c", None, "fine")]


def test_counters_of_hostile_keys_are_bounded() -> None:
    rec = Recording(registry=CollectorRegistry())
    for n in range(KEY_LIMIT + 50):
        rec.received(record(n), event(type=f"t{n}", source=f"s{n}"), [])
    assert len(rec.live.types) == KEY_LIMIT + 1  # the rest under "(other)"
    assert len(rec.live.unrouted) == KEY_LIMIT


def test_data_is_kept_only_when_allowed() -> None:
    for keep in (False, True):
        rec = Recording(keep_data=keep, registry=CollectorRegistry())
        ev = event()
        rec.received(record(), ev, [inv(ev)])
        assert (rec.ring[0][12] is not None) is keep


def test_search_finds_by_workflow_event_and_correlation_id() -> None:
    rec = Recording(registry=CollectorRegistry())
    ev = event(id="e-9", **{CORRELATION_ID: "flow-1"})
    rec.received(record(), ev, [inv(ev, wid="order-9")])
    assert rec.find("order-9") == rec.find("e-9") == rec.find("flow-1") == "order-9"
    assert rec.find("nothing") is None


# --- the graph and its drawing -------------------------------------------------------------------------


def test_the_static_graph_holds_the_layers_of_the_reference_app() -> None:
    g = static_graph(router, settings_(), declared())
    kinds = {n.key: n.kind for n in g.nodes.values()}
    for route in router.routes:
        assert kinds[f"route:{route.name}"] == "route"
    assert kinds["wf:OrderSaga"] == kinds["wf:CustomerCredit"] == "workflow"
    assert ("route:payment-replies", "wf:OrderSaga", "") in g.edges  # a signal, by id template
    assert ("emit:inventory.reserve", "out:inventory.commands", "") in g.edges
    assert ("out:inventory.commands", "consumer:services/inventory", "") in g.edges
    # The outcomes go to a topic nobody reads in the demo: marked.
    assert unconsumed(g) == {"emit:order.completed", "emit:order.compensated",
                             "emit:order.cancellation-confirmed"}


def test_the_live_graph_adds_unrouted_types_sources_and_dead_letter_reasons() -> None:
    rec = Recording(registry=CollectorRegistry())
    rec.received(record(), event(type="order.shipped", id="x-1", source="legacy/erp"), [])
    ev = event()
    rec.received(record(1), ev, [inv(ev)])
    rec.dead_lettered(record(1), ev, "order-placed", "data-invalid", "order-1")
    static = static_graph(router, settings_(), declared())
    g = live_graph(static, rec.live)
    assert g.nodes["type:order.shipped"].kind == "unrouted"
    assert "x-1" in g.nodes["type:order.shipped"].detail
    assert "source:legacy/*" in g.nodes
    assert g.edges[("route:order-placed", "dlq", "data-invalid")].dead
    assert g.version != static.version


def test_the_layout_is_deterministic_and_keeps_boxes_apart() -> None:
    layers = [["a", "b", "c"], ["x", "y"], ["p", "q", "r", "s"]]
    edges = [("a", "y"), ("b", "x"), ("c", "x"), ("x", "s"), ("y", "p")]
    first = place(layers, edges, {})
    assert first == place(layers, edges, {})
    boxes = first[0]
    for layer in layers:
        ys = sorted(boxes[n].y for n in layer)
        assert all(b - a >= boxes[layer[0]].h for a, b in itertools.pairwise(ys))
    # Barycenters untangle the crossing a-y / b-x.
    assert boxes["y"].y < boxes["x"].y


def test_fifty_routes_draw_in_one_readable_column() -> None:
    from bridge.actions import Signal
    from bridge.routing import Match, Route, Router

    many = Router([Route(f"r{n}", Match(type=f"t.{n}"), Signal(workflow_id="w-{id}"))
                   for n in range(50)])
    svg = render(static_graph(many, settings_(), Declared()))
    xml.dom.minidom.parseString(svg)  # noqa: S318 (our own output)
    assert svg.count('class="node route"') == 50


HOSTILE = [
    '<script>alert(1)</script>',
    '"><img src=x onerror=alert(1)>',
    "ctrl\x00\x07\x1b[31m\x7f\x85end",
    "lone \ud800 surrogate \udfff",
    "]]><svg onload=alert(1)>",
]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_types_and_sources_are_escaped_in_valid_svg(hostile: str) -> None:
    rec = Recording(registry=CollectorRegistry())
    rec.received(record(), event(type=hostile, id=hostile, source=hostile), [])
    rec.dead_lettered(record(), event(type=hostile), None, hostile, None)
    svg = render(live_graph(static_graph(router, settings_(), declared()), rec.live))
    dom = xml.dom.minidom.parseString(svg.encode("utf-8"))  # noqa: S318 (well-formed: no control character)
    elements = dom.getElementsByTagName("*")
    assert {e.tagName for e in elements} <= {"svg", "g", "title", "rect", "text", "tspan", "path"}
    assert not [a for e in elements for a in dict(e.attributes.items()) if a.lower().startswith("on")]
    labels = [e.getAttribute("data-label") for e in elements if e.getAttribute("data-label")]
    assert clean(hostile) in labels  # shown, as text
    assert "\ud800" not in clean(hostile) and "\x00" not in clean(hostile)


@given(st.text())
def test_text_never_leaves_markup_or_unencodable_characters(value: str) -> None:
    out = text(value)
    assert "<" not in out and ">" not in out and '"' not in out
    out.encode("utf-8")  # no lone surrogate
    assert anchor(value).startswith("ev-") and re.fullmatch(r"ev-[0-9a-f]{16}", anchor(value))


# --- the pages, over the sidecar's HTTP server -----------------------------------------------------------


async def get(port: int, target: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    found = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), found, body


async def serve(pages: MapPages) -> HealthServer:
    server = HealthServer(lambda: None, CollectorRegistry(), port=0)
    server.add_site("/map", pages.handle)
    await server.start()
    return server


async def test_pages_answer_with_a_strict_policy_and_a_404_search_page() -> None:
    rec = Recording(registry=CollectorRegistry())
    ev = event(id="e-7", **{CORRELATION_ID: "flow-7"})
    rec.received(record(), ev, [inv(ev, wid="order-7")])
    rec.call(inv(ev, wid="order-7"))
    rec.done(inv(ev, wid="order-7"), Outcome.DELIVERED)
    server = await serve(MapPages(router, settings_(), rec, lambda: None, declared=declared()))
    try:
        status, headers, body = await get(server.port, "/map")
        assert status == 200 and b'<script src="/map/map.js">' in body
        assert "script-src 'self'" in headers["content-security-policy"]
        status, _, body = await get(server.port, "/map/live.json")
        live = json.loads(body)
        assert status == 200 and live["nodes"] and "its own" not in live["replica"]
        status, headers, _ = await get(server.port, "/map/search?q=flow-7")
        assert (status, headers["location"]) == (303, "/map/workflows/order-7")
        status, _, body = await get(server.port, "/map/workflows/order-7")
        assert status == 200 and b"delivered (call 1)" in body and b"e-7" in body
        status, _, body = await get(server.port, "/map/workflows/%3Cscript%3Eno")
        assert status == 404 and b'name="q"' in body and b"&lt;script&gt;no" in body
        assert (await get(server.port, "/livez"))[0] == 503  # the probes are still there
    finally:
        await server.stop()


async def test_a_token_guards_every_page_of_the_map() -> None:
    rec = Recording(registry=CollectorRegistry())
    server = await serve(MapPages(router, settings_(token=SecretStr("s3cret")), rec, lambda: None))
    try:
        assert (await get(server.port, "/map"))[0] == 401
        assert (await get(server.port, "/map/live.json?token=wrong"))[0] == 401
        status, headers, _ = await get(server.port, "/map?token=s3cret")
        assert status == 200 and headers["set-cookie"].startswith("loom_map=s3cret;")
        assert (await get(server.port, "/map/live.json", {"Cookie": "loom_map=s3cret"}))[0] == 200
        assert (await get(server.port, "/map", {"Authorization": "Bearer s3cret"}))[0] == 200
    finally:
        await server.stop()


def test_a_burst_of_dead_letters_is_a_spike_and_a_trickle_is_not() -> None:
    rec = Recording(registry=CollectorRegistry())
    rec.started -= 3600  # an hour of quiet before
    pages = MapPages(router, settings_(), rec, lambda: None, declared=declared())
    dlq = list(pages.graph().nodes).index("dlq")
    assert pages.live()["nodes"][str(dlq)]["spike"] is False
    for n in range(30):
        rec.dead_lettered(record(n), event(id=f"d{n}"), "order-placed", "data-validation", None)
    live = pages.live()
    dlq = list(pages.graph().nodes).index("dlq")
    assert live["nodes"][str(dlq)]["spike"] is True
    edges = list(pages.graph().edges)
    edge = edges.index(("route:order-placed", "dlq", "data-validation"))
    assert live["edges"][str(edge)] == {"text": "data-validation (30)", "busy": False, "spike": True}


async def test_a_timeline_says_which_call_carried_coalesced_events() -> None:
    import dataclasses

    from bridge.map.timeline import timeline_page

    rec = Recording(registry=CollectorRegistry())
    events = [event(id=f"c-{n}") for n in range(3)]
    invs = [inv(ev, wid="order-3") for ev in events]
    for n, (ev, one) in enumerate(zip(events, invs, strict=True)):
        rec.received(record(n), ev, [one])
    rec.call(dataclasses.replace(invs[0], batch=tuple(invs)))
    for one in invs[:2]:
        rec.done(one, Outcome.DELIVERED)
    rec.dead_lettered(record(2), events[2], "order-placed", "payload-too-large", "order-3")
    status, body = await timeline_page("order-3", rec, None, settings_())
    page = body.decode()
    assert status == 200
    assert page.count("delivered, coalesced into call 1 (3 events)") == 2
    assert "dead-lettered: payload-too-large" in page
    assert 'id="temporal-ui" href="http://localhost:8233/namespaces/default/workflows/order-3"' in page
