"""Tests for bridge.kafka.deadletters: headers that always encode, refusals, the raw headers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka.errors import MessageSizeTooLargeError
from hypothesis import given, settings
from hypothesis import strategies as st
from kit import loom_settings

from bridge.exceptions import DecodeError
from bridge.kafka import deadletters as dl
from bridge.kafka.deadletters import DeadLetterRefusedError, DeadLetterWriter, deadletter_headers
from bridge.kafka.record import Record
from bridge.testing import read_records

# Every code point, surrogates included: exception messages and routes are any str.
_any_text = st.text(st.characters(exclude_categories=()), max_size=3000)


def _record(headers: tuple[tuple[str, bytes], ...] = (), value: bytes | None = b"v") -> Record:
    return Record("orders", 2, 41, b"k", value, headers, 1_700_000_000_000)


def _loom(headers: list[tuple[str, bytes]]) -> dict[str, bytes]:
    return {name: value for name, value in headers if name.startswith(dl.PREFIX)}


@settings(max_examples=200, deadline=None)
@given(message=_any_text, route=st.none() | _any_text, topic=_any_text, names=st.lists(_any_text, max_size=3))
def test_headers_always_encode_and_are_bounded(
    message: str, route: str | None, topic: str, names: list[str]
) -> None:
    record = Record(topic, 0, 5, None, b"v", tuple((n, b"x") for n in names))
    headers = deadletter_headers(record, DecodeError(message), route)
    for name, value in headers:
        name.encode("utf-8")  # aiokafka's producer encodes names with strict UTF-8
        assert isinstance(value, bytes)
    for name, value in _loom(headers).items():
        if name != dl.RAW_HEADERS:
            assert len(value) <= dl.MAX_HEADER_BYTES, name
            value.decode("utf-8")


def test_unencodable_text_is_escaped_not_dropped() -> None:
    headers = _loom(deadletter_headers(_record(), DecodeError("bad \udc80 id"), "r\udc80"))
    assert headers[dl.MESSAGE] == b"bad \\udc80 id"
    assert headers[dl.ROUTE] == b"r\\udc80"
    assert headers[dl.REASON] == b"decode"


def test_long_message_is_cut_at_a_character_boundary() -> None:
    headers = _loom(deadletter_headers(_record(), DecodeError("é" * 10_000), None))
    message = headers[dl.MESSAGE].decode("utf-8")  # still valid UTF-8 after the cut
    assert message.endswith("...")
    assert len(headers[dl.MESSAGE]) <= dl.MAX_HEADER_BYTES


def test_header_names_that_are_not_utf8_travel_in_a_header_value() -> None:
    # A header name that was not UTF-8 on the wire: its bytes kept as surrogate escapes.
    bad = b"tr\xffce".decode("utf-8", "surrogateescape")
    record = _record((("ok", b"1"), (bad, b"\x00\xff"), ("ce_id", b"")))
    headers = deadletter_headers(record, DecodeError("unreadable"), None)
    assert [h for h in headers if not h[0].startswith(dl.PREFIX)] == [("ok", b"1"), ("ce_id", b"")]
    letter = dl.parse_deadletter(Record("dlq", 0, 0, b"k", b"v", tuple(headers)))
    assert letter.raw_headers == [(b"ok", b"1"), (b"tr\xffce", b"\x00\xff"), (b"ce_id", b"")]
    assert letter.original_headers == [("ok", b"1"), ("ce_id", b"")]


def test_raw_headers_absent_when_every_name_encodes() -> None:
    headers = deadletter_headers(_record((("ok", b"1"),)), DecodeError("x"), None)
    assert dl.RAW_HEADERS not in dict(headers)
    letter = dl.parse_deadletter(Record("dlq", 0, 0, None, b"v", tuple(headers)))
    assert letter.raw_headers is None
    assert not letter.body_omitted


# --- the writer on the real broker ----------------------------------------------------------


def _info(record: Record) -> dict[str, str]:
    return dict(dl.parse_deadletter(record).info)


@pytest.mark.kafka
async def test_refused_record_is_written_headers_only(
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
) -> None:
    """A dead-letter write refused for good (here the producer's size limit, as a broker's
    ``message.max.bytes`` would) becomes a headers-only record: the line goes on."""
    dlq = await new_topic()
    producer = await make_producer(max_request_size=4096)
    retries: list[BaseException] = []
    writer = DeadLetterWriter(producer, dlq, on_retry=lambda a, err, d: retries.append(err))
    big = _record((("traceparent", b"00-abc"),), value=b"x" * 20_000)
    await asyncio.wait_for(writer.write(big, DecodeError("not a CloudEvent"), "step"), 20)
    (letter,) = await read_records(loom_kafka_bootstrap, dlq, count=1)
    assert letter.value == b"" and letter.key is None
    info = _info(letter)
    assert info["body"] == "omitted"
    assert info["reason"] == "decode"
    assert info["message"] == "not a CloudEvent"
    assert info["route"] == "step"
    assert (info["topic"], info["partition"], info["offset"]) == ("orders", "2", "41")
    assert info["write-error"].startswith("MessageSizeTooLargeError")
    assert all(name.startswith(dl.PREFIX) for name, _ in letter.headers)  # body and headers out
    assert dl.parse_deadletter(letter).body_omitted
    assert retries == []  # a permanent refusal is not retried


@pytest.mark.kafka
async def test_refused_headers_only_record_raises_instead_of_looping(
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
) -> None:
    """When even the headers-only record is refused, the writer says so (the caller leaves the
    record uncommitted) instead of retrying forever."""
    dlq = await new_topic()
    producer = await make_producer(max_request_size=200)
    writer = DeadLetterWriter(producer, dlq)
    with pytest.raises(DeadLetterRefusedError, match="MessageSizeTooLargeError") as info:
        await asyncio.wait_for(writer.write(_record(), DecodeError("x"), None), 20)
    assert isinstance(info.value.__cause__, MessageSizeTooLargeError)


@pytest.mark.kafka
async def test_record_with_unencodable_header_name_is_dead_lettered(
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
) -> None:
    dlq = await new_topic()
    writer = DeadLetterWriter(await make_producer(), dlq)
    bad = b"\xff\xfe".decode("utf-8", "surrogateescape")
    record = _record(((bad, b"1"), ("ce_id", b"i\xff")))
    await asyncio.wait_for(writer.write(record, DecodeError(f"name {bad}"), None), 20)
    (letter,) = await read_records(loom_kafka_bootstrap, dlq, count=1)
    assert letter.value == b"v" and letter.key == b"k"
    parsed = dl.parse_deadletter(letter)
    assert parsed.raw_headers == [(b"\xff\xfe", b"1"), (b"ce_id", b"i\xff")]
    assert parsed.original_headers == [("ce_id", b"i\xff")]
    assert parsed.info["message"] == "name \\udcff\\udcfe"


def test_permanent_and_transient_refusals() -> None:
    from aiokafka import errors

    for transient in (
        errors.KafkaTimeoutError(), errors.NodeNotReadyError(), errors.KafkaConnectionError(),
        errors.RequestTimedOutError(), errors.NotLeaderForPartitionError(),
        errors.UnknownTopicOrPartitionError(), errors.BrokerNotAvailableError(),
    ):
        assert not dl.is_permanent_refusal(transient), transient
    for permanent in (
        errors.MessageSizeTooLargeError(), errors.RecordListTooLargeError(),
        errors.TopicAuthorizationFailedError(), errors.InvalidTopicError(),
        errors.ClusterAuthorizationFailedError(), errors.PolicyViolationError(),
        TypeError("a bytes-like object is required"), UnicodeEncodeError("utf-8", "\udc80", 0, 1, "x"),
    ):
        assert dl.is_permanent_refusal(permanent), permanent


@pytest.mark.kafka
async def test_read_deadletters_reads_every_record_of_a_batch(
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
) -> None:
    """``loom dlq list`` and ``redrive`` read to the last dead letter, also where the broker
    (the embedded one) answers ListOffsets with the last batch's first offset + 1."""
    dlq = await new_topic()
    writer = DeadLetterWriter(await make_producer(linger_ms=200), dlq)
    records = [Record("orders", 0, offset, b"k", b"v", ()) for offset in range(5)]
    # Written together: the producer sends them in one batch.
    await asyncio.gather(*(writer.write(r, DecodeError(f"bad {r.offset}"), None) for r in records))
    settings = loom_settings(loom_kafka_bootstrap, ["orders"], dlq)
    letters = await dl.read_deadletters(settings, timeout=20)
    assert [int(d.info["offset"]) for d in letters] == [0, 1, 2, 3, 4]
