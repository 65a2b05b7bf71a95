"""The sidecar's one HTTP port: liveness, readiness and Prometheus metrics.

A deliberately tiny HTTP/1.1 server on asyncio streams (no web framework is a dependency):
``GET /livez`` (200 while the loop runs), ``GET /readyz`` (200 when connected: the consumer
joined its group and Kafka answers, Temporal's namespace answers; owning partitions is not
required, see :class:`~bridge.sidecar.metrics.Health`; the body says what is missing) and
``GET /metrics`` (prometheus-client's text exposition of the loom's own registry). Every response closes the
connection, which is all probes and scrapers need. Paths under ``/map`` go to the
choreography map's pages when the sidecar serves them (:class:`bridge.map.pages.MapPages`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from bridge.sidecar.metrics import Health

__all__ = ["HealthServer", "Pages"]

#: Answers a request under ``/map``: ``(method, target, headers)`` ->
#: ``(status, content type, body, extra headers)``.
Pages = Callable[
    [str, str, Mapping[str, str]], Awaitable[tuple[int, str, bytes, list[tuple[str, str]]]]
]

log = logging.getLogger("loom.http")

_REASONS = {
    200: "OK", 303: "See Other", 401: "Unauthorized", 404: "Not Found",
    405: "Method Not Allowed", 500: "Internal Server Error", 503: "Service Unavailable",
}
# A probe's request line and headers fit easily; anything bigger is not a probe.
_MAX_REQUEST = 16 * 1024


class HealthServer:
    """Serves ``/livez``, ``/readyz`` and ``/metrics`` for one sidecar.

    Args:
        health: Returns the current health (read at every request, so the server may start
            before the loom exists).
        registry: The Prometheus registry to expose.
        host: Interface to listen on.
        port: TCP port; 0 picks a free one (see :attr:`port` after :meth:`start`).
        pages: Answers the paths under ``/map`` (none: they are not found).
    """

    def __init__(
        self,
        health: Callable[[], Health | None],
        registry: CollectorRegistry,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        pages: Pages | None = None,
    ) -> None:
        self._health = health
        self.pages = pages
        self._registry = registry
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The port listened on (the real one when started with port 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Start listening."""
        self._server = await asyncio.start_server(self._handle, self._host, self._port)

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            writer.close()
            return
        try:
            method, path = _request_line(head[:_MAX_REQUEST])
            extra: list[tuple[str, str]] = []
            if self.pages is not None and (path == "/map" or path.startswith(("/map/", "/map?"))):
                status, ctype, body, extra = await _page(self.pages, method, path, head)
            else:
                status, ctype, body = self._respond(method, path)
            more = "".join(f"{name}: {value}\r\n" for name, value in extra)
            writer.write(
                f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n{more}"
                "Connection: close\r\n\r\n".encode("latin-1", "replace")
            )
            if method != "HEAD":
                writer.write(body)
            await writer.drain()
        except (ConnectionError, OSError):
            pass  # the client went away: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _respond(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"method not allowed\n"
        path = path.split("?", 1)[0]
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self._registry)
        health = self._health()
        if path == "/livez":
            live = health is not None and health.live
            return (200 if live else 503), "text/plain", b"ok\n" if live else b"not running\n"
        if path == "/readyz":
            state = _readiness(health)
            body = json.dumps(state, sort_keys=True).encode() + b"\n"
            return (200 if state["ready"] else 503), "application/json", body
        return 404, "text/plain", b"not found\n"


def _request_line(head: bytes) -> tuple[str, str]:
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3:
        return "", ""
    return parts[0].upper(), parts[1]


async def _page(
    pages: Pages, method: str, path: str, head: bytes
) -> tuple[int, str, bytes, list[tuple[str, str]]]:
    try:
        return await pages(method, path, _headers(head))
    except Exception:  # a bug in a page must not take the probes down with it
        log.exception("the map failed to answer %s %s", method, path[:200])
        return 500, "text/plain", b"the map failed; see the sidecar's log\n", []


def _headers(head: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in head[:_MAX_REQUEST].split(b"\r\n")[1:]:
        name, sep, value = line.decode("latin-1").partition(":")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out


def _readiness(health: Health | None) -> dict[str, object]:
    if health is None:
        return {"ready": False, "running": False}
    return {
        "ready": health.ready,
        "running": health.running,
        "kafka": health.kafka_connected,
        "group": health.group_joined,
        "temporal": health.temporal_connected,
        "partitions": len(health.assigned),
    }
