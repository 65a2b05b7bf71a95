"""Write what aiokafka's producer refuses to write: raw v2 batches sent by a ProduceRequest.

- records whose header *names* are arbitrary bytes (not UTF-8): aiokafka's producer encodes
  names from ``str``, so the batch is built with its pure-Python builder and a ``str`` whose
  ``encode()`` returns the raw bytes;
- a control batch with no producer id, which the broker stores and every consumer skips: an
  offset gap in the partition (what transaction markers leave on real Kafka).

No global patch: the batch goes out through a plain ``AIOKafkaClient``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaClient, TopicPartition
from aiokafka.errors import for_code
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record.default_records import DefaultRecordBase, _DefaultRecordBatchBuilderPy
from aiokafka.record.util import calc_crc32c

RawHeaders = Sequence[tuple[bytes, bytes | None]]
RawRecord = tuple[bytes | None, bytes | None, RawHeaders]


class _RawName(str):
    """A header name for aiokafka's pure-Python builder whose encoding is ``raw``."""

    raw: bytes

    def __new__(cls, raw: bytes) -> _RawName:
        self = super().__new__(cls, raw.decode("latin-1"))
        self.raw = raw
        return self

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


def _builder() -> _DefaultRecordBatchBuilderPy:
    return _DefaultRecordBatchBuilderPy(
        magic=2, compression_type=0, is_transactional=0, producer_id=-1, producer_epoch=-1,
        base_sequence=-1, batch_size=1 << 20,
    )


def batch(records: Sequence[RawRecord]) -> bytes:
    """One v2 batch holding ``records`` as ``(key, value, [(name bytes, value bytes)])``."""
    builder = _builder()
    for i, (key, value, headers) in enumerate(records):
        builder.append(
            i, timestamp=None, key=key, value=value,
            headers=[(_RawName(name), val) for name, val in headers],
        )
    return bytes(builder.build())


def control_batch() -> bytes:
    """A control batch (an ABORT marker) without producer id: one offset no consumer sees."""
    builder = _builder()
    builder.append(0, timestamp=None, key=struct.pack(">hh", 0, 0), value=struct.pack(">hi", 0, 0), headers=[])
    buf = bytearray(builder.build())
    attributes = DefaultRecordBase.ATTRIBUTES_OFFSET
    flags = struct.unpack_from(">h", buf, attributes)[0] | DefaultRecordBase.CONTROL_MASK
    struct.pack_into(">h", buf, attributes, flags)
    struct.pack_into(">I", buf, DefaultRecordBase.CRC_OFFSET, calc_crc32c(bytes(buf[attributes:])))
    return bytes(buf)


async def produce_batch(bootstrap: str, topic: str, partition: int, data: bytes) -> int:
    """Append one raw batch to ``topic[partition]``; returns its base offset."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        await client._wait_on_metadata(topic)
        leader = client.cluster.leader_for_partition(TopicPartition(topic, partition))
        builder: Any = ProduceRequest
        if isinstance(builder, list):  # aiokafka < 0.12: one request class per version
            builder = builder[3]
        response = await client.send(leader, builder(None, -1, 10_000, [(topic, [(partition, data)])]))
        ((_topic, ((_partition, error_code, base_offset, *_rest),)),) = response.topics
        if error_code:
            raise for_code(error_code)()
        return int(base_offset)
    finally:
        await client.close()
