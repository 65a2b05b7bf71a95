"""Reading partitions raw: the records aiokafka's own parser refuses, byte for byte.

aiokafka decodes header *names* as UTF-8 while it unpacks a fetched batch. A name that is not
UTF-8 (any producer outside aiokafka can write one, and brokers store it unchanged) makes
``getmany`` raise a bare ``UnicodeDecodeError`` (``CorruptRecordException`` with the
pure-Python parser) that names no partition or offset, on every call: the partition is
wedged. This module reads such partitions with a plain FetchRequest and its own parser of
the v2 record format (the only one aiokafka 0.11+ writes, and Kafka's since 0.11), so the
loop can hand over the good records and dead-letter the bad one with its coordinates.

- :func:`fetch_raw`: one FetchRequest for several partitions, returns their batches;
- :func:`parse_batches`: the v2 batches of a message set (control batches and, under
  ``read_committed``, aborted transactions left out, as aiokafka does);
- :func:`unreadable`: why aiokafka cannot parse a record (None when it can);
- :func:`is_parse_error`: whether ``getmany`` raised because it could not parse a batch;
- :func:`to_record`: a :class:`~bridge.kafka.record.Record` of a raw record.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaClient, TopicPartition
from aiokafka.codec import gzip_decode, lz4_decode, snappy_decode, zstd_decode
from aiokafka.errors import CorruptRecordException, KafkaError, for_code
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.util import decode_varint

from bridge.kafka.record import Record

__all__ = ["RawBatch", "RawRecord", "fetch_raw", "parse_batches", "to_record", "unreadable"]

# DefaultRecordBase.HEADER_STRUCT: base offset, length, leader epoch, magic, crc, attributes,
# last offset delta, first timestamp, max timestamp, producer id, epoch, base sequence, count.
_HEADER = struct.Struct(">qiibIhiqqqhii")
_CODECS = {1: gzip_decode, 2: snappy_decode, 3: lz4_decode, 4: zstd_decode}
_LOG_APPEND_TIME = 0x08
_TRANSACTIONAL = 0x10
_CONTROL = 0x20
_ABORT = 0


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record as it is on the wire; header names are bytes."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[bytes, bytes | None], ...]


@dataclass(slots=True)
class RawBatch:
    """One v2 record batch: its records and the offset after it."""

    base_offset: int
    next_offset: int
    records: list[RawRecord] = field(default_factory=list)


def _bytes(buf: bytes, pos: int) -> tuple[bytes | None, int]:
    size, pos = decode_varint(buf, pos)
    if size < 0:
        return None, pos
    return bytes(buf[pos : pos + size]), pos + size


def _records(body: bytes, count: int, base: int, first_ts: int, max_ts: int, log_append: bool) -> list[RawRecord]:
    out: list[RawRecord] = []
    pos = 0
    for _ in range(count):
        _length, pos = decode_varint(body, pos)
        pos += 1  # record attributes (unused)
        ts_delta, pos = decode_varint(body, pos)
        offset_delta, pos = decode_varint(body, pos)
        key, pos = _bytes(body, pos)
        value, pos = _bytes(body, pos)
        n_headers, pos = decode_varint(body, pos)
        headers = []
        for _h in range(n_headers):
            name, pos = _bytes(body, pos)
            hvalue, pos = _bytes(body, pos)
            headers.append((name or b"", hvalue))
        out.append(RawRecord(
            base + offset_delta, max_ts if log_append else first_ts + ts_delta, key, value,
            tuple(headers),
        ))
    return out


def parse_batches(
    data: bytes,
    *,
    read_committed: bool = False,
    aborted: Sequence[tuple[int, int]] = (),
) -> list[RawBatch]:
    """The complete v2 batches in a fetched message set, in order.

    Control batches give no records (their offsets are gaps), and under ``read_committed`` a
    transactional batch of an aborted transaction gives none either (``aborted``: the fetch
    response's ``(producer_id, first_offset)`` list), exactly as aiokafka filters them. A
    partial batch at the end (cut by the fetch size) is left out.

    Raises:
        ValueError: The data is not in the v2 format.
    """
    batches: list[RawBatch] = []
    pending_aborts = sorted(aborted, key=lambda pair: pair[1])
    aborted_producers: set[int] = set()
    pos = 0
    while pos + 12 <= len(data):
        _base, length = struct.unpack_from(">qi", data, pos)
        end = pos + 12 + length
        if end > len(data) or length < _HEADER.size - 12:
            break
        (base, _len, _epoch, magic, _crc, attrs, last_delta, first_ts, max_ts, producer_id,
         _pepoch, _seq, count) = _HEADER.unpack_from(data, pos)
        if magic != 2:
            raise ValueError(f"record batch magic {magic} is not supported (only v2)")
        body = bytes(data[pos + _HEADER.size : end])
        codec = attrs & 0x07
        if codec:
            body = _CODECS[codec](body)
        pos = end
        batch = RawBatch(base, base + last_delta + 1)
        batches.append(batch)
        records = _records(body, count, base, first_ts, max_ts, bool(attrs & _LOG_APPEND_TIME))
        if read_committed and producer_id >= 0:
            while pending_aborts and pending_aborts[0][1] <= base:
                aborted_producers.add(pending_aborts.pop(0)[0])
            if attrs & _CONTROL and records and _is_abort(records[0]):
                aborted_producers.discard(producer_id)
            if attrs & _TRANSACTIONAL and producer_id in aborted_producers:
                continue
        if not attrs & _CONTROL:
            batch.records = records
    return batches


def _is_abort(control: RawRecord) -> bool:
    # A control record's key: version (int16), type (int16; 0 = ABORT, 1 = COMMIT).
    key = control.key or b""
    return len(key) >= 4 and struct.unpack_from(">hh", key)[1] == _ABORT


def unreadable(record: RawRecord) -> str | None:
    """Why aiokafka's parser refuses ``record`` (None when it reads it): a header name that
    is not UTF-8, the one check it makes on the bytes of a record."""
    for name, _ in record.headers:
        try:
            name.decode("utf-8")
        except UnicodeDecodeError:
            return f"header name {name!r} is not valid UTF-8 (aiokafka cannot parse the record)"
    return None


def to_record(tp: TopicPartition, raw: RawRecord) -> Record:
    """The :class:`Record` of a raw record, as ``Record.from_aiokafka`` would build it.

    A name that is not UTF-8 keeps its bytes as surrogate escapes (the dead-letter writer
    restores them), and the record says why it is unreadable.
    """
    headers = tuple(
        (name.decode("utf-8", "surrogateescape"), b"" if value is None else value)
        for name, value in raw.headers
    )
    return Record(
        topic=tp.topic, partition=tp.partition, offset=raw.offset, key=raw.key, value=raw.value,
        headers=headers, timestamp=raw.timestamp, unreadable=unreadable(raw),
    )


def _fetch_request(max_bytes: int, isolation_level: int, topics: list[Any]) -> Any:
    # The embedded broker answers max_wait_time=0 with nothing: wait up to 500 ms for
    # min_bytes=1 (data that is there comes back at once).
    builder: Any = FetchRequest
    if isinstance(builder, list):  # aiokafka < 0.12: one request class per version
        return builder[4](-1, 500, 1, max_bytes, isolation_level, topics)
    return builder(500, 1, max_bytes, isolation_level, topics)


async def fetch_raw(
    client: AIOKafkaClient,
    offsets: Mapping[TopicPartition, int],
    *,
    read_committed: bool,
    max_bytes: int = 1 << 20,
) -> dict[TopicPartition, list[RawBatch]]:
    """Fetch ``offsets`` (partition -> first offset) once and parse what came back.

    The first batch may begin below the offset asked for (a fetch returns whole batches): its
    earlier records are left in, so the caller sees every batch boundary.

    Raises:
        KafkaError: The broker answered a partition with an error.
    """
    by_leader: dict[int, list[TopicPartition]] = {}
    for tp in offsets:
        leader = client.cluster.leader_for_partition(tp)
        if leader is None or leader < 0:
            await client.force_metadata_update()
            leader = client.cluster.leader_for_partition(tp)
        by_leader.setdefault(leader if leader is not None else -1, []).append(tp)
    result: dict[TopicPartition, list[RawBatch]] = {}
    for leader, tps in by_leader.items():
        topics: dict[str, list[tuple[int, int, int]]] = {}
        for tp in tps:
            topics.setdefault(tp.topic, []).append((tp.partition, offsets[tp], max_bytes))
        request = _fetch_request(max_bytes * len(tps), int(read_committed), list(topics.items()))
        response: Any = (await client.send(leader, request)).to_object()
        for topic in response["topics"]:
            for part in topic["partitions"]:
                tp = TopicPartition(topic["topics"], part["partition"])
                if part["error_code"]:
                    raise for_code(part["error_code"])()
                aborted = [
                    (a["producer_id"], a["first_offset"])
                    for a in part.get("aborted_transactions") or ()
                ]
                result[tp] = parse_batches(
                    part["message_set"] or b"", read_committed=read_committed, aborted=aborted
                )
    return result


def is_parse_error(exc: BaseException) -> bool:
    """Whether ``getmany`` raised while unpacking records (not a coordination error).

    The C parser raises a bare ``UnicodeDecodeError``, the pure-Python one
    ``CorruptRecordException``; any other non-Kafka exception comes from the same place.
    """
    return isinstance(exc, CorruptRecordException) or not isinstance(exc, KafkaError)
