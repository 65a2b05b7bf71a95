"""What every ``loom`` command shares: the options, the settings, and how a command fails."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from bridge.exceptions import SettingsError
from bridge.settings import LoomSettings, load_settings

# Rich falls back to 80 columns when not on a terminal; tables of routes need more (COLUMNS
# still wins when set).
_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
out = Console(highlight=False, width=_WIDTH)
err = Console(stderr=True, highlight=False, width=_WIDTH)

#: Exit code of a settings error (same as a usage error: the command line or environment).
EXIT_SETTINGS = 2

T = TypeVar("T")

# --- shared options -----------------------------------------------------------------------------

Bootstrap = Annotated[
    str | None, typer.Option("--bootstrap", help="Kafka bootstrap servers (LOOM_KAFKA__BOOTSTRAP).")
]
TemporalAddress = Annotated[
    str | None,
    typer.Option("--temporal-address", help="Temporal host:port (LOOM_TEMPORAL__ADDRESS)."),
]
Namespace = Annotated[
    str | None, typer.Option("--namespace", help="Temporal namespace (LOOM_TEMPORAL__NAMESPACE).")
]
GroupId = Annotated[
    str | None, typer.Option("--group-id", help="Kafka consumer group (LOOM_KAFKA__GROUP_ID).")
]
Topics = Annotated[
    list[str] | None,
    typer.Option("--topic", help="Topic to consume; repeat for several (LOOM_KAFKA__TOPICS)."),
]
DeadletterTopic = Annotated[
    str | None,
    typer.Option("--deadletter-topic", help="Dead-letter topic (LOOM_KAFKA__DEADLETTER_TOPIC)."),
]
HttpPort = Annotated[
    int | None,
    typer.Option("--http-port", help="Health/metrics port, 0 for none (LOOM_HTTP_PORT)."),
]
RoutesOpt = Annotated[
    str | None,
    typer.Option("--routes", help="Route table as MODULE[:ATTR], attribute 'router' by default (LOOM_ROUTES)."),
]
LogJson = Annotated[
    bool | None, typer.Option("--log-json/--log-text", help="JSON log lines (LOOM_LOG_JSON).")
]
LogLevel = Annotated[
    str | None, typer.Option("--log-level", help="DEBUG, INFO, WARNING, ERROR (LOOM_LOG_LEVEL).")
]


def overrides(
    *,
    bootstrap: str | None = None,
    temporal_address: str | None = None,
    namespace: str | None = None,
    group_id: str | None = None,
    topics: list[str] | None = None,
    deadletter_topic: str | None = None,
    http_port: int | None = None,
    routes: str | None = None,
    log_json: bool | None = None,
    log_level: str | None = None,
) -> dict[str, Any]:
    """Flags given on the command line as nested settings overrides (deep-merged over env)."""
    kafka = {
        k: v
        for k, v in {
            "bootstrap": bootstrap,
            "group_id": group_id,
            "topics": topics or None,
            "deadletter_topic": deadletter_topic,
        }.items()
        if v is not None
    }
    temporal = {
        k: v for k, v in {"address": temporal_address, "namespace": namespace}.items() if v
    }
    top = {
        k: v
        for k, v in {
            "http_port": http_port,
            "routes": routes,
            "log_json": log_json,
            "log_level": log_level.upper() if log_level else None,
        }.items()
        if v is not None
    }
    return {**top, **({"kafka": kafka} if kafka else {}), **({"temporal": temporal} if temporal else {})}


def as_env(overrides: dict[str, Any], prefix: str = "LOOM_") -> dict[str, str]:
    """Nested overrides as ``LOOM_A__B`` environment variables (JSON for lists)."""
    env: dict[str, str] = {}
    for key, value in overrides.items():
        name = prefix + key.upper()
        if isinstance(value, dict):
            env.update(as_env(value, name + "__"))
        elif isinstance(value, list):
            env[name] = json.dumps(value)
        else:
            env[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` (plain text: brackets such as ``[embedded]`` stay) on stderr, exit."""
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def settings_from(overrides: dict[str, Any]) -> LoomSettings:
    """Load the settings or exit 2 with the message naming the setting."""
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        fail(str(exc), EXIT_SETTINGS)


def guarded(fn: Callable[[], T]) -> T:
    """Run ``fn``; a SettingsError it raises exits 2 with its message."""
    try:
        return fn()
    except SettingsError as exc:
        fail(str(exc), EXIT_SETTINGS)


def import_path() -> None:
    # Console scripts do not put the working directory on sys.path (python -m does):
    # `loom run --routes myapp.routes` from a project directory must find myapp.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
