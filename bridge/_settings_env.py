"""Settings as people write them in an environment, and errors that name the variable.

Lists come as ``a,b`` or JSON, maps as ``k=v,k=v`` or JSON (pydantic-settings alone insists on
JSON and fails with a traceback). Errors from pydantic's validation and from pydantic-settings'
own parsing both become one line naming the ``LOOM_*`` variable at fault.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator
from pydantic_settings import BaseSettings, NoDecode
from pydantic_settings import SettingsError as SourceError

__all__ = ["TextList", "TextMap", "located", "setting_name", "source_problem"]


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not valid JSON ({exc}); expected {what}") from None


def _text_list(value: Any) -> Any:
    """``a,b`` (spaces around names ignored) or a JSON array."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        return _json(text, "a JSON array or names separated by commas (a,b)")
    return [part.strip() for part in text.split(",") if part.strip()]


def _text_map(value: Any) -> Any:
    """``k=v,k=v`` or a JSON object."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("{"):
        return _json(text, "a JSON object or k=v pairs separated by commas (a=b,c=d)")
    pairs: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, item = (x.strip() for x in part.partition("="))
        if not sep or not key or not item:
            raise ValueError(
                f"expected k=v pairs separated by commas (a=b,c=d) or a JSON object, got {part!r}"
            )
        pairs[key] = item
    return pairs


#: A list from the environment: ``a,b`` or JSON (pydantic-settings would insist on JSON).
TextList = Annotated[list[str], NoDecode, BeforeValidator(_text_list)]
#: A map from the environment: ``k=v,k=v`` or JSON.
TextMap = Annotated[dict[str, str], NoDecode, BeforeValidator(_text_map)]


def setting_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable of a setting from a pydantic error location."""
    return "LOOM_" + "__".join(str(part).upper() for part in loc if not isinstance(part, int))


def located(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """The variable of an error location; inside a map, the key is not part of the name."""
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            break
        parts.append(str(part))
        annotation = field.annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return setting_name(tuple(parts or loc))


def _groups(model: type[BaseModel], prefix: str) -> list[str]:
    names = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names.append(prefix + name.upper())
            names.extend(_groups(annotation, prefix + name.upper() + "__"))
    return names


def source_problem(settings: type[BaseSettings], exc: SourceError) -> str:
    """One line naming the variable behind an error of pydantic-settings' own parsing."""
    # pydantic-settings says 'error parsing value for field "kafka" from source "..."': find
    # the variable of that group whose value is not JSON (the environment, then .env).
    field = re.search(r'field "(\w+)"', str(exc))
    group = setting_name((field.group(1),)) if field else "LOOM_*"
    values: dict[str, str] = {}
    env_file = Path(str(settings.model_config.get("env_file") or ".env"))
    if env_file.is_file():
        from dotenv import dotenv_values

        values.update({k.upper(): v for k, v in dotenv_values(env_file).items() if v})
    values.update({k.upper(): v for k, v in os.environ.items()})
    for name in _groups(settings, "LOOM_"):
        if name == group or name.startswith(group + "__"):
            try:
                json.loads(values.get(name, "{}"))
            except ValueError:
                return (
                    f"{name}: not a JSON object; set its settings one by one instead "
                    f"({name}__<SETTING>=value)"
                )
    cause = exc.__cause__
    return f"{group}: {cause or exc}"
