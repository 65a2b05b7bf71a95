"""Loading user code named by an import spec (``module[:attr]``): routes, codecs, workflows.

Each loader raises ``SettingsError`` naming the setting (or flag) that gave the spec, so a
typo is a start-up error with one clear line.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from temporalio.converter import PayloadCodec

from bridge.exceptions import SettingsError, SetupError
from bridge.routing import Route, Router

__all__ = ["load_codec", "load_object", "load_router"]


def load_object(spec: str, *, default_attr: str | None, setting: str) -> Any:
    """Import ``module[:attr]`` and return the attribute (or the module).

    Raises:
        SettingsError: The module or attribute does not exist; names ``setting``.
    """
    module_name, _, attr = spec.partition(":")
    attr = attr or (default_attr or "")
    if not module_name:
        raise SettingsError(f"{setting}: expected 'module[:attr]', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SettingsError(f"{setting}: cannot import module {module_name!r}: {exc}") from None
    if not attr:
        return module
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SettingsError(
                f"{setting}: module {module_name!r} has no attribute {attr!r}"
            ) from None
    return obj


def load_router(spec: str, *, setting: str = "LOOM_ROUTES") -> Router:
    """Load the route table named by ``module[:attr]`` (attribute ``router`` by default).

    The attribute may be a :class:`Router`, a sequence of :class:`Route`, or a callable
    returning either.

    Raises:
        SettingsError: The module or attribute is missing, or is no route table; a route that
            is wrong in itself fails its own check, reported under ``setting``.
    """
    try:
        obj = load_object(spec, default_attr="router", setting=setting)
        if callable(obj) and not isinstance(obj, Router):
            obj = obj()
    except SettingsError:
        raise
    except SetupError as exc:  # RouteDefinitionError raised while the module builds its routes
        raise SettingsError(f"{setting}: {spec!r}: {exc}") from None
    if isinstance(obj, Router):
        return obj
    if isinstance(obj, Sequence) and all(isinstance(r, Route) for r in obj):
        try:
            return Router(obj)
        except SetupError as exc:
            raise SettingsError(f"{setting}: {spec!r}: {exc}") from None
    raise SettingsError(
        f"{setting}: {spec!r} is {type(obj).__name__}, expected a Router, a list of Route, "
        "or a callable returning one"
    )


def load_codec(spec: str, *, setting: str = "LOOM_TEMPORAL__CODEC") -> PayloadCodec:
    """Load a payload codec from ``module:attr``: a codec instance, or a factory of one.

    Raises:
        SettingsError: Not importable, or not a ``temporalio.converter.PayloadCodec``.
    """
    obj = load_object(spec, default_attr=None, setting=setting)
    if not isinstance(obj, PayloadCodec) and callable(obj):
        obj = obj()
    if not isinstance(obj, PayloadCodec):
        raise SettingsError(
            f"{setting}: {spec!r} gave {type(obj).__name__}, expected a "
            "temporalio.converter.PayloadCodec (or a factory returning one)"
        )
    return obj
