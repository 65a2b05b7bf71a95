"""The handler table of entity workflows: ``@handles(type, ...)`` and how an event finds one.

A handler is a method of an :class:`~bridge.workflow.entity.EntityWorkflow` subclass marked
with ``@handles``. Its first parameter after ``self`` declares what it receives: a pydantic
model (or any type pydantic validates) gets the event's ``data`` validated into it, ``Event``
gets the event itself, no annotation (or ``Any``) gets the raw ``data``. An optional second
parameter receives the ``Event``. Everything is checked when the class is built, so a bad
handler fails at import, never at the first event.

Imported inside Temporal's workflow sandbox: deterministic, no I/O, no module state.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Literal, TypeVar

from pydantic import TypeAdapter

from bridge._glob import is_glob, literal
from bridge.events import Event

__all__ = ["EntityHandler", "HandlerTable", "handles", "is_glob"]

_HANDLES_ATTR = "__loom_handles__"

FnT = TypeVar("FnT", bound=Callable[..., Any])


def handles(*types: str) -> Callable[[FnT], FnT]:
    """Mark an entity workflow method as the handler of events of ``types``.

    Each type is exact (``payment.charged``) or an fnmatch glob (``payment.*``), by the one
    pattern rule of routes (:mod:`bridge._glob`: ``[*]`` is a literal ``*``). An event goes
    to the handler of its exact type when there is one, otherwise to the first glob, in
    declaration order, that matches it (base classes first).

    Args:
        *types: One or more event types or globs.

    Raises:
        TypeError: No type, or a type that is not a non-empty str.
    """
    if not types:
        raise TypeError("@handles needs at least one event type")
    for pattern in types:
        if not isinstance(pattern, str) or not pattern:
            raise TypeError(f"@handles: event types must be non-empty str, got {pattern!r}")

    def mark(fn: FnT) -> FnT:
        setattr(fn, _HANDLES_ATTR, tuple(types))
        return fn

    return mark


@dataclass(frozen=True)
class EntityHandler:
    """One handler of an entity workflow, as declared.

    Attributes:
        method: Name of the method.
        types: The event types and globs it handles, as given to ``@handles``.
        annotation: What its first parameter declares (a model, ``Event``, or None for raw
            data).
        takes: ``"data"`` (validated into ``annotation``), ``"event"`` or ``"raw"``.
        with_event: The method takes the ``Event`` as a second argument.
        is_async: The method is a coroutine function (it may await activities, ``emit()``,
            ``request()`` and other events).
    """

    method: str
    types: tuple[str, ...]
    annotation: Any
    takes: Literal["data", "event", "raw"]
    with_event: bool
    is_async: bool
    adapter: TypeAdapter[Any] | None = None

    def argument(self, event: Event) -> Any:
        """The handler's first argument for ``event``.

        Raises:
            pydantic.ValidationError: ``data`` does not validate into the declared model.
        """
        if self.takes == "event":
            return event
        if self.takes == "raw" or self.adapter is None:
            return event.data
        if isinstance(event.data, bytes | bytearray):
            return self.adapter.validate_json(event.data)
        return self.adapter.validate_python(event.data)


class HandlerTable:
    """The handlers of one entity class: exact types in a dict, globs in declaration order.

    Raises:
        TypeError: A handler's signature is not one of the supported forms, or two handlers
            claim the same type or glob.
    """

    def __init__(self, owner: type) -> None:
        self.handlers: tuple[EntityHandler, ...] = tuple(
            _describe(owner, name, fn) for name, fn in _marked_methods(owner).items()
        )
        self._exact: dict[str, EntityHandler] = {}
        self._globs: list[tuple[str, EntityHandler]] = []
        claimed: dict[str, str] = {}
        for handler in self.handlers:
            for pattern in handler.types:
                if pattern in claimed:
                    raise TypeError(
                        f"{owner.__qualname__}: event type {pattern!r} has two handlers, "
                        f"{claimed[pattern]} and {handler.method}"
                    )
                claimed[pattern] = handler.method
                exact = literal(pattern)
                if exact is None:
                    self._globs.append((pattern, handler))
                else:
                    self._exact[exact] = handler

    def find(self, type: str) -> EntityHandler | None:
        """The handler of an event type: the exact one, else the first matching glob."""
        found = self._exact.get(type)
        if found is not None:
            return found
        for pattern, handler in self._globs:
            if fnmatchcase(type, pattern):
                return handler
        return None


def _marked_methods(owner: type) -> dict[str, Callable[..., Any]]:
    # Base classes first, so that globs keep their declaration order across inheritance; a
    # subclass attribute with the same name replaces (or, undecorated, removes) a handler.
    found: dict[str, Callable[..., Any]] = {}
    for klass in reversed(owner.__mro__):
        for name, attr in vars(klass).items():
            if getattr(attr, _HANDLES_ATTR, None) is not None and callable(attr):
                found.pop(name, None)
                found[name] = attr
            elif name in found:
                del found[name]
    return found


def _describe(owner: type, name: str, fn: Callable[..., Any]) -> EntityHandler:
    where = f"{owner.__qualname__}.{name}"
    params = list(inspect.signature(fn).parameters.values())[1:]  # after self
    if not 1 <= len(params) <= 2 or any(
        p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params
    ):
        raise TypeError(
            f"handler {where} must take (self, data) or (self, data, event), got "
            f"{inspect.signature(fn)}"
        )
    try:
        hints: Mapping[str, Any] = typing.get_type_hints(fn)
    except Exception as exc:
        raise TypeError(f"handler {where}: cannot resolve its annotations: {exc}") from exc
    annotation = hints.get(params[0].name)
    with_event = len(params) == 2
    if with_event and hints.get(params[1].name, Event) is not Event:
        raise TypeError(f"handler {where}: its second parameter receives the Event")
    is_async = inspect.iscoroutinefunction(fn)
    types: tuple[str, ...] = getattr(fn, _HANDLES_ATTR)
    if annotation is Event:
        return EntityHandler(name, types, Event, "event", with_event, is_async)
    if annotation is None or annotation is Any:
        return EntityHandler(name, types, None, "raw", with_event, is_async)
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    except Exception as exc:
        raise TypeError(f"handler {where}: pydantic cannot validate {annotation!r}: {exc}") from exc
    return EntityHandler(name, types, annotation, "data", with_event, is_async, adapter)
