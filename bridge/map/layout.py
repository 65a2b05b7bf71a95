"""Layered (Sugiyama) placement of the map's graph, left to right.

The layers are given by the kind of each node (sources, topics, types, routes, ...), so the
first phase of Sugiyama's method (layer assignment) is already done; this module does the
other two: it orders each layer to reduce crossings (barycenter heuristic, sweeping right
and left a few times) and assigns coordinates (each node near the mean height of its
neighbours, in its layer's order, never overlapping). Pure and deterministic: the same graph
gives the same drawing on every replica.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Box", "place"]

ROW = 34  # vertical distance between boxes of one layer
BOX_H = 26
GAP_X = 70  # between layers
CHAR_W = 7.0  # an estimate of the monospace font's advance: boxes fit their labels
MAX_CHARS = 34
MIN_CHARS = 20  # the live numbers' line ("1234 · 56/min · lag 7")
SWEEPS = 4


@dataclass(frozen=True)
class Box:
    """Where one node is drawn."""

    x: float
    y: float
    w: float
    h: float


def _barycenters(
    layer: Sequence[str], neighbours: Mapping[str, Sequence[str]], pos: Mapping[str, float]
) -> list[str]:
    def key(node: str) -> tuple[float, float]:
        around = [pos[n] for n in neighbours.get(node, ()) if n in pos]
        here = pos.get(node, 0.0)
        return (sum(around) / len(around) if around else here, here)

    return sorted(layer, key=key)


def place(
    layers: Sequence[Sequence[str]],
    edges: Sequence[tuple[str, str]],
    labels: Mapping[str, int],
) -> tuple[dict[str, Box], float, float]:
    """Boxes for the nodes of ``layers`` (keys, in their initial order), with ``edges``
    between them; ``labels`` gives each node's label length in characters.

    Returns:
        The boxes by node key, and the drawing's width and height.
    """
    order = [list(layer) for layer in layers]
    layer_of = {n: i for i, layer in enumerate(order) for n in layer}
    left: dict[str, list[str]] = {}
    right: dict[str, list[str]] = {}
    for src, dst in edges:
        if src in layer_of and dst in layer_of and layer_of[src] != layer_of[dst]:
            a, b = (src, dst) if layer_of[src] < layer_of[dst] else (dst, src)
            right.setdefault(a, []).append(b)
            left.setdefault(b, []).append(a)
    pos = {n: float(i) for layer in order for i, n in enumerate(layer)}
    for _ in range(SWEEPS):
        for neighbours, indexes in ((left, range(1, len(order))), (right, range(len(order) - 2, -1, -1))):
            for i in indexes:
                order[i] = _barycenters(order[i], neighbours, pos)
                pos.update({n: float(k) for k, n in enumerate(order[i])})
    # Coordinates: x by layer (each as wide as its widest label), y near the neighbours.
    boxes: dict[str, Box] = {}
    x = 10.0
    ys: dict[str, float] = {}
    for layer in order:
        width = max((max(labels.get(n, 8), MIN_CHARS) for n in layer), default=8) * CHAR_W + 20
        wanted = []
        for k, node in enumerate(layer):
            around = [ys[n] for n in left.get(node, ()) if n in ys]
            wanted.append(sum(around) / len(around) if around else 10.0 + k * ROW)
        y = 10.0
        for node, want in zip(layer, wanted, strict=True):
            y = max(y, want)
            ys[node] = y
            boxes[node] = Box(x, y, width, BOX_H)
            y += ROW
        x += width + GAP_X
    height = max((b.y + b.h for b in boxes.values()), default=0.0) + 10
    return boxes, x, height
