"""LOOM_* variables in deployment files (compose, Kubernetes) checked against the settings model.

Shared by the tests of docker-compose.yml and deploy/kubernetes/: a variable must name one real
setting (walked through ``LoomSettings`` and its nested models), and its value must validate
and land where the name says.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, get_args, get_origin

import pytest
from pydantic import BaseModel, SecretStr, TypeAdapter

from bridge.settings import LoomSettings


def setting_path(variable: str) -> tuple[list[str], Any]:
    """The field path and type of a LOOM_ variable, walked through the LoomSettings model."""
    parts = variable.removeprefix("LOOM_").lower().split("__")
    model: type[BaseModel] = LoomSettings
    annotation: Any = None
    for index, part in enumerate(parts):
        field = model.model_fields.get(part)
        assert field is not None, f"{variable}: {model.__name__} has no field {part!r}"
        annotation = field.annotation
        is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        if index < len(parts) - 1:
            assert is_model, f"{variable}: {part!r} is not a nested model"
            model = annotation
        else:
            assert not is_model, f"{variable}: {part!r} is a group of settings, not one"
    return parts, annotation


def is_secret(variable: str) -> bool:
    """Whether the setting a LOOM_ variable names holds a secret (``SecretStr``)."""
    _, annotation = setting_path(variable)
    return annotation is SecretStr or SecretStr in get_args(annotation)


def _is_complex(annotation: Any) -> bool:
    # pydantic-settings reads lists, dicts and the like from the environment as JSON.
    kinds = (list, dict, set, tuple, frozenset)
    if get_origin(annotation) in kinds:
        return True
    return any(get_origin(arg) in kinds for arg in get_args(annotation))


def expected_value(variable: str, raw: str) -> Any:
    """The value a setting must hold when its variable is set to ``raw``."""
    _, annotation = setting_path(variable)
    value: Any = json.loads(raw) if _is_complex(annotation) else raw
    return TypeAdapter(annotation).validate_python(value)


def settings_from_env(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> LoomSettings:
    """LoomSettings read from exactly ``env`` (every other LOOM_ variable removed, no .env)."""
    for variable in list(os.environ):
        if variable.startswith("LOOM_"):
            monkeypatch.delenv(variable)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    return LoomSettings(_env_file=None)


def assert_real_settings(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> LoomSettings:
    """Every LOOM_ variable of ``env`` names a setting, validates and lands where it says.

    Returns the settings read from ``env``.
    """
    variables = {k: v for k, v in env.items() if k.startswith("LOOM_")}
    for variable in variables:
        setting_path(variable)
    settings = settings_from_env(variables, monkeypatch)
    for variable, raw in variables.items():
        parts, _ = setting_path(variable)
        current: Any = settings
        for part in parts:
            current = getattr(current, part)
        assert current == expected_value(variable, raw), (variable, raw, current)
    return settings
