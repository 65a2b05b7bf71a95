"""The finished offsets carried in a commit's metadata: round trip, size bound, bad input."""

from __future__ import annotations

import base64
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.sidecar.finished import MAX_BYTES, PREFIX, MetadataError, decode, encode

bases = st.integers(min_value=0, max_value=2**62)
gaps = st.lists(st.integers(min_value=0, max_value=2_000), max_size=3_000)


def _finished(base: int, steps: list[int]) -> set[int]:
    offsets, at = set(), base
    for step in steps:
        at += step + 1
        offsets.add(at)
    return offsets


@given(bases, gaps)
def test_what_is_encoded_decodes_the_same_or_does_not_fit(base: int, steps: list[int]) -> None:
    finished = _finished(base, steps)
    text = encode(base, finished)
    if text is None:  # too many runs for 4096 bytes even compressed: the plain commit
        assert len(encode(base, finished, limit=10**9) or "") > MAX_BYTES
        return
    assert len(text.encode()) <= MAX_BYTES
    if not finished:
        assert text == ""
        assert decode(text) is None
    else:
        assert decode(text) == (base, finished)


@given(bases, st.integers(min_value=1, max_value=50_000), st.integers(min_value=0, max_value=3))
def test_long_runs_fit(base: int, length: int, gap: int) -> None:
    # A head blocked while thousands behind it finished: one run, a few bytes.
    finished = set(range(base + 1 + gap, base + 1 + gap + length))
    text = encode(base, finished)
    assert text is not None
    assert len(text) < 40
    assert decode(text) == (base, finished)


def test_every_other_offset_of_5000_fits_compressed() -> None:
    finished = set(range(1_001, 11_001, 2))
    text = encode(1_000, finished)
    assert text is not None
    assert len(text) <= MAX_BYTES
    assert decode(text) == (1_000, finished)


def test_a_bitset_that_cannot_fit_is_none() -> None:
    import random

    rng = random.Random(4)
    finished = {o for o in range(1, 200_000) if rng.random() < 0.5}
    assert encode(0, finished) is None


def test_offsets_below_the_base_are_refused() -> None:
    with pytest.raises(ValueError, match="below"):
        encode(10, {9})


def _wrap(raw: bytes) -> str:
    return PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("text", [
    "other-tool-metadata",
    PREFIX + "!!!not base64!!!",
    PREFIX,
    _wrap(bytes([2, 0, 1, 0])),  # a newer version
    _wrap(bytes([1, 7, 1, 0])),  # an unknown codec
    _wrap(bytes([1, 0, 5, 2, 1])),  # truncated runs
    _wrap(bytes([1, 0, 5, 0, 9])),  # trailing bytes
    _wrap(bytes([1, 1]) + b"not zlib"),
    _wrap(bytes([1, 0]) + b"\xff" * 12),  # a varint that never ends
    _wrap(bytes([1, 0, 0, 2, 0]) + b"\xff\xff\xff\xff\x0f"),  # a run of 4 billion offsets
    _wrap(bytes([1, 1]) + zlib.compress(b"\x00" * 10**6)),  # inflates too far
])
def test_undecodable_metadata_raises_metadata_error(text: str) -> None:
    with pytest.raises(MetadataError):
        decode(text)


@given(st.text(max_size=200))
def test_any_text_decodes_or_raises_metadata_error(text: str) -> None:
    try:
        result = decode(text)
    except MetadataError:
        return
    assert result is None or isinstance(result[1], set)


@given(st.binary(max_size=200))
def test_any_bytes_behind_the_prefix_decode_or_raise_metadata_error(raw: bytes) -> None:
    try:
        result = decode(_wrap(raw), max_offsets=100_000)
    except MetadataError:
        return
    assert result is None or len(result[1]) <= 100_000
