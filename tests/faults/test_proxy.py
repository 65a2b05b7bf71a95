"""The suite's own TCP proxy: forwards, cuts, refuses, restores, delays, stalls."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from faults.proxy import FaultProxy

pytestmark = pytest.mark.faults


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()


async def _roundtrip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), 5)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_forwards_bytes_both_ways(echo_port: int) -> None:
    async with FaultProxy(echo_port) as proxy:
        payload = bytes(range(256)) * 4096  # 1 MiB, several chunks
        assert await _roundtrip(proxy.port, payload) == payload
        assert proxy.stats.bytes_up == proxy.stats.bytes_down == len(payload)


async def test_cut_resets_open_connections_and_refuses_until_restored(echo_port: int) -> None:
    async with FaultProxy(echo_port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"hi")
        assert await reader.readexactly(2) == b"hi"
        await proxy.cut()
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            writer.write(b"again")
            await writer.drain()
            await asyncio.wait_for(reader.readexactly(5), 5)
        writer.close()
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await _roundtrip(proxy.port, b"refused")
        assert proxy.stats.refused >= 1
        proxy.restore()
        assert await _roundtrip(proxy.port, b"back") == b"back"


async def test_latency_delays_each_direction_without_serializing(echo_port: int) -> None:
    async with FaultProxy(echo_port, latency=0.1) as proxy:
        started = time.monotonic()
        results = await asyncio.gather(*(_roundtrip(proxy.port, b"x" * 10) for _ in range(20)))
        elapsed = time.monotonic() - started
        assert results == [b"x" * 10] * 20
        # One round trip crosses the proxy twice (0.2 s); 20 parallel ones take about as long.
        assert 0.2 <= elapsed < 1.5


async def test_stall_holds_bytes_until_restored(echo_port: int) -> None:
    async with FaultProxy(echo_port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        proxy.stall()
        writer.write(b"held")
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readexactly(4), 0.3)
        proxy.restore()
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"held"
        writer.write(b"more")
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"more"
        assert proxy.stats.stalls == 1
        writer.close()
