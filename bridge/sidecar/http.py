"""The sidecar's one HTTP port: liveness, readiness and Prometheus metrics.

``GET /livez`` (200 while the loom runs and its event loop turns; 503 with the reason
otherwise), ``GET /readyz`` (200 when connected: the consumer joined its group and Kafka
answers, Temporal's namespace answers; owning partitions is not required, see
:class:`~bridge.sidecar.metrics.Health`; the body says what is missing) and ``GET /metrics``
(prometheus-client's text exposition of the loom's own registry). Every response closes the
connection, which is all probes and scrapers need.

The server runs in a thread of its own (the standard library's ``ThreadingHTTPServer``; no
web framework is a dependency), not on the event loop: a loop that stopped turning is then
reported by ``/livez`` (from :class:`~bridge.sidecar.liveness.LoopWatch`), and ``/metrics``
still shows its lag, where a server on that loop would merely be unreachable.

Pages that need the loop (:meth:`HealthServer.add_page`) are handed to it and answered
within a timeout; so are sites (:meth:`HealthServer.add_site`: the choreography map under
``/map``), which also see the request's headers and set headers of their own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from bridge.sidecar.liveness import LoopWatch
from bridge.sidecar.metrics import Health

__all__ = ["HealthServer", "Page", "Response", "Site", "SiteResponse"]

log = logging.getLogger("loom.http")

#: A response: status, content type, body.
Response = tuple[int, str, bytes]
#: A page answered on the event loop: ``page(path, query)`` -> response.
Page = Callable[[str, str], Awaitable[Response]]
#: A site's response: status, content type, body, and headers of its own.
SiteResponse = tuple[int, str, bytes, list[tuple[str, str]]]
#: A site answered on the event loop: ``site(method, target, headers)`` -> response (header
#: names lower-case).
Site = Callable[[str, str, Mapping[str, str]], Awaitable[SiteResponse]]

# A probe's request takes microseconds to send: a client that dawdles longer is cut off.
_READ_TIMEOUT_S = 5.0
# A page answered on the loop (not a probe) may take this long.
_PAGE_TIMEOUT_S = 10.0


class HealthServer:
    """Serves ``/livez``, ``/readyz`` and ``/metrics`` for one sidecar, from a thread.

    Args:
        health: Returns the current health (read at every request, so the server may start
            before the loom exists). Called from the server's thread.
        registry: The Prometheus registry to expose.
        host: Interface to listen on.
        port: TCP port; 0 picks a free one (see :attr:`port` after :meth:`start`).
        watch: The event loop's watch; ``/livez`` fails once the loop has not turned for
            ``stall_after_s`` seconds.
        stall_after_s: See ``watch``.
    """

    def __init__(
        self,
        health: Callable[[], Health | None],
        registry: CollectorRegistry,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        watch: LoopWatch | None = None,
        stall_after_s: float = 30.0,
    ) -> None:
        self._health = health
        self._registry = registry
        self._host = host
        self._port = port
        self._watch = watch
        self._stall_after = stall_after_s
        self._pages: dict[str, Page] = {}
        self._sites: dict[str, Site] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def port(self) -> int:
        """The port listened on (the real one when started with port 0)."""
        if self._server is None:
            return self._port
        return int(self._server.server_address[1])

    def add_page(self, prefix: str, page: Page) -> None:
        """Serve ``GET`` requests whose path starts with ``prefix`` by ``page``, run on the
        event loop that started the server."""
        self._pages[prefix] = page

    def add_site(self, prefix: str, site: Site) -> None:
        """Serve every request whose path is ``prefix`` or under ``prefix/`` by ``site``, run
        on the event loop that started the server, with the request's headers."""
        self._sites[prefix] = site

    async def start(self) -> None:
        """Start listening (in a thread of its own)."""
        self._loop = asyncio.get_running_loop()
        server = ThreadingHTTPServer((self._host, self._port), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2},
            name="loom-http", daemon=True,
        )
        self._thread.start()

    async def stop(self) -> None:
        """Stop listening."""
        server, self._server = self._server, None
        if server is not None:
            await asyncio.to_thread(server.shutdown)
            server.server_close()

    # --- answers (on the server's threads) ----------------------------------------------------

    def respond(self, method: str, path: str) -> Response:
        """The response to one request (called from a request thread)."""
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"method not allowed\n"
        path, _, query = path.partition("?")
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self._registry)
        if path == "/livez":
            return self._livez()
        if path == "/readyz":
            state = _readiness(self._health())
            body = json.dumps(state, sort_keys=True).encode() + b"\n"
            return (200 if state["ready"] else 503), "application/json", body
        for prefix, page in self._pages.items():
            if path.startswith(prefix):
                return self._on_loop(page, path, query)
        return 404, "text/plain", b"not found\n"

    def respond_site(self, method: str, target: str, headers: Mapping[str, str]) -> SiteResponse:
        """The response to one request, a site's (with its headers) when one serves the path
        (called from a request thread)."""
        path = target.partition("?")[0]
        for prefix, site in self._sites.items():
            if path == prefix or path.startswith(prefix + "/"):
                return self._site_on_loop(site, method, target, headers)
        return (*self.respond(method, target), [])

    def _site_on_loop(
        self, site: Site, method: str, target: str, headers: Mapping[str, str]
    ) -> SiteResponse:
        loop = self._loop
        if loop is None or loop.is_closed():
            return 503, "text/plain", b"not running\n", []
        future = asyncio.run_coroutine_threadsafe(_visit(site, method, target, headers), loop)
        try:
            return future.result(timeout=_PAGE_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            future.cancel()
            return 503, "text/plain", b"the sidecar is busy: try again\n", []
        except Exception:
            log.exception("%s %s failed", method, target[:200])
            return 500, "text/plain", b"internal error\n", []

    def _livez(self) -> Response:
        health = self._health()
        if health is None or not health.live:
            return 503, "text/plain", b"not running\n"
        stalled = self._watch.stalled_for() if self._watch is not None else 0.0
        if stalled > self._stall_after:
            body = f"event loop stalled for {stalled:.1f} s\n".encode()
            return 503, "text/plain", body
        return 200, "text/plain", b"ok\n"

    def _on_loop(self, page: Page, path: str, query: str) -> Response:
        loop = self._loop
        if loop is None or loop.is_closed():
            return 503, "text/plain", b"not running\n"
        future = asyncio.run_coroutine_threadsafe(_call(page, path, query), loop)
        try:
            return future.result(timeout=_PAGE_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            future.cancel()
            return 503, "text/plain", b"the sidecar is busy: try again\n"
        except Exception:
            log.exception("page %s failed", path)
            return 500, "text/plain", b"internal error\n"


async def _call(page: Page, path: str, query: str) -> Response:
    return await page(path, query)


async def _visit(site: Site, method: str, target: str, headers: Mapping[str, str]) -> SiteResponse:
    return await site(method, target, headers)


def _handler_for(server: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = _READ_TIMEOUT_S
        protocol_version = "HTTP/1.1"

        def _answer(self, method: str) -> None:
            headers = {name.lower(): value for name, value in self.headers.items()}
            status, ctype, body, extra = server.respond_site(method, self.path, headers)
            try:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for name, value in extra:
                    self.send_header(name, value)
                self.send_header("Connection", "close")
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(body)
            except OSError:
                pass  # the client went away: nothing to answer
            self.close_connection = True

        def do_GET(self) -> None:
            self._answer("GET")

        def do_HEAD(self) -> None:
            self._answer("HEAD")

        def _refuse(self) -> None:
            self._answer(self.command)

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

    return Handler


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
