"""A toy payload codec for the codec tests: reverses the serialized bytes and marks the encoding.

Loaded by import path, as ``LOOM_TEMPORAL__CODEC`` names it: ``reverse_codec:Reverse`` (a
class), ``reverse_codec:INSTANCE`` (an instance), ``reverse_codec:factory`` (a callable), and
``reverse_codec:NOT_A_CODEC`` for the refusal.
"""

from __future__ import annotations

from collections.abc import Sequence

from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

ENCODING = b"binary/reversed"


class Reverse(PayloadCodec):
    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [Payload(metadata={"encoding": ENCODING}, data=p.SerializeToString()[::-1])
                for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for p in payloads:
            if p.metadata.get("encoding") != ENCODING:
                out.append(p)
                continue
            d = Payload()
            d.ParseFromString(p.data[::-1])
            out.append(d)
        return out


INSTANCE = Reverse()


def factory() -> Reverse:
    return Reverse()


NOT_A_CODEC = object()
