"""Matching events on CloudEvents attributes, and the type index behind the router.

``Match`` declares the conditions of a route. ``TypeIndex`` finds the values (routes) whose
match holds for an event without scanning them all: exact types are a dict lookup, type
prefixes a dict probed once per distinct prefix length (never more probes than the type has
characters), globs are compiled regexes in a separate, usually short, list, and matches without
a type condition sit in a catch-all list. Globs that are plain strings or ``"<prefix>*"`` are
indexed as exact types or prefixes.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from bridge.events import CORE_ATTRIBUTES, Event
from bridge.exceptions import RouteDefinitionError

_GLOB_CHARS = frozenset("*?[")
T = TypeVar("T")


def is_glob(pattern: str) -> bool:
    """Whether the pattern has fnmatch wildcards (``*``, ``?``, ``[``)."""
    return any(char in _GLOB_CHARS for char in pattern)


def compile_glob(pattern: str) -> re.Pattern[str]:
    """Compile an fnmatch glob into an anchored, case-sensitive regex."""
    # fnmatch.translate is case-sensitive and anchored; "*" also crosses dots.
    return re.compile(fnmatch.translate(pattern))


def as_text(value: Any) -> str:
    """The CloudEvents string form of an attribute value."""
    if isinstance(value, bool):  # CloudEvents' canonical string form of a Boolean
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def qualname(obj: Any) -> str:
    """The qualified name of a callable or class, for messages and ``loom routes``."""
    return str(getattr(obj, "__qualname__", None) or repr(obj))


class _Pattern:
    """An exact string or an fnmatch glob, for ``source``, ``subject`` and extensions."""

    __slots__ = ("regex", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.regex = compile_glob(text) if is_glob(text) else None

    def __call__(self, value: Any) -> bool:
        if value is None:
            return False
        value = as_text(value)
        return value == self.text if self.regex is None else self.regex.match(value) is not None


@dataclass(frozen=True, kw_only=True)
class Match:
    """Which events a route applies to. All given conditions must hold; none given matches all.

    Args:
        type: Exact event type, e.g. ``"order.placed"``.
        type_prefix: Event types starting with this string, e.g. ``"order."``.
        type_glob: fnmatch pattern over the type, e.g. ``"order.*.failed"`` (``*`` also
            matches dots). At most one of ``type``, ``type_prefix``, ``type_glob``.
        source: Exact source, or a glob when it contains ``*``, ``?`` or ``[``.
        subject: Exact subject, or a glob (same rule); an event without subject never matches.
        extensions: Extension name to exact value or glob; the extension must be present
            (``{"tenant": "*"}`` requires it with any value). Non-string values compare by
            their CloudEvents string form.
        where: Predicate on the route's validated data (the model instance, or the raw data
            without a model); when false the route does not apply to the event.
    """

    type: str | None = None
    type_prefix: str | None = None
    type_glob: str | None = None
    source: str | None = None
    subject: str | None = None
    extensions: Mapping[str, str] = field(default_factory=dict)
    where: Callable[[Any], bool] | None = None
    _type_regex: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _checks: tuple[tuple[str, _Pattern], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        given = [n for n in ("type", "type_prefix", "type_glob") if getattr(self, n) is not None]
        if len(given) > 1:
            raise RouteDefinitionError(
                f"match: give at most one of type, type_prefix, type_glob (got {', '.join(given)})"
            )
        for name in (*given, "source", "subject"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise RouteDefinitionError(f"match: {name} must be a non-empty str, got {value!r}")
        checks: list[tuple[str, _Pattern]] = []
        if self.source is not None:
            checks.append(("source", _Pattern(self.source)))
        if self.subject is not None:
            checks.append(("subject", _Pattern(self.subject)))
        for name, pattern in self.extensions.items():
            if name in CORE_ATTRIBUTES:
                raise RouteDefinitionError(
                    f"match: {name!r} is a core attribute, not an extension; use its own field"
                )
            if not isinstance(pattern, str) or not pattern:
                raise RouteDefinitionError(
                    f"match: extension {name!r} needs a non-empty str value or glob, got {pattern!r}"
                )
            checks.append((name, _Pattern(pattern)))
        if self.where is not None and not callable(self.where):
            raise RouteDefinitionError(f"match: where must be callable, got {self.where!r}")
        regex = compile_glob(self.type_glob) if self.type_glob is not None else None
        object.__setattr__(self, "_type_regex", regex)
        object.__setattr__(self, "_checks", tuple(checks))

    def matches(self, event: Event) -> bool:
        """Whether the event's attributes satisfy this match (the ``where`` predicate aside)."""
        return self._type_matches(event.type) and self._rest_matches(event)

    def _type_matches(self, event_type: str) -> bool:
        if self.type is not None:
            return event_type == self.type
        if self.type_prefix is not None:
            return event_type.startswith(self.type_prefix)
        if self._type_regex is not None:
            return self._type_regex.match(event_type) is not None
        return True

    def _rest_matches(self, event: Event) -> bool:
        return all(pattern(event.attribute(name)) for name, pattern in self._checks)

    def describe(self) -> str:
        """A one-line summary, e.g. ``type=order.placed source=shop/* ext.tenant=acme``."""
        parts = []
        if self.type is not None:
            parts.append(f"type={self.type}")
        if self.type_prefix is not None:
            parts.append(f"type^={self.type_prefix}")
        if self.type_glob is not None:
            parts.append(f"type~={self.type_glob}")
        if self.source is not None:
            parts.append(f"source={self.source}")
        if self.subject is not None:
            parts.append(f"subject={self.subject}")
        parts.extend(f"ext.{name}={value}" for name, value in self.extensions.items())
        if self.where is not None:
            parts.append(f"where={qualname(self.where)}")
        return " ".join(parts) or "*"


_IndexEntry = tuple[int, Callable[[Event], bool] | None, T]
_NONE: list[Any] = []


class TypeIndex(Generic[T]):
    """Values keyed by a ``Match``, looked up by event in insertion order."""

    def __init__(self) -> None:
        self._count = 0
        self._exact: dict[str, list[_IndexEntry[T]]] = {}
        self._prefix: dict[str, list[_IndexEntry[T]]] = {}
        self._prefix_lengths: tuple[int, ...] = ()
        self._globs: list[tuple[re.Pattern[str], _IndexEntry[T]]] = []
        self._any: list[_IndexEntry[T]] = []

    def add(self, match: Match, value: T) -> None:
        """Index ``value`` under ``match``, after the values already added."""
        # Entries carry the non-type checks as None when there are none: most routes only
        # constrain the type, and skipping a call per hit is a measurable share of a lookup.
        rest = match._rest_matches if match._checks else None
        entry = (self._count, rest, value)
        self._count += 1
        glob = match.type_glob
        if match.type is not None:
            self._exact.setdefault(match.type, []).append(entry)
        elif match.type_prefix is not None:
            self._add_prefix(match.type_prefix, entry)
        elif glob is not None and not is_glob(glob):
            self._exact.setdefault(glob, []).append(entry)
        elif glob is not None and glob.endswith("*") and not is_glob(glob[:-1]):
            self._add_prefix(glob[:-1], entry)  # "order.*" is the prefix "order."
        elif glob is not None:
            self._globs.append((compile_glob(glob), entry))
        else:
            self._any.append(entry)

    def _add_prefix(self, prefix: str, entry: _IndexEntry[T]) -> None:
        if prefix not in self._prefix:
            self._prefix[prefix] = []
            self._prefix_lengths = tuple(sorted({*self._prefix_lengths, len(prefix)}))
        self._prefix[prefix].append(entry)

    def lookup(self, event: Event) -> list[T]:
        """The values whose match holds for the event's attributes, in insertion order."""
        event_type = event.type
        hits = self._exact.get(event_type, _NONE)
        more: list[_IndexEntry[T]] = []
        if self._prefix_lengths:
            size = len(event_type)
            for length in self._prefix_lengths:
                if length > size:
                    break
                bucket = self._prefix.get(event_type[:length])
                if bucket:
                    more += bucket
        if self._globs:
            more += [entry for regex, entry in self._globs if regex.match(event_type)]
        if self._any:
            more += self._any
        if more:
            hits = sorted([*hits, *more], key=_order)
        return [value for _, rest, value in hits if rest is None or rest(event)]


def _order(entry: tuple[int, Any, Any]) -> int:
    return entry[0]
