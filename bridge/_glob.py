"""The one pattern rule of every matcher: fnmatch globs, a literal ``*`` written ``[*]``.

Every matcher of the loom globs on the same characters, case-sensitively, with ``*`` also
crossing dots: ``Match`` fields (``type``, ``source``, ``subject``, extensions), topic
bindings, ``@handles``, the windows' ``type``, the emit topic map and ``loom replay
--route``. A character that would glob is matched literally inside brackets: ``[*]``,
``[?]``, ``[[]`` (``fnmatch``'s own escape). A pattern that matches one string only is a
literal (:func:`literal`): the indexes keep those in dicts, so exact types cost a lookup.

Imported inside Temporal's workflow sandbox (by ``bridge.workflow.handlers``): the standard
library only.
"""

from __future__ import annotations

import fnmatch
import re

__all__ = ["GLOB_CHARS", "compile_glob", "escape", "is_glob", "literal"]

#: The characters that make a pattern glob.
GLOB_CHARS = frozenset("*?[")


def literal(pattern: str) -> str | None:
    """The one string ``pattern`` matches, or None when it matches more (a real glob).

    ``"order.placed"`` is itself, ``"io.x.[*]"`` is ``"io.x.*"``; ``"io.x.*"`` is None.
    """
    out: list[str] = []
    i, size = 0, len(pattern)
    while i < size:
        char = pattern[i]
        if char in "*?":
            return None
        if char == "[":
            end = pattern.find("]", i + 2)  # fnmatch: a "]" right after "[" is literal
            if end < 0:
                out.append(char)  # an unclosed "[" matches itself
            elif end == i + 2 and pattern[i + 1] != "!":
                out.append(pattern[i + 1])  # "[c]": c itself
                i = end
            else:
                return None  # a class of several characters, or a negation
        else:
            out.append(char)
        i += 1
    return "".join(out)


def is_glob(pattern: str) -> bool:
    """Whether ``pattern`` matches more than one string."""
    return literal(pattern) is None


def escape(text: str) -> str:
    """The pattern that matches exactly ``text`` (``io.x.*`` -> ``io.x.[*]``)."""
    return "".join(f"[{c}]" if c in GLOB_CHARS else c for c in text)


def compile_glob(pattern: str) -> re.Pattern[str]:
    """Compile an fnmatch glob into an anchored, case-sensitive regex."""
    return re.compile(fnmatch.translate(pattern))
