"""Templates over an event: ``"order-{data.order_id}"``, ``"{subject}"``, ``"{source}/{id}"``.

A template is a ``str.format``-style string whose fields name a *root* and an optional path:

- core attributes: ``{id}``, ``{source}``, ``{type}``, ``{subject}``, ``{time}``,
  ``{specversion}``, ``{datacontenttype}``, ``{dataschema}``;
- data: ``{data}`` or ``{data.<path>}``, where each path step is a model attribute, a mapping
  key, or a sequence index (``{data.items.0.sku}``); with a route model the path is walked on
  the validated model instance, without one on the raw JSON data;
- extensions: ``{ext.<name>}`` (e.g. ``{ext.tenant}``).

Extensions are always written ``ext.<name>``, never bare: a bare unknown name is then a typo
caught at construction rather than a missing extension found at the first event.

Templates are compiled when a route is built: a syntax error, an unknown root or, when the
route has a pydantic model, a ``data.<field>`` the model does not declare raises
``RouteDefinitionError``. At runtime a field that is absent or ``None`` raises
``TemplateError`` (the caller dead-letters the record). Format specs work (``{data.n:05d}``);
datetimes render in ISO 8601.
"""

from __future__ import annotations

import re
import string
import types
import typing
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from bridge.events import CORE_ATTRIBUTES, Event
from bridge.exceptions import RouteDefinitionError, TemplateError

#: Roots a template field may start with (besides ``ext.<name>``).
ROOTS = frozenset(CORE_ATTRIBUTES | {"specversion", "data"})

# Underscore-led steps are refused so that a template can never reach dunder attributes.
_STEP = re.compile(r"^(?!_)[\w-]+$")
_EXTENSION = re.compile(r"^[a-z0-9]+$")
_MISSING: Any = object()
_CONVERSIONS: dict[str, Callable[[Any], str]] = {"r": repr, "s": str, "a": ascii}

_Getter = Callable[[Event, Any], Any]


class CompiledTemplate:
    """A parsed template, ready to render against an event and its (validated) data.

    Attributes:
        source: The template text as declared.
        fields: The field names it references, in order (e.g. ``("data.order_id",)``).
    """

    __slots__ = ("_parts", "_single", "fields", "source")

    def __init__(
        self,
        source: str,
        parts: list[tuple[str, str | None, _Getter | None, str, str | None]],
    ) -> None:
        self.source = source
        self._parts = parts
        self.fields = tuple(field for _, field, _, _, _ in parts if field is not None)
        # A template that is exactly one bare field yields the raw value through value():
        # memo and search attributes keep their type (int, datetime) instead of a string.
        literal, _, getter, spec, conversion = parts[0]
        single = len(parts) == 1 and not literal and not spec and conversion is None
        self._single: _Getter | None = getter if single else None

    def __repr__(self) -> str:
        return f"CompiledTemplate({self.source!r})"

    def render(self, event: Event, data: Any) -> str:
        """Render the template as a string.

        Raises:
            TemplateError: A referenced field is absent or ``None``, or its format spec fails.
        """
        out: list[str] = []
        for literal, field, getter, spec, conversion in self._parts:
            out.append(literal)
            if getter is None:
                continue
            value = getter(event, data)
            if conversion is not None:
                value = _CONVERSIONS[conversion](value)
            elif isinstance(value, datetime) and not spec:
                value = value.isoformat()
            try:
                out.append(format(value, spec))
            except (ValueError, TypeError) as exc:
                raise TemplateError(
                    f"template {self.source!r}: cannot format {{{field}}} with spec {spec!r}: {exc}"
                ) from exc
        return "".join(out)

    def value(self, event: Event, data: Any) -> Any:
        """The raw value for a single-field template (``"{data.amount}"``), else ``render()``."""
        if self._single is not None:
            return self._single(event, data)
        return self.render(event, data)


def compile_template(source: str, *, model: type[BaseModel] | None = None) -> CompiledTemplate:
    """Parse and check a template.

    Args:
        source: The template text.
        model: The route's pydantic model; ``data.<path>`` fields are checked against it.

    Raises:
        RouteDefinitionError: Bad syntax, no field at all, an unknown root, or a data path the
            model does not declare.
    """
    if not isinstance(source, str):
        raise RouteDefinitionError(f"template must be a str or a callable, got {source!r}")
    try:
        parsed = list(string.Formatter().parse(source))
    except ValueError as exc:
        raise RouteDefinitionError(f"template {source!r}: {exc}") from exc
    parts: list[tuple[str, str | None, _Getter | None, str, str | None]] = []
    for literal, field, spec, conversion in parsed:
        if field is None:
            parts.append((literal, None, None, "", None))
            continue
        spec = spec or ""
        if "{" in spec:
            raise RouteDefinitionError(f"template {source!r}: nested fields are not supported")
        getter = _compile_field(source, field, model)
        parts.append((literal, field, getter, spec, conversion))
    if not any(field is not None for _, field, _, _, _ in parts):
        # A constant workflow id sends every event to one workflow: almost always a mistake.
        raise RouteDefinitionError(
            f"template {source!r} references no field; use e.g. '{{subject}}' or '{{data.id}}'"
        )
    return CompiledTemplate(source, parts)


def _compile_field(source: str, field: str, model: type[BaseModel] | None) -> _Getter:
    if not field or field.isdigit():
        raise RouteDefinitionError(
            f"template {source!r}: positional fields are not supported, name a root "
            f"({', '.join(sorted(ROOTS))}, ext.<name>)"
        )
    if "[" in field:
        raise RouteDefinitionError(
            f"template {source!r}: write {{data.items.0}} instead of index brackets in {{{field}}}"
        )
    root, *path = field.split(".")
    for step in path:
        if not _STEP.match(step):
            raise RouteDefinitionError(
                f"template {source!r}: bad path step {step!r} in {{{field}}}"
            )
    if root == "ext":
        if len(path) != 1 or not _EXTENSION.match(path[0]):
            raise RouteDefinitionError(
                f"template {source!r}: extensions are written {{ext.<name>}} with a lower-case "
                f"alphanumeric name, got {{{field}}}"
            )
        return _extension_getter(source, path[0])
    if root == "data":
        if model is not None:
            _check_model_path(source, field, model, path)
        return _data_getter(source, field, tuple(path))
    if root in ROOTS:
        if path:
            raise RouteDefinitionError(f"template {source!r}: attribute {root!r} has no fields")
        return _attribute_getter(source, root)
    raise RouteDefinitionError(
        f"template {source!r}: unknown field {{{field}}}; roots are "
        f"{', '.join(sorted(ROOTS))} and ext.<name>"
    )


def _missing(source: str, field: str) -> TemplateError:
    return TemplateError(f"template {source!r}: the event has no value for {{{field}}}")


def _attribute_getter(source: str, name: str) -> _Getter:
    def get(event: Event, data: Any) -> Any:
        value = getattr(event, name)
        if value is None:
            raise _missing(source, name)
        return value

    return get


def _extension_getter(source: str, name: str) -> _Getter:
    def get(event: Event, data: Any) -> Any:
        value = event.extensions.get(name)
        if value is None:
            raise _missing(source, f"ext.{name}")
        return value

    return get


def _data_getter(source: str, field: str, path: tuple[str, ...]) -> _Getter:
    def get(event: Event, data: Any) -> Any:
        value = data
        for step in path:
            value = _step(value, step)
            if value is _MISSING:
                break
        if value is _MISSING or value is None:
            raise _missing(source, field)
        return value

    return get


_BY_KEY, _BY_INDEX, _NONE, _BY_ATTRIBUTE = range(4)
# How each type of value is stepped into, found once per type: ``isinstance(value, Mapping)``
# goes through the ABC machinery, a few microseconds per event for a model that is no Mapping
# (measured: a third of a ``{data.x}`` render). The types met are the data models and the
# JSON types: few, but a bound keeps a stream of classes made on the fly from growing it.
_KINDS: dict[type, int] = {dict: _BY_KEY, list: _BY_INDEX, str: _NONE}
_KINDS_MAX = 1024


def _kind(cls: type, value: Any) -> int:
    if isinstance(value, Mapping):
        kind = _BY_KEY
    elif isinstance(value, list | tuple):
        kind = _BY_INDEX
    elif isinstance(value, str | bytes | bytearray | int | float | bool):
        kind = _NONE
    else:
        kind = _BY_ATTRIBUTE
    if len(_KINDS) < _KINDS_MAX:
        _KINDS[cls] = kind
    return kind


def _step(value: Any, step: str) -> Any:
    cls = type(value)
    kind = _KINDS.get(cls)
    if kind is None:
        kind = _kind(cls, value)
    if kind == _BY_ATTRIBUTE:
        return getattr(value, step, _MISSING)
    if kind == _BY_KEY:
        return value.get(step, _MISSING)
    if kind == _BY_INDEX:
        if not step.isdigit():
            return _MISSING
        index = int(step)
        return value[index] if index < len(value) else _MISSING
    return _MISSING


def _check_model_path(source: str, field: str, model: type[BaseModel], path: list[str]) -> None:
    current: Any = model
    for step in path:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return  # past the models (dict, list, Any...): only runtime can tell
        if current.model_config.get("extra") == "allow":
            return
        declared = current.model_fields.get(step)
        if declared is not None:
            current = _unwrap_optional(declared.annotation)
        elif step in current.model_computed_fields or isinstance(
            getattr(current, step, None), property
        ):
            current = None
        else:
            raise RouteDefinitionError(
                f"template {source!r}: {current.__name__} has no field {step!r} (in {{{field}}})"
            )


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return args[0] if len(args) == 1 else None
    return annotation
