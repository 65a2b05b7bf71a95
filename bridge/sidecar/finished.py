"""Finished offsets beyond the commit point, carried in the commit's metadata.

The commit point of a partition is its contiguous finished prefix; with read-ahead, much
beyond it is finished when a member dies or a partition moves. Like the Confluent Parallel
Consumer, the loom writes those offsets into the commit's metadata string, and a new owner
skips them (:mod:`.redo`).

Format (version 1): ``"loom:"`` followed by URL-safe base64 (no padding) of

- one byte, the version (1);
- one byte, the codec of the rest: 0 plain, 1 zlib;
- unsigned LEB128 varints: the committed offset, the number of runs, then the runs'
  lengths, alternately offsets not finished and offsets finished, from the committed offset
  on (the first run is of offsets not finished: the committed offset itself is one).

The broker bounds metadata by ``offset.metadata.max.bytes`` (4096 by default): an encoding
that does not fit is not written (:func:`encode` returns None, and the loom commits the
offset alone). Decoding refuses anything else: another tool's text, a newer version, a
corrupt string, a run that would name more offsets than the decoder accepts.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Iterable

__all__ = ["MAX_BYTES", "PREFIX", "VERSION", "MetadataError", "decode", "encode"]

PREFIX = "loom:"
VERSION = 1
#: Kafka's default ``offset.metadata.max.bytes``.
MAX_BYTES = 4096
_PLAIN, _ZLIB = 0, 1


class MetadataError(ValueError):
    """Commit metadata the loom cannot read (another tool's, a newer version, corrupt)."""


def _varint(value: int, out: bytearray) -> None:
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _runs(base: int, finished: Iterable[int]) -> list[int]:
    """Alternating run lengths (not finished, finished, ...) from ``base`` on."""
    runs: list[int] = []
    expected = base  # the next offset of the current finished run
    for offset in sorted(set(finished)):
        if offset < base:
            raise ValueError(f"finished offset {offset} is below the committed offset {base}")
        if runs and offset == expected:
            runs[-1] += 1
        else:
            runs += [offset - expected, 1]
        expected = offset + 1
    return runs


def encode(base: int, finished: Iterable[int], limit: int = MAX_BYTES) -> str | None:
    """The metadata naming ``finished`` (offsets at or above ``base``, the committed offset).

    Returns:
        The metadata string, at most ``limit`` bytes; ``""`` when nothing is finished beyond
        ``base``; None when it cannot fit (commit the offset alone).
    """
    if base < 0:
        raise ValueError(f"offset {base} is negative")
    runs = _runs(base, finished)
    if not runs:
        return ""
    body = bytearray()
    _varint(base, body)
    _varint(len(runs), body)
    for run in runs:
        _varint(run, body)
    for codec, payload in ((_PLAIN, bytes(body)), (_ZLIB, zlib.compress(bytes(body), 9))):
        text = PREFIX + base64.urlsafe_b64encode(bytes([VERSION, codec]) + payload).decode(
            "ascii"
        ).rstrip("=")
        if len(text) <= limit:
            return text
    return None


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data):
            raise MetadataError("truncated")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7
        if shift > 63:
            raise MetadataError("varint too long")


def decode(text: str, max_offsets: int = 1_000_000) -> tuple[int, set[int]] | None:
    """The committed offset and the finished offsets beyond it that ``text`` names.

    Args:
        text: The commit's metadata.
        max_offsets: Bound on the offsets named (a corrupt run must not fill the memory).

    Returns:
        None for empty metadata (nothing recorded); else ``(base, finished)``.

    Raises:
        MetadataError: ``text`` is not metadata this version of the loom wrote.
    """
    if not text:
        return None
    if not text.startswith(PREFIX):
        raise MetadataError("not written by the loom")
    encoded = text[len(PREFIX):]
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError) as exc:
        raise MetadataError(f"not base64: {exc}") from exc
    if len(raw) < 2:
        raise MetadataError("truncated")
    if raw[0] != VERSION:
        raise MetadataError(f"version {raw[0]} (this loom reads version {VERSION})")
    body = raw[2:]
    if raw[1] == _ZLIB:
        try:
            inflater = zlib.decompressobj()
            body = inflater.decompress(body, 64 * MAX_BYTES)
        except zlib.error as exc:
            raise MetadataError(f"corrupt: {exc}") from exc
        if inflater.unconsumed_tail:
            raise MetadataError("corrupt: inflates too far")
    elif raw[1] != _PLAIN:
        raise MetadataError(f"codec {raw[1]} unknown")
    base, at = _read_varint(body, 0)
    count, at = _read_varint(body, at)
    finished: set[int] = set()
    offset = base
    for i in range(count):
        run, at = _read_varint(body, at)
        if i % 2:
            if len(finished) + run > max_offsets:
                raise MetadataError(f"names more than {max_offsets} offsets")
            finished.update(range(offset, offset + run))
        offset += run
    if at != len(body):
        raise MetadataError("trailing bytes")
    return base, finished
