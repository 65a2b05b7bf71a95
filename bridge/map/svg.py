"""The map drawn as SVG on the server, and the escaping every page of the map goes through.

Whatever a producer puts in ``type`` or ``source`` (markup, control characters, lone
surrogates) reaches the page only through :func:`text`: lone surrogates and characters XML
cannot carry become U+FFFD, and markup is escaped. Elements are addressed by numbers
(``n3``, ``e7``), never by event text, so the live script handles numbers only.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable

from bridge.map.graph import LAYERS, Graph
from bridge.map.layout import MAX_CHARS, Box, place

__all__ = ["clean", "render", "text"]

# XML 1.0 refuses C0 controls (tab, CR, LF are allowed but would break a one-line label),
# U+FFFE and U+FFFF; C1 controls and DEL are allowed but invisible: shown as U+FFFD too.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ufffe\uffff]")


def clean(value: object) -> str:
    """``value`` as text safe in XML: no lone surrogates, no control characters."""
    raw = str(value)
    # A lone surrogate cannot be encoded; pairs go through UTF-16 and come back joined.
    fixed = raw.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return _UNSAFE.sub("\ufffd", fixed)


def text(value: object) -> str:
    """``value`` cleaned and escaped for HTML/SVG text and attribute values."""
    return html.escape(clean(value), quote=True)


def _short(label: str) -> str:
    return label if len(label) <= MAX_CHARS else label[: MAX_CHARS - 1] + "\u2026"


def _path(a: Box, b: Box) -> str:
    x1, y1 = a.x + a.w, a.y + a.h / 2
    x2, y2 = b.x, b.y + b.h / 2
    if x2 <= x1:  # same layer or backwards: loop around below
        x2, y2 = b.x + b.w / 2, b.y + b.h
    mid = (x1 + x2) / 2
    return f"M{x1:.1f},{y1:.1f} C{mid:.1f},{y1:.1f} {mid:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"


def render(graph: Graph, marked: Iterable[str] = ()) -> str:
    """The SVG of ``graph``: node ``i`` is ``<g id="n{i}">`` in ``graph.nodes`` order, edge
    ``j`` is ``<path id="e{j}">`` in ``graph.edges`` order; ``marked`` node keys get the
    ``lonely`` class (emitted types nothing consumes)."""
    keys = list(graph.nodes)
    index = {k: i for i, k in enumerate(keys)}
    layers: list[list[str]] = [[] for _ in LAYERS]
    for key, node in graph.nodes.items():
        layers[node.layer].append(key)
    edges = [(e.src, e.dst) for e in graph.edges.values()]
    labels = {
        k: min(len(n.label), MAX_CHARS) + (len(n.detail) + 1 if n.kind == "route" else 0)
        if n.kind != "unrouted" else max(min(len(n.label), MAX_CHARS), len(n.detail) + 14)
        for k, n in graph.nodes.items()
    }
    boxes, width, height = place(layers, edges, labels)
    lonely = set(marked)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="map" width="{width:.0f}" '
        f'height="{height + 24:.0f}" viewBox="0 -24 {width:.0f} {height + 24:.0f}">'
    ]
    xs = sorted({(boxes[layer[0]].x, name) for layer, name in zip(layers, LAYERS, strict=True) if layer})
    out += [f'<text class="layer" x="{x:.0f}" y="-8">{text(name)}</text>' for x, name in xs]
    for j, edge in enumerate(graph.edges.values()):
        a, b = boxes[edge.src], boxes[edge.dst]
        cls = "edge dead" if edge.dead else "edge"
        out.append(
            f'<path class="{cls}" id="e{j}" data-src="n{index[edge.src]}" '
            f'data-dst="n{index[edge.dst]}" d="{_path(a, b)}"/>'
        )
        if edge.dead:
            out.append(
                f'<text class="reason" id="r{j}" x="{(a.x + a.w + b.x) / 2:.0f}" '
                f'y="{(a.y + b.y) / 2 + a.h / 2 - 3:.0f}">{text(edge.label)}</text>'
            )
    for key in keys:
        node, box = graph.nodes[key], boxes[key]
        i = index[key]
        cls = f"node {node.kind}" + (" lonely" if key in lonely else "")
        tip = node.label + (f"\n{node.detail}" if node.detail else "")
        action = (
            f' <tspan class="action">{text(node.detail)}</tspan>'
            if node.kind == "route" and node.detail else ""
        )
        out.append(
            f'<g class="{cls}" id="n{i}" data-kind="{text(node.kind)}" data-label="{text(node.label)}">'
            f"<title>{text(tip)}</title>"
            f'<rect x="{box.x:.0f}" y="{box.y:.0f}" width="{box.w:.0f}" height="{box.h:.0f}" rx="4"/>'
            f'<text class="label" x="{box.x + 6:.0f}" y="{box.y + 11:.0f}">{text(_short(node.label))}'
            f"{action}</text>"
            f'<text class="num" id="c{i}" x="{box.x + 6:.0f}" y="{box.y + 22:.0f}">'
            f"{text(node.detail if node.kind == 'unrouted' else '')}</text></g>"
        )
    out.append("</svg>")
    return "".join(out)
