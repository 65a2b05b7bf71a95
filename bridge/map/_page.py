"""The frame of every page of the map: head, header with the search box, body."""

from __future__ import annotations

from bridge.map.svg import text

__all__ = ["page", "search_form"]


def search_form(value: str = "") -> str:
    """The search box (workflow id, event id or correlation id)."""
    return (
        '<form action="/map/search" method="get" role="search">'
        f'<input type="search" name="q" value="{text(value)}" '
        'placeholder="workflow id, event id or correlation id" aria-label="search">'
        " <button>find</button></form>"
    )


def page(title: str, body: str, *, script: bool = False) -> bytes:
    """A whole HTML page of the map."""
    tail = '<script src="/map/map.js"></script>' if script else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{text(title)}</title>"
        '<link rel="icon" href="/map/icon.svg" type="image/svg+xml">'
        '<link rel="stylesheet" href="/map/map.css"></head><body><header>'
        '<a href="/map">temporal-loom map</a>'
        f"{search_form()}</header><main>{body}</main>{tail}</body></html>"
    ).encode()
