"""Tests for bridge.kafka.rawfetch: the v2 parser against aiokafka's own batch builder."""

from __future__ import annotations

import struct

import pytest
from aiokafka import TopicPartition
from aiokafka.record.default_records import DefaultRecordBase, _DefaultRecordBatchBuilderPy
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c
from hypothesis import given, settings
from hypothesis import strategies as st
from rawkafka import _RawName, control_batch

from bridge.kafka.rawfetch import RawRecord, parse_batches, to_record, unreadable


def _batch(
    records: list[tuple[bytes | None, bytes | None, list[tuple[bytes, bytes | None]]]],
    *,
    base: int = 0,
    codec: int = 0,
    producer_id: int = -1,
    transactional: bool = False,
    control: bool = False,
) -> bytes:
    builder = _DefaultRecordBatchBuilderPy(
        magic=2, compression_type=codec, is_transactional=int(transactional),
        producer_id=producer_id, producer_epoch=0 if producer_id >= 0 else -1,
        base_sequence=0 if producer_id >= 0 else -1, batch_size=1 << 20,
    )
    for i, (key, value, headers) in enumerate(records):
        builder.append(i, timestamp=1_000 + i, key=key, value=value,
                       headers=[(_RawName(n), v) for n, v in headers])
    buf = bytearray(builder.build())
    struct.pack_into(">q", buf, 0, base)
    if control:
        at = DefaultRecordBase.ATTRIBUTES_OFFSET
        struct.pack_into(">h", buf, at, struct.unpack_from(">h", buf, at)[0] | DefaultRecordBase.CONTROL_MASK)
    struct.pack_into(">I", buf, DefaultRecordBase.CRC_OFFSET,
                     calc_crc32c(bytes(buf[DefaultRecordBase.ATTRIBUTES_OFFSET:])))
    return bytes(buf)


def _marker(abort: bool, producer_id: int, base: int) -> bytes:
    key = struct.pack(">hh", 0, 0 if abort else 1)
    return _batch([(key, struct.pack(">hi", 0, 0), [])], base=base, producer_id=producer_id,
                  transactional=True, control=True)


def _offsets(data: bytes, **kwargs: object) -> list[int]:
    return [r.offset for b in parse_batches(data, **kwargs) for r in b.records]  # type: ignore[arg-type]


_names = st.binary(max_size=6)
_records = st.lists(
    st.tuples(st.none() | st.binary(max_size=8), st.none() | st.binary(max_size=20),
              st.lists(st.tuples(_names, st.none() | st.binary(max_size=6)), max_size=3)),
    min_size=1, max_size=6,
)


@settings(max_examples=150, deadline=None)
@given(records=_records, codec=st.sampled_from([0, 1]))  # none, gzip (the installed codecs)
def test_parses_what_aiokafka_builds(records: list[tuple[bytes | None, bytes | None, list[tuple[bytes, bytes | None]]]], codec: int) -> None:
    (batch,) = parse_batches(_batch(records, base=40, codec=codec))
    assert (batch.base_offset, batch.next_offset) == (40, 40 + len(records))
    assert [(r.offset, r.key, r.value, list(r.headers)) for r in batch.records] == [
        (40 + i, k, v, h) for i, (k, v, h) in enumerate(records)
    ]
    assert [r.timestamp for r in batch.records] == [1_000 + i for i in range(len(records))]
    readable = all(_utf8(n) for _, _, h in records for n, _ in h)
    assert all(unreadable(r) is None for r in batch.records) == readable
    if readable:  # the same bytes through aiokafka's own parser: the same records
        theirs = MemoryRecords(_batch(records, base=40, codec=codec)).next_batch()
        assert [(r.offset, r.key, r.value, [(n.encode(), v) for n, v in r.headers]) for r in theirs] == [
            (r.offset, r.key, r.value, list(r.headers)) for r in batch.records
        ]


def _utf8(name: bytes) -> bool:
    try:
        name.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_several_batches_control_batches_and_a_partial_tail() -> None:
    data = _batch([(None, b"a", []), (None, b"b", [])]) + _batch([(None, b"c", [])], base=2)
    marker = bytearray(control_batch())
    struct.pack_into(">q", marker, 0, 3)
    data += bytes(marker) + _batch([(None, b"e", [])], base=4)
    batches = parse_batches(data + _batch([(None, b"cut", [])], base=5)[:30])
    assert [(b.base_offset, b.next_offset) for b in batches] == [(0, 2), (2, 3), (3, 4), (4, 5)]
    assert _offsets(data) == [0, 1, 2, 4]  # the marker's offset is a gap


def test_read_committed_leaves_out_aborted_transactions() -> None:
    data = (
        _batch([(None, b"plain", [])], base=0)
        + _batch([(None, b"t1", []), (None, b"t2", [])], base=1, producer_id=7, transactional=True)
        + _marker(True, 7, base=3)
        + _batch([(None, b"t3", [])], base=4, producer_id=8, transactional=True)
        + _marker(False, 8, base=5)
        + _batch([(None, b"after", [])], base=6, producer_id=7, transactional=True)
        + _marker(False, 7, base=7)
    )
    aborted = [(7, 1)]
    assert _offsets(data) == [0, 1, 2, 4, 6]  # read_uncommitted: every data record
    assert _offsets(data, read_committed=True, aborted=aborted) == [0, 4, 6]
    assert _offsets(data, read_committed=True, aborted=[]) == [0, 1, 2, 4, 6]


def test_not_v2_is_refused() -> None:
    data = bytearray(_batch([(None, b"x", [])]))
    data[16] = 1  # magic
    with pytest.raises(ValueError, match="magic 1"):
        parse_batches(bytes(data))


def test_to_record_keeps_undecodable_names_as_surrogate_escapes() -> None:
    raw = RawRecord(9, 123, b"k", None, ((b"ok", b"1"), (b"\xff\xfe", None)))
    record = to_record(TopicPartition("t", 3), raw)
    assert (record.topic, record.partition, record.offset, record.timestamp) == ("t", 3, 9, 123)
    assert record.headers == (("ok", b"1"), ("\udcff\udcfe", b""))
    assert record.unreadable is not None and "b'\\xff\\xfe'" in record.unreadable
    assert to_record(TopicPartition("t", 3), RawRecord(1, 0, None, b"v", ())).unreadable is None
