"""The ``loom`` command: run the sidecar, publish events, inspect routes and the dead-letter topic.

Settings come from ``LOOM_*`` environment variables and ``.env``; flags override them. A bad
setting exits with code 2 and a message naming the setting (its environment variable);
secrets never appear in any output.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

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


def _as_env(overrides: dict[str, Any], prefix: str = "LOOM_") -> dict[str, str]:
    """Nested overrides as ``LOOM_A__B`` environment variables (JSON for lists)."""
    env: dict[str, str] = {}
    for key, value in overrides.items():
        name = prefix + key.upper()
        if isinstance(value, dict):
            env.update(_as_env(value, name + "__"))
        elif isinstance(value, list):
            env[name] = json.dumps(value)
        else:
            env[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


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
    from bridge.service import load_router, make_data_converter, run_sidecar

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
    guarded(lambda: make_data_converter(settings))  # a bad codec fails here, not mid-connect
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

    overrides = _overrides(
        temporal_address=temporal_address,
        namespace=namespace,
        bootstrap=bootstrap,
        log_json=log_json,
        log_level=log_level,
    )
    settings = settings_from(overrides)
    configure_logging(settings.log_level, json_lines=settings.log_json)
    _import_path()
    target = guarded(lambda: load_object(entry, default_attr="main", setting="--entry"))
    if not callable(target):
        fail(f"--entry: {entry!r} is not callable", EXIT_SETTINGS)
    # The entry point may take the settings, or nothing and read LOOM_* itself: then the
    # flags reach it as environment variables.
    if inspect.signature(target).parameters:
        result = target(settings)
    else:
        os.environ.update(_as_env(overrides))
        result = target()
    if asyncio.iscoroutine(result):
        result = asyncio.run(result)
    raise typer.Exit(result if isinstance(result, int) else 0)


# --- loom dev ------------------------------------------------------------------------------------


@app.command()
def dev(
    orders: Annotated[int, typer.Option(help="Sample orders to publish.")] = 12,
    bounded: Annotated[
        bool, typer.Option(help="Exit when every order finished: 0 when all ended as designed.")
    ] = False,
    ui: Annotated[bool, typer.Option("--ui/--no-ui", help="Serve the Temporal Web UI.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds the bounded demo may take.")] = 180.0,
) -> None:
    """Run the reference order saga on embedded Temporal and Kafka, with live progress."""
    from bridge.devstack import run_dev

    raise typer.Exit(asyncio.run(run_dev(orders=orders, bounded=bounded, ui=ui, timeout=timeout)))


# --- loom check ----------------------------------------------------------------------------------


@app.command()
def check(
    routes: RoutesOpt = None,
    bootstrap: Bootstrap = None,
    temporal_address: TemporalAddress = None,
    namespace: Namespace = None,
    topic: Topics = None,
    timeout: Annotated[float, typer.Option(help="Seconds per connection check.")] = 10.0,
) -> None:
    """Validate settings and routes, connect to Kafka and Temporal; exit 1 on any failure."""
    from bridge.operations import CheckResult, check_kafka, check_temporal
    from bridge.service import load_codec, load_router, settings_summary

    settings = settings_from(
        _overrides(routes=routes, bootstrap=bootstrap, temporal_address=temporal_address,
                   namespace=namespace, topics=topic)
    )
    _import_path()
    results: list[CheckResult] = [CheckResult("settings", True, "valid")]
    try:
        router = load_router(settings.routes)
        results.append(CheckResult("routes", True, f"{settings.routes}: {len(router)} routes"))
    except SettingsError as exc:
        results.append(CheckResult("routes", False, str(exc)))
    if settings.temporal.codec:
        try:
            load_codec(settings.temporal.codec)
            results.append(CheckResult("codec", True, settings.temporal.codec))
        except SettingsError as exc:
            results.append(CheckResult("codec", False, str(exc)))

    async def connect() -> list[CheckResult]:
        kafka, temporal = await asyncio.gather(
            check_kafka(settings, timeout), check_temporal(settings, timeout)
        )
        return [*kafka, *temporal]

    results.extend(asyncio.run(connect()))
    summary = Table(title="settings", show_header=False)
    summary.add_column("setting")
    summary.add_column("value", overflow="fold")
    for name, value in settings_summary(settings).items():
        summary.add_row(name, "-" if value is None else str(value))
    out.print(summary)
    report = Table(title="checks")
    for column in ("check", "result", "detail"):
        report.add_column(column, overflow="fold")
    for r in results:
        mark = "[green]ok[/]" if r.ok and not r.warning else ("[yellow]warn[/]" if r.ok else "[red]FAIL[/]")
        report.add_row(r.name, mark, r.detail)
    out.print(report)
    failed = [r for r in results if not r.ok]
    if failed:
        err.print(f"[bold red]{len(failed)} check(s) failed[/]")
        raise typer.Exit(1)
    out.print("[green]all checks passed[/]")


# --- loom routes ---------------------------------------------------------------------------------


@app.command("routes")
def routes_cmd(
    routes: RoutesOpt = None,
    asyncapi: Annotated[Path | None, typer.Option("--asyncapi", help="Write an AsyncAPI 3.0 document (JSON, or YAML for .yaml/.yml) to FILE ('-' for stdout).")] = None,
    topic: Topics = None,
) -> None:
    """Print the route table, or write the AsyncAPI document of consumed and emitted events."""
    from bridge.service import load_router

    settings = settings_from(_overrides(routes=routes, topics=topic))
    _import_path()
    router = guarded(lambda: load_router(settings.routes))
    if asyncapi is not None:
        from bridge.asyncapi import asyncapi_document, dump_document

        emits, emit_topics = guarded(lambda: _emitted(settings.routes))
        # The application's own emit topics count after the configured map (as on the worker).
        topic_map = {**emit_topics, **settings.emit.topic_map}
        settings = settings.model_copy(
            update={"emit": settings.emit.model_copy(update={"topic_map": topic_map})}
        )
        text = dump_document(
            asyncapi_document(router, settings, emits=emits), yaml=asyncapi.suffix in (".yaml", ".yml")
        )
        if str(asyncapi) == "-":
            sys.stdout.write(text)
        else:
            asyncapi.write_text(text)
            err.print(f"wrote {asyncapi}")
        return
    table = Table(title=f"routes ({settings.routes}, unmatched: {router.unmatched.value})")
    columns = ("name", "match", "data", "action", "workflow_type", "workflow_id", "task_queue", "handler")
    for column in columns:
        table.add_column(column.replace("_", " "), overflow="fold")
    for row in router.describe():
        table.add_row(*("-" if row.get(c) is None else str(row.get(c)) for c in columns))
    out.print(table)


def _emitted(spec: str) -> tuple[Any, dict[str, str]]:
    """The optional ``emits`` (event type -> pydantic model) and ``emit_topics`` (type glob ->
    topic) attributes beside the router."""
    from bridge.service import load_object

    module = load_object(spec.partition(":")[0], default_attr=None, setting="LOOM_ROUTES")
    return getattr(module, "emits", None), dict(getattr(module, "emit_topics", None) or {})


def main() -> None:
    """Console script entry point (``loom``)."""
    app()


# Registers ``loom publish`` and ``loom dlq`` on ``app``; imported last because it imports
# the shared options and helpers above.
from bridge import cli_records  # noqa: E402, F401

if __name__ == "__main__":
    # Under ``python -m bridge.cli`` this file is ``__main__``, not ``bridge.cli``: run the
    # imported module's app, the one ``cli_records`` registered its commands on.
    from bridge.cli import main as _main

    _main()
