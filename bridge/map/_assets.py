"""The map's stylesheet and script, served from the sidecar itself (no CDN, no web font).

The script polls ``/map/live.json`` every two seconds and writes numbers into the drawing
by element id; when the graph changed (a new source, a type no route takes, a dead-letter
reason) it fetches ``/map/graph.svg`` and swaps the drawing. It only ever sets
``textContent`` and classes: nothing it receives is parsed as markup, except the SVG the
server drew (escaped there), parsed as XML.
"""

from __future__ import annotations

__all__ = ["CSS", "ICON", "SCRIPT"]

#: The page's icon (served, so the browser never asks for ``/favicon.ico``).
ICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" '
    'rx="3" fill="#1d2330"/><path d="M3 4h4v3H3zM9 9h4v3H9zM7 5.5 9 10.5" stroke="#9fd0ff" '
    'fill="#9fd0ff"/></svg>'
)

CSS = """
body { font: 13px/1.4 monospace; margin: 0; color: #1d2330; background: #fafbfc; }
header { padding: 8px 14px; background: #1d2330; color: #fff; display: flex; gap: 18px;
  align-items: center; flex-wrap: wrap; }
header a { color: #9fd0ff; }
header form { margin-left: auto; }
input[type=search] { width: 26em; font: inherit; }
main { padding: 10px 14px; }
#graph { overflow: auto; border: 1px solid #d5d9e0; background: #fff; }
.note { color: #5b6576; }
.legend span { margin-right: 14px; }
svg text { font: 11px monospace; fill: #1d2330; }
svg text.layer { font-weight: bold; fill: #5b6576; }
svg tspan.action { fill: #2d7a3e; font-size: 10px; }
svg text.num { fill: #2a5db0; font-size: 10px; }
svg text.reason { fill: #b3261e; font-size: 10px; }
.node rect { fill: #eef2f8; stroke: #8a96a8; }
.node.topic rect { fill: #f3ecfa; }
.node.route rect { fill: #e7f4ea; }
.node.workflow rect { fill: #fff5db; }
.node.emitted rect { fill: #e8f1fb; }
.node.consumer rect { fill: #f1f1f1; }
.node.dlq rect { fill: #fde7e5; stroke: #b3261e; }
.node.unrouted rect { fill: #fff0cc; stroke: #d08700; stroke-width: 2; stroke-dasharray: 4 2; }
.node.lonely rect { stroke: #d08700; stroke-width: 2; stroke-dasharray: 2 2; }
.node.idle rect { stroke-dasharray: 5 3; opacity: .7; }
.node.spike rect, path.spike { stroke: #e00000; stroke-width: 3; }
path.edge { fill: none; stroke: #9aa5b5; stroke-width: 1.2; }
path.edge.busy { stroke: #2a5db0; stroke-width: 2; }
path.edge.dead { stroke: #b3261e; stroke-dasharray: 5 3; }
table { border-collapse: collapse; width: 100%; background: #fff; }
td, th { border-bottom: 1px solid #e3e6eb; padding: 3px 6px; text-align: left;
  vertical-align: top; }
tr.dead td { background: #fde7e5; }
tr.emitted td { background: #e8f1fb; }
tr:target td { outline: 2px solid #2a5db0; }
.status { font-weight: bold; }
"""

SCRIPT = """
(function () {
  "use strict";
  var box = document.getElementById("graph");
  if (!box) { return; }
  var version = box.getAttribute("data-version");

  function set(id, value) {
    var el = document.getElementById(id);
    if (el && el.textContent !== value) { el.textContent = value; }
  }

  function flag(id, name, on) {
    var el = document.getElementById(id);
    if (el) { el.classList.toggle(name, !!on); }
  }

  function apply(live) {
    Object.keys(live.nodes).forEach(function (i) {
      var v = live.nodes[i];
      set("c" + i, v.text);
      flag("n" + i, "idle", v.idle);
      flag("n" + i, "spike", v.spike);
    });
    Object.keys(live.edges).forEach(function (j) {
      var v = live.edges[j];
      if (v.text !== undefined) { set("r" + j, v.text); }
      flag("e" + j, "busy", v.busy);
      flag("e" + j, "spike", v.spike);
    });
    set("replica", live.replica);
    set("updated", live.updated);
    box.setAttribute("data-updates", String(Number(box.getAttribute("data-updates") || 0) + 1));
  }

  function redraw() {
    return fetch("/map/graph.svg", {cache: "no-store", credentials: "same-origin"})
      .then(function (r) {
        if (!r.ok) { throw new Error("graph " + r.status); }
        var drawn = r.headers.get("X-Map-Version");
        return r.text().then(function (body) {
          var doc = new DOMParser().parseFromString(body, "image/svg+xml");
          if (doc.getElementsByTagName("parsererror").length) { throw new Error("bad svg"); }
          box.replaceChildren(document.importNode(doc.documentElement, true));
          version = drawn;
          box.setAttribute("data-version", drawn);
        });
      });
  }

  function poll() {
    fetch("/map/live.json", {cache: "no-store", credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (live) {
        if (!live) { return null; }
        if (live.version !== version) {
          return redraw().then(function () {
            if (live.version === version) { apply(live); }
          });
        }
        apply(live);
        return null;
      })
      .catch(function () { /* the sidecar restarts: the next poll tries again */ })
      .then(function () { window.setTimeout(poll, 2000); });
  }

  poll();
}());
"""
