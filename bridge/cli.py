"""The ``loom`` command: run the sidecar, publish events, inspect routes and the dead-letter topic.

Settings come from ``LOOM_*`` environment variables and ``.env``; flags override them. A bad
setting exits with code 2 and a message naming the setting (its environment variable);
secrets never appear in any output.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from bridge.exceptions import SettingsError
from bridge.logs import configure_logging
from bridge.settings import LoomSettings, load_settings

__all__ = ["app", "main"]

app = typer.Typer(
    name="loom",
    help="temporal-loom: CloudEvents on Kafka drive Temporal workflows, and back.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
dlq_app = typer.Typer(help="Inspect and re-drive the dead-letter topic.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

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


def _overrides(
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


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` on stderr and exit with ``code``."""
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True)
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


def _import_path() -> None:
    # Console scripts do not put the working directory on sys.path (python -m does):
    # `loom run --routes myapp.routes` from a project directory must find myapp.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


# --- loom run ------------------------------------------------------------------------------------


@app.command()
def run(
    routes: RoutesOpt = None,
    bootstrap: Bootstrap = None,
    temporal_address: TemporalAddress = None,
    namespace: Namespace = None,
    group_id: GroupId = None,
    topic: Topics = None,
    deadletter_topic: DeadletterTopic = None,
    http_port: HttpPort = None,
    log_json: LogJson = None,
    log_level: LogLevel = None,
) -> None:
    """Run the sidecar until SIGTERM/SIGINT (drains in-flight calls and commits first)."""
    from bridge.service import load_router, run_sidecar

    settings = settings_from(
        _overrides(
            bootstrap=bootstrap,
            temporal_address=temporal_address,
            namespace=namespace,
            group_id=group_id,
            topics=topic,
            deadletter_topic=deadletter_topic,
            http_port=http_port,
            routes=routes,
            log_json=log_json,
            log_level=log_level,
        )
    )
    configure_logging(settings.log_level, json_lines=settings.log_json)
    _import_path()
    router = guarded(lambda: load_router(settings.routes))
    code = guarded(lambda: run_sidecar(settings, router))
    raise typer.Exit(code)


# --- loom worker ---------------------------------------------------------------------------------


@app.command()
def worker(
    entry: Annotated[
        str, typer.Option("--entry", help="Worker entry point MODULE:ATTR.")
    ] = "workflows.worker:main",
    temporal_address: TemporalAddress = None,
    namespace: Namespace = None,
    bootstrap: Bootstrap = None,
    log_json: LogJson = None,
    log_level: LogLevel = None,
) -> None:
    """Run the reference application's Temporal worker (workflows + publish activity).

    The entry point gets the settings (it builds its client with
    ``bridge.service.make_data_converter`` so a configured payload codec applies) and may be
    a coroutine function.
    """
    from bridge.service import load_object

    settings = settings_from(
        _overrides(
            temporal_address=temporal_address,
            namespace=namespace,
            bootstrap=bootstrap,
            log_json=log_json,
            log_level=log_level,
        )
    )
    configure_logging(settings.log_level, json_lines=settings.log_json)
    _import_path()
    target = guarded(lambda: load_object(entry, default_attr="main", setting="--entry"))
    if not callable(target):
        fail(f"--entry: {entry!r} is not callable", EXIT_SETTINGS)
    # The entry point may take the settings or nothing (then it reads LOOM_* itself).
    takes_settings = bool(inspect.signature(target).parameters)
    result = target(settings) if takes_settings else target()
    if asyncio.iscoroutine(result):
        result = asyncio.run(result)
    raise typer.Exit(result if isinstance(result, int) else 0)


def main() -> None:
    """Console script entry point (``loom``)."""
    app()

if __name__ == "__main__":
    main()
