"""A small asyncio TCP proxy on loopback for fault injection: cut, stall, add latency.

The fault suite puts it between the sidecar and a server (the broker, Temporal) and breaks
the connection on purpose::

    async with FaultProxy(target_port=7233) as proxy:   # clients connect to proxy.port
        proxy.latency = 0.05        # every chunk, both directions, arrives 50 ms later
        await proxy.cut()           # reset every connection, refuse new ones
        proxy.restore()             # accept and forward again
        proxy.stall()               # connections stay open, bytes wait (a partition) until
        proxy.restore()             # the partition heals and they arrive, as TCP retransmits
        proxy.refuse = lambda api_key, client_id: api_key == 0   # Kafka: reset a connection
        proxy.refuse = None         # before it forwards a matching request (here: Produce)

Latency delays each chunk without serializing the stream: bytes read at ``t`` are written at
``t + latency``, in order, so throughput stays as it was while round trips get longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

_CHUNK = 64 * 1024


@dataclass
class ProxyStats:
    """What went through the proxy, for assertions and the scenario report."""

    accepted: int = 0
    refused: int = 0
    cuts: int = 0
    bytes_up: int = 0  # client -> server
    bytes_down: int = 0  # server -> client
    stalls: int = 0
    upstream_failures: int = 0
    refused_requests: int = 0
    open_connections: set[int] = field(default_factory=set)


class KafkaRequests:
    """Splits a client's byte stream into Kafka requests: ``(api_key, client_id)`` of each.

    A request is a 4-byte size, then api key (int16), api version (int16), correlation id
    (int32) and client id (int16 length + bytes) in every header version.
    """

    _HEAD = 14

    def __init__(self) -> None:
        self._buf = b""
        self._skip = 0

    def feed(self, data: bytes) -> list[tuple[int, str]]:
        found: list[tuple[int, str]] = []
        while data:
            if self._skip:
                step = min(self._skip, len(data))
                self._skip -= step
                data = data[step:]
                continue
            buf, data = self._buf + data, b""
            if len(buf) < self._HEAD:
                self._buf = buf
                break
            size = int.from_bytes(buf[:4], "big")
            api_key = int.from_bytes(buf[4:6], "big", signed=True)
            id_len = max(0, int.from_bytes(buf[12:14], "big", signed=True))
            if len(buf) < self._HEAD + id_len:
                self._buf = buf
                break
            found.append((api_key, buf[self._HEAD : self._HEAD + id_len].decode("utf-8", "replace")))
            self._buf = b""
            end = 4 + size
            if len(buf) >= end:
                data = buf[end:]
            else:
                self._skip = end - len(buf)
        return found


class _Link:
    """One client connection and its upstream connection."""

    def __init__(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.client = client
        self.upstream = upstream
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        for _, writer in (self.client, self.upstream):
            transport = writer.transport
            sock = transport.get_extra_info("socket")
            if sock is not None:
                # SO_LINGER 0: close with RST, as a crashed peer or a dropped route would.
                with contextlib.suppress(OSError):
                    sock.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
            transport.abort()
        for task in self.tasks:
            task.cancel()


class FaultProxy:
    """Forwards ``127.0.0.1:port`` to ``target_host:target_port`` with injectable faults.

    Args:
        target_port: Port of the real server.
        target_host: Host of the real server.
        port: Port to listen on (a free one when None); kept across :meth:`stop`/:meth:`start`.
        latency: Seconds added to every chunk in both directions.

    Attributes:
        latency: May be changed at any time; applies to chunks read afterwards.
        refuse: For a Kafka broker: called with ``(api_key, client_id)`` of each request a
            client sends; True resets that connection before the request is forwarded (a
            broker the client cannot reach for that kind of request).
    """

    def __init__(
        self,
        target_port: int,
        target_host: str = "127.0.0.1",
        *,
        port: int | None = None,
        latency: float = 0.0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self._requested_port = port
        self.port = port or 0
        self.latency = latency
        self.refuse: Callable[[int, str], bool] | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.stats = ProxyStats()
        self._cut = False
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()

    @property
    def address(self) -> str:
        """``host:port`` clients connect to."""
        return f"127.0.0.1:{self.port}"

    @property
    def is_cut(self) -> bool:
        """True between :meth:`cut` and :meth:`restore`."""
        return self._cut

    async def start(self) -> None:
        """Listen (on the same port again after :meth:`stop`)."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port or self._requested_port or 0, reuse_address=True
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and reset every connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self._abort_all()
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)

    async def cut(self) -> None:
        """Reset every open connection and refuse new ones until :meth:`restore`."""
        self._cut = True
        self.stats.cuts += 1
        self._abort_all()
        await asyncio.sleep(0)  # one turn of the loop: the aborted connections' tasks see it

    def stall(self) -> None:
        """Stop forwarding bytes, keep every connection open, until :meth:`restore`.

        A network partition without RST: requests get no answer until it heals, then
        everything held arrives in order (dropping bytes would corrupt the streams, which TCP
        never does).
        """
        self.stats.stalls += 1
        self._flowing.clear()

    @property
    def is_stalled(self) -> bool:
        """True between :meth:`stall` and :meth:`restore`."""
        return not self._flowing.is_set()

    def restore(self) -> None:
        """Accept and forward connections again (after a cut or a stall)."""
        self._cut = False
        self._flowing.set()

    def _abort_all(self) -> None:
        links, self._links = self._links, set()
        for link in links:
            link.abort()
        self.stats.open_connections.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            self.stats.refused += 1
            writer.transport.abort()
            return
        try:
            upstream = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            self.stats.upstream_failures += 1
            writer.transport.abort()
            return
        if self._cut:  # cut while connecting upstream
            upstream[1].transport.abort()
            writer.transport.abort()
            return
        self.stats.accepted += 1
        link = _Link((reader, writer), upstream)
        self._links.add(link)
        self.stats.open_connections.add(id(link))
        link.tasks = [
            asyncio.create_task(self._pump(link, reader, upstream[1], up=True)),
            asyncio.create_task(self._pump(link, upstream[0], writer, up=False)),
        ]
        await asyncio.gather(*link.tasks, return_exceptions=True)
        if link in self._links:
            self._links.discard(link)
            self.stats.open_connections.discard(id(link))
        for _, w in (link.client, link.upstream):
            w.close()

    async def _pump(
        self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(self._send(queue, writer))
        failed = False
        requests = KafkaRequests() if up else None
        try:
            while True:
                try:
                    data = await reader.read(_CHUNK)
                except (ConnectionError, OSError):
                    failed = True
                    break
                if not data:
                    break
                if requests is not None:
                    refuse = self.refuse
                    found = requests.feed(data)
                    if refuse is not None and any(refuse(key, cid) for key, cid in found):
                        self.stats.refused_requests += 1
                        failed = True
                        break
                if up:
                    self.stats.bytes_up += len(data)
                else:
                    self.stats.bytes_down += len(data)
                queue.put_nowait((loop.time() + self.latency, data))
            if not failed:
                queue.put_nowait((loop.time() + self.latency, b""))  # EOF, after the data
                await sender
        finally:
            sender.cancel()
        if failed:
            # A reset on one side is a reset on the other: the client must see the break.
            link.abort()

    async def _send(
        self, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, data = await queue.get()
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # the injected latency: the fault itself
            await self._flowing.wait()
            if not data:
                with contextlib.suppress(OSError):
                    if writer.can_write_eof():
                        writer.write_eof()
                return
            try:
                writer.write(data)
                await writer.drain()
            except (ConnectionError, OSError):
                return

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
