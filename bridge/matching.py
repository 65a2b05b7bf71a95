"""Matching events on CloudEvents attributes and topics, and the index behind the router.

``Match`` declares the conditions of a route, the topics it is bound to among them.
``TypeIndex`` finds the values (routes) whose match holds for an event without scanning them
all: exact types are a dict lookup, type prefixes a dict probed once per distinct prefix
length (never more probes than the type has characters), globs are compiled regexes in a
separate, usually short, list, and matches without a type condition sit in a catch-all list.
Every matcher follows the one pattern rule of :mod:`bridge._glob` (fnmatch globs, ``[*]``
for a literal ``*``); a type pattern that matches one string is indexed as an exact type,
``"<literal>*"`` as a prefix. ``type_prefix`` does not glob: a pattern character there is
refused when the route is declared, with the field to use instead.
``MatchIndex`` puts topics in front: unbound matches in one ``TypeIndex``, and for each topic
with bound matches, built the first time it is looked up, a ``TypeIndex`` of the matches that
apply to it: a lookup costs one type-index lookup, however many topics routes are bound to.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from bridge._glob import GLOB_CHARS, compile_glob, escape, is_glob, literal
from bridge.events import CORE_ATTRIBUTES, Event
from bridge.exceptions import RouteDefinitionError

__all__ = ["Match", "MatchIndex", "TypeIndex", "as_text", "compile_glob", "is_glob", "qualname"]

T = TypeVar("T")


def as_text(value: Any) -> str:
    """The CloudEvents string form of an attribute value."""
    if isinstance(value, bool):  # CloudEvents' canonical string form of a Boolean
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def qualname(obj: Any) -> str:
    """The qualified name of a callable or class, for messages and ``loom routes``."""
    return str(getattr(obj, "__qualname__", None) or repr(obj))


class _Pattern:
    """An fnmatch glob for ``source``, ``subject`` and extensions; a literal compares equal."""

    __slots__ = ("regex", "text")

    def __init__(self, pattern: str) -> None:
        text = literal(pattern)
        self.text = pattern if text is None else text
        self.regex = compile_glob(pattern) if text is None else None

    def __call__(self, value: Any) -> bool:
        if value is None:
            return False
        value = as_text(value)
        return value == self.text if self.regex is None else self.regex.match(value) is not None


@dataclass(frozen=True, kw_only=True)
class Match:
    """Which events a route applies to. All given conditions must hold; none given matches all.

    Every field but ``type_prefix`` and ``where`` is an fnmatch glob (``*``, ``?``,
    ``[...]``; ``*`` also matches dots), and a pattern without those characters is the exact
    string. A literal ``*``, ``?`` or ``[`` is written in brackets: ``"io.x.[*]"`` is the
    type ``io.x.*`` exactly (:func:`bridge._glob.escape` writes it).

    Args:
        type: The event type or a glob over it, e.g. ``"order.placed"``, ``"order.*"``.
            Held normalized: ``type`` is the exact type (escapes undone) when the pattern
            matches one type only, else None and the pattern is in ``type_glob``.
        type_prefix: Event types starting with this string, e.g. ``"order."``. It does not
            glob: a pattern character in it is refused (write ``type="order.*"``).
        type_glob: The same as ``type`` (from 0.1, where ``type`` did not glob). At most one
            of ``type``, ``type_prefix``, ``type_glob``.
        source: The source, or a glob over it.
        subject: The subject, or a glob; an event without subject never matches.
        extensions: Extension name to value or glob; the extension must be present
            (``{"tenant": "*"}`` requires it with any value). Non-string values compare by
            their CloudEvents string form.
        where: Predicate on the route's validated data (the model instance, or the raw data
            without a model); when false the route does not apply to the event.
        topic: The Kafka topic(s) the route is bound to: one topic, a sequence of them, each
            exact or a glob (``"orders.*"``). A bound route matches only records read from
            one of them; an unbound route (None, the default) matches any consumed topic.
            The topic is the record's, not a CloudEvents attribute.
    """

    type: str | None = None
    type_prefix: str | None = None
    type_glob: str | None = None
    source: str | None = None
    subject: str | None = None
    extensions: Mapping[str, str] = field(default_factory=dict)
    where: Callable[[Any], bool] | None = None
    topic: str | Sequence[str] | None = None
    _topics: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _topic_check: _Patterns | None = field(init=False, repr=False, compare=False)
    _type_regex: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _checks: tuple[tuple[str, _Pattern], ...] = field(init=False, repr=False, compare=False)
    _type_0_1: str | None = field(init=False, repr=False, compare=False)

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
        if self.type_prefix is not None and GLOB_CHARS & set(self.type_prefix):
            raise RouteDefinitionError(
                f"match: type_prefix {self.type_prefix!r} holds a pattern character, and "
                f"type_prefix does not glob: write type={self.type_prefix + '*'!r} for a "
                f"pattern (type globs), or type={escape(self.type_prefix) + '*'!r} for "
                "types that start with these characters literally"
            )
        pattern = self.type if self.type is not None else self.type_glob
        # Given as ``type`` with a pattern character: the exact type in 0.1, a pattern now.
        changed = self.type is not None and bool(GLOB_CHARS & set(self.type))
        object.__setattr__(self, "_type_0_1", self.type if changed else None)
        if pattern is not None:  # one rule: held as the exact type, or as the glob
            exact = literal(pattern)
            object.__setattr__(self, "type", exact)
            object.__setattr__(self, "type_glob", pattern if exact is None else None)
        checks: list[tuple[str, _Pattern]] = []
        if self.source is not None:
            checks.append(("source", _Pattern(self.source)))
        if self.subject is not None:
            checks.append(("subject", _Pattern(self.subject)))
        for name, pattern in self.extensions.items():
            if isinstance(name, str) and GLOB_CHARS & set(name):
                raise RouteDefinitionError(
                    f"match: extension name {name!r} holds a pattern character, and extension "
                    "names do not glob: name each extension (its value globs)"
                )
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
        topics = _topics(self.topic)
        regex = compile_glob(self.type_glob) if self.type_glob is not None else None
        object.__setattr__(self, "_topics", topics)
        object.__setattr__(self, "_topic_check", _Patterns(topics) if topics else None)
        object.__setattr__(self, "_type_regex", regex)
        object.__setattr__(self, "_checks", tuple(checks))

    def changed_meaning(self) -> str | None:
        """How 0.2.0's one pattern rule changed this match, if it did (``loom check``).

        In 0.1 ``type`` was the exact type whatever it held; since 0.2.0 it globs.
        """
        given = self._type_0_1
        if given is None:
            return None
        now = literal(given)
        meaning = "a glob" if now is None else f"the exact type {now!r}"
        return (
            f"type {given!r} is {meaning} since 0.2.0; in 0.1 it was the exact type "
            f"{given!r}: write type={escape(given)!r} to keep that"
        )

    @property
    def topics(self) -> tuple[str, ...]:
        """The topics (exact or globs) the match is bound to; empty when unbound."""
        return self._topics

    def matches(self, event: Event, topic: str | None = None) -> bool:
        """Whether the event's attributes satisfy this match (the ``where`` predicate aside).

        Args:
            event: The event.
            topic: The topic the event was read from; None when unknown (the topic
                binding is then not checked).
        """
        return (
            self._type_matches(event.type)
            and self._rest_matches(event)
            and (topic is None or self.binds(topic))
        )

    def binds(self, topic: str) -> bool:
        """Whether a record of ``topic`` can match (always, for an unbound match)."""
        return self._topic_check is None or self._topic_check(topic)

    def unconsumed(self, consumed: Iterable[str]) -> tuple[str, ...]:
        """The bound topics (or globs) that name none of the ``consumed`` topics."""
        consumed = list(consumed)
        return tuple(
            topic for topic in self._topics if not any(_Patterns((topic,))(c) for c in consumed)
        )

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
            parts.append(f"type={escape(self.type)}")
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
        if self._topics:
            parts.append(f"topic={'|'.join(self._topics)}")
        return " ".join(parts) or "*"


class _Patterns:
    """Exact topics in a set, globs as regexes: does a topic name one of them?"""

    __slots__ = ("exact", "globs")

    def __init__(self, patterns: Iterable[str]) -> None:
        patterns = tuple(patterns)
        exact = {p: literal(p) for p in patterns}
        self.exact = frozenset(text for text in exact.values() if text is not None)
        self.globs = tuple(compile_glob(p) for p, text in exact.items() if text is None)

    def __call__(self, topic: str) -> bool:
        return topic in self.exact or any(regex.match(topic) for regex in self.globs)


def _topics(topic: str | Sequence[str] | None) -> tuple[str, ...]:
    if topic is None:
        return ()
    topics = (topic,) if isinstance(topic, str) else topic
    if not isinstance(topics, Sequence) or not topics:
        raise RouteDefinitionError(
            f"match: topic must be a non-empty str or a non-empty sequence of them, got {topic!r}"
        )
    for name in topics:
        if not isinstance(name, str) or not name.strip():
            raise RouteDefinitionError(f"match: topic names must be non-empty str, got {name!r}")
    return tuple(dict.fromkeys(topics))


_IndexEntry = tuple[int, Callable[[Event], bool] | None, T]
_NONE: list[Any] = []
#: Topics whose index ``MatchIndex`` remembers (a sidecar consumes few topics; each index of
#: a topic with bindings holds the unbound matches too).
_TOPIC_CACHE = 256


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
        glob = match.type_glob  # a real glob: a literal pattern is held as ``type``
        head = literal(glob[:-1]) if glob is not None and glob.endswith("*") else None
        if match.type is not None:
            self._exact.setdefault(match.type, []).append(entry)
        elif match.type_prefix is not None:
            self._add_prefix(match.type_prefix, entry)
        elif head is not None:
            self._add_prefix(head, entry)  # "order.*" is the prefix "order."
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


class MatchIndex(Generic[T]):
    """Values keyed by a ``Match``, looked up by event and topic in insertion order.

    Unbound matches sit in one ``TypeIndex``, used as it is for a topic no match is bound to.
    The first time a topic with bound matches is looked up, the index builds a ``TypeIndex``
    of the matches that apply to it (unbound, bound to it, bound to a glob it fits) and
    remembers it: a lookup is one dict probe plus one type-index lookup, whatever the number
    of topics and bindings. ``topic=None`` (unknown) gets the index of every match.
    """

    def __init__(self) -> None:
        self._entries: list[tuple[Match, T]] = []
        #: The unbound matches; all of them while ``bound`` is false.
        self.unbound: TypeIndex[T] = TypeIndex()
        #: Whether any match is bound to a topic.
        self.bound = False
        self._for_topic: dict[str | None, TypeIndex[T]] = {}

    def add(self, match: Match, value: T) -> None:
        """Index ``value`` under ``match``, after the values already added."""
        self._entries.append((match, value))
        self._for_topic.clear()
        if match.topics:
            self.bound = True
        else:
            self.unbound.add(match, value)

    def lookup(self, event: Event, topic: str | None = None) -> list[T]:
        """The values whose match holds for the event read from ``topic``, in order.

        With ``topic=None`` (unknown) the topic bindings are not checked: every match whose
        attribute conditions hold applies, bound or not.
        """
        return self.for_topic(topic).lookup(event)

    def for_topic(self, topic: str | None) -> TypeIndex[T]:
        """The type index of the matches that apply to records of ``topic`` (None: all)."""
        if not self.bound:
            return self.unbound
        index = self._for_topic.get(topic)
        return index if index is not None else self._index(topic)

    def _index(self, topic: str | None) -> TypeIndex[T]:
        entries = self._entries
        if topic is not None and not any(m.topics and m.binds(topic) for m, _ in entries):
            index = self.unbound  # nothing bound to this topic: the unbound matches alone
        else:
            index = TypeIndex()
            for match, value in entries:
                if topic is None or not match.topics or match.binds(topic):
                    index.add(match, value)
        if len(self._for_topic) >= _TOPIC_CACHE:
            # Many topics (a pattern subscription?): forget the oldest, rebuilt on demand.
            del self._for_topic[next(iter(self._for_topic))]
        self._for_topic[topic] = index
        return index


def _order(entry: tuple[int, Any, Any]) -> int:
    return entry[0]
