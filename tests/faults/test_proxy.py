"""The suite's own TCP proxy: forwards, cuts, refuses, restores, delays, stalls."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import AsyncIterator
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from faults.proxy import FaultProxy, KafkaRequests

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
        # The same wait sees bytes that flow: an echo through the proxy before the stall.
        writer.write(b"flow")
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(4), 0.3) == b"flow"
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


def _request(api_key: int, client_id: str, body: bytes) -> bytes:
    cid = client_id.encode()
    rest = struct.pack(">hhih", api_key, 3, 7, len(cid)) + cid + body
    return struct.pack(">i", len(rest)) + rest


@given(
    requests=st.lists(
        st.tuples(st.integers(0, 70), st.text("abc-", max_size=12), st.binary(max_size=40)),
        max_size=6,
    ),
    cuts=st.lists(st.integers(0, 400), max_size=8),
)
def test_kafka_requests_are_found_across_any_chunking(
    requests: list[tuple[int, str, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(_request(*r) for r in requests)
    points = sorted({c for c in cuts if c < len(stream)} | {0, len(stream)})
    splitter = KafkaRequests()
    found = [f for a, b in pairwise(points) for f in splitter.feed(stream[a:b])]
    assert found == [(key, cid) for key, cid, _ in requests]


async def test_a_refused_kafka_request_resets_its_connection(echo_port: int) -> None:
    async with FaultProxy(echo_port) as proxy:
        proxy.refuse = lambda api_key, client_id: api_key == 0 and client_id != "ok"
        assert await _roundtrip(proxy.port, _request(0, "ok", b"x")) == _request(0, "ok", b"x")
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(_request(3, "c", b"") + _request(0, "c", b"produce"))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1000), 5)
        writer.close()
        assert proxy.stats.refused_requests == 1
