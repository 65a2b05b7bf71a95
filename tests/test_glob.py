"""The one pattern rule (``bridge._glob``): what is a literal, and the escape."""

from __future__ import annotations

from fnmatch import fnmatchcase

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge._glob import escape, is_glob, literal

_text = st.text(alphabet="ab.*?[]!-", max_size=8)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("order.placed", "order.placed"),
        ("io.x.[*]", "io.x.*"),
        ("a[?]b", "a?b"),
        ("a[[]b", "a[b"),
        ("a[b", "a[b"),  # an unclosed bracket is itself
        ("[]]", "]"),
        ("io.x.*", None),
        ("a?c", None),
        ("[ab]", None),
        ("[!a]", None),
        ("", ""),
    ],
)
def test_literal(pattern: str, expected: str | None) -> None:
    assert literal(pattern) == expected
    assert is_glob(pattern) is (expected is None)


@given(_text)
def test_escape_matches_exactly_the_text(text: str) -> None:
    assert literal(escape(text)) == text
    assert fnmatchcase(text, escape(text))


@given(_text, _text)
def test_a_literal_matches_itself_and_nothing_else(pattern: str, other: str) -> None:
    lit = literal(pattern)
    if lit is not None:
        assert fnmatchcase(lit, pattern)
        assert fnmatchcase(other, pattern) == (other == lit)
