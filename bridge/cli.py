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
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from bridge.deadletter import DeadLetter
from bridge.events import Event
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


# --- loom publish --------------------------------------------------------------------------------


def _parse_ext(pairs: list[str]) -> dict[str, str]:
    ext: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            fail(f"--ext: expected NAME=VALUE, got {pair!r}", EXIT_SETTINGS)
        ext[name] = value
    return ext


def _event_from_flags(
    file: Path | None,
    type_: str | None,
    source: str | None,
    id_: str | None,
    subject: str | None,
    data: str | None,
    content_type: str | None,
    ext: list[str],
) -> Event:
    payload: dict[str, Any] = {}
    if file is not None:
        try:
            loaded = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            fail(f"--file: cannot read a JSON event from {file}: {exc}", EXIT_SETTINGS)
        if not isinstance(loaded, dict):
            fail(f"--file: {file} holds no JSON object", EXIT_SETTINGS)
        payload.update(loaded)
    flags = {"type": type_, "source": source, "id": id_, "subject": subject,
             "datacontenttype": content_type}
    payload.update({k: v for k, v in flags.items() if v is not None})
    if data is not None:
        try:
            payload["data"] = json.loads(data)
        except ValueError as exc:
            fail(f"--data: not JSON: {exc}", EXIT_SETTINGS)
    payload.update(_parse_ext(ext))
    payload.setdefault("id", str(uuid.uuid4()))
    missing = [name for name in ("type", "source") if not payload.get(name)]
    if missing:
        fail("missing " + ", ".join(f"--{m}" for m in missing) + " (or --file)", EXIT_SETTINGS)
    try:
        return Event.from_payload(payload)
    except (KeyError, TypeError, ValueError) as exc:
        fail(f"invalid event: {exc}", EXIT_SETTINGS)


@app.command()
def publish(
    type_: Annotated[str | None, typer.Option("--type", help="CloudEvent type.")] = None,
    source: Annotated[str | None, typer.Option(help="CloudEvent source.")] = None,
    id_: Annotated[str | None, typer.Option("--id", help="CloudEvent id (a UUID when omitted).")] = None,
    subject: Annotated[str | None, typer.Option(help="CloudEvent subject.")] = None,
    data: Annotated[str | None, typer.Option(help="Event data as JSON.")] = None,
    content_type: Annotated[str | None, typer.Option("--content-type", help="datacontenttype.")] = None,
    ext: Annotated[list[str] | None, typer.Option("--ext", help="Extension NAME=VALUE; repeatable.")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="Event in CloudEvents JSON format; flags override its attributes.")] = None,
    key: Annotated[str | None, typer.Option(help="Kafka key (default: the partitionkey extension).")] = None,
    mode: Annotated[str, typer.Option(help="binary or structured.")] = "binary",
    topic: Annotated[str | None, typer.Option(help="Target topic (default: the first consumed topic).")] = None,
    bootstrap: Bootstrap = None,
) -> None:
    """Publish one CloudEvent to Kafka, to drive workflows from the shell."""
    from bridge.operations import publish_event

    if mode not in ("binary", "structured"):
        fail(f"--mode: expected binary or structured, got {mode!r}", EXIT_SETTINGS)
    settings = settings_from(_overrides(bootstrap=bootstrap))
    event = _event_from_flags(file, type_, source, id_, subject, data, content_type, ext or [])
    target = topic or (settings.kafka.topics[0] if settings.kafka.topics else None)
    if not target:
        fail("--topic is required (LOOM_KAFKA__TOPICS is empty)", EXIT_SETTINGS)
    try:
        where = asyncio.run(
            publish_event(settings, event, target, mode=mode, key=key)  # type: ignore[arg-type]
        )
    except ValueError as exc:
        fail(f"cannot encode the event: {exc}", EXIT_SETTINGS)
    except Exception as exc:  # connection problems: one line, not a traceback
        fail(f"publish to {settings.kafka.bootstrap} failed: {type(exc).__name__}: {exc}")
    out.print(f"published {event.type} id={event.id} to {where.topic}[{where.partition}]@{where.offset}")


# --- loom dlq ------------------------------------------------------------------------------------

DlqTopic = Annotated[
    str | None,
    typer.Option("--dlq-topic", help="Dead-letter topic (LOOM_KAFKA__DEADLETTER_TOPIC)."),
]


def _letter_id(letter: DeadLetter) -> str:
    return f"{letter.record.partition}:{letter.record.offset}"


def _load_letters(settings: LoomSettings, topic: str | None) -> list[DeadLetter]:
    from bridge.operations import read_deadletters

    try:
        return asyncio.run(read_deadletters(settings, topic=topic))
    except Exception as exc:  # connection problems: one line, not a traceback
        fail(f"cannot read the dead-letter topic: {type(exc).__name__}: {exc}")


@dlq_app.command("list")
def dlq_list(
    reason: Annotated[str | None, typer.Option(help="Only this reason (e.g. unmatched).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per record.")] = False,
    dlq_topic: DlqTopic = None,
    bootstrap: Bootstrap = None,
) -> None:
    """List dead-lettered records with their error headers."""
    settings = settings_from(_overrides(bootstrap=bootstrap, deadletter_topic=dlq_topic))
    letters = [
        d for d in _load_letters(settings, None) if reason is None or d.info.get("reason") == reason
    ]
    if as_json:
        for d in letters:
            out.print_json(json.dumps({"dlq_offset": _letter_id(d), **d.info}), indent=None)
        return
    table = Table(title=f"{settings.kafka.deadletter_topic}: {len(letters)} records")
    for column in ("offset", "reason", "route", "original", "message"):
        table.add_column(column, overflow="fold")
    for d in letters:
        i = d.info
        table.add_row(
            _letter_id(d), i.get("reason", ""), i.get("route", ""),
            f"{i.get('topic', '')}[{i.get('partition', '')}]@{i.get('offset', '')}",
            i.get("message", "")[:200],
        )
    out.print(table)


@dlq_app.command("redrive")
def dlq_redrive(
    offset: Annotated[
        list[str] | None,
        typer.Option("--offset", help="Dead-letter offset to re-drive, N (partition 0) or P:N; repeatable."),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Re-drive every record (after filters).")] = False,
    reason: Annotated[str | None, typer.Option(help="Only records with this reason.")] = None,
    to_topic: Annotated[str | None, typer.Option("--to-topic", help="Send here instead of the original topic.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be sent.")] = False,
    dlq_topic: DlqTopic = None,
    bootstrap: Bootstrap = None,
) -> None:
    """Re-drive dead-lettered records, byte for byte, to their original topic."""
    from bridge.operations import redrive

    if not offset and not all_ and reason is None:
        fail("choose records: --offset N (repeatable), --reason R or --all", EXIT_SETTINGS)
    wanted = {o if ":" in o else f"0:{o}" for o in offset or []}
    settings = settings_from(_overrides(bootstrap=bootstrap, deadletter_topic=dlq_topic))
    letters = [
        d for d in _load_letters(settings, None)
        if (not wanted or _letter_id(d) in wanted)
        and (reason is None or d.info.get("reason") == reason)
    ]
    unknown = wanted - {_letter_id(d) for d in letters}
    if unknown and reason is None:
        fail(f"no dead-lettered record at offset(s) {', '.join(sorted(unknown))}")
    if dry_run:
        for d in letters:
            out.print(f"would re-drive {_letter_id(d)} to {to_topic or d.original_topic}")
        return

    def sent(letter: DeadLetter, topic: str) -> None:
        out.print(f"re-drove {_letter_id(letter)} ({letter.info.get('reason', '')}) to {topic}")

    try:
        count = asyncio.run(redrive(settings, letters, topic=to_topic, on_sent=sent))
    except ValueError as exc:
        fail(str(exc))
    except Exception as exc:  # connection problems: one line, not a traceback
        fail(f"re-drive failed: {type(exc).__name__}: {exc}")
    out.print(f"{count} record(s) re-driven")


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

        emits = guarded(lambda: _emitted(settings.routes))
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


def _emitted(spec: str) -> Any:
    """The optional ``emits`` attribute beside the router (event type -> pydantic model)."""
    from bridge.service import load_object

    module = load_object(spec.partition(":")[0], default_attr=None, setting="LOOM_ROUTES")
    return getattr(module, "emits", None)


def main() -> None:
    """Console script entry point (``loom``)."""
    app()

if __name__ == "__main__":
    main()
