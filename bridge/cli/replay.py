"""``loom replay``: route the events of a past time window again.

It reads the window with its own consumer group (``--group``, by default the sidecar's group
with ``-replay`` appended; never the sidecar's own: its offsets are never touched) through the
same routes, dispatcher and dead-letter handling
as ``loom run`` (:mod:`bridge.sidecar.replay`), shows a progress bar, stops at the window's
end and prints what it did. ``--dry-run`` prints what would be routed, per route, and calls
nothing.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bridge._loading import load_router
from bridge.actions import UnmatchedPolicy
from bridge.cli._options import (
    EXIT_SETTINGS,
    Bootstrap,
    DeadletterTopic,
    LogJson,
    LogLevel,
    Namespace,
    RoutesOpt,
    TemporalAddress,
    fail,
    guarded,
    import_path,
    out,
    overrides,
    settings_from,
)
from bridge.cli._times import TIME_HELP, TimeFormatError, format_ms, parse_duration, parse_time
from bridge.exceptions import SettingsError
from bridge.routing import Router
from bridge.settings import LoomSettings
from bridge.sidecar.replay import Preview, Replay, ReplaySummary, preview
from bridge.sidecar.window import Window
from bridge.telemetry import tracing
from bridge.telemetry.logs import configure_logging
from bridge.temporal.client import check_namespace, connect_temporal

__all__ = ["replay"]

#: Exit code of a replay stopped by SIGINT/SIGTERM before the window's end.
EXIT_INTERRUPTED = 130


def replay(
    topic: Annotated[
        list[str] | None, typer.Option("--topic", help="Topic to replay; repeat for several.")
    ] = None,
    from_: Annotated[
        str | None, typer.Option("--from", help=f"Start of the window (included): {TIME_HELP}.")
    ] = None,
    to: Annotated[
        str | None,
        typer.Option("--to", help="End of the window (excluded; default: the topic's end now)."),
    ] = None,
    lateness: Annotated[
        str,
        typer.Option(
            "--lateness",
            help="With --to: a partition stops at its first record timestamped at or past "
            "--to plus this (0, 90s, 5m, 1h); raise it for producers whose clocks disagree.",
        ),
    ] = "1m",
    route: Annotated[
        str | None,
        typer.Option(
            "--route",
            help="Replay through the routes so named only: a name or a glob ('orders-*'; "
            "'[*]' is a literal '*').",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be routed, per route; call nothing.")
    ] = False,
    seen_check: Annotated[
        bool,
        typer.Option(
            "--seen-check/--no-seen-check",
            help="Ask each workflow once which events it saw and signal it none of those "
            "(they count as duplicates); without it, its inbox drops them.",
        ),
    ] = True,
    group: Annotated[
        str | None,
        typer.Option(
            "--group",
            help="The replay's own consumer group, where it commits its progress "
            "(default: the sidecar's group + '-replay'; never the sidecar's group).",
        ),
    ] = None,
    routes: RoutesOpt = None,
    bootstrap: Bootstrap = None,
    temporal_address: TemporalAddress = None,
    namespace: Namespace = None,
    deadletter_topic: DeadletterTopic = None,
    log_json: LogJson = None,
    log_level: LogLevel = None,
) -> None:
    """Route the events of a past time window again (after a route was fixed or added).

    Reads each partition of --topic from the first record at or after --from, up to its first
    record timestamped at or past --to + --lateness or the end it had when the replay began,
    keeps the records whose own timestamp is in [--from, --to), and routes them as `loom run`
    does: same routes, dead letters and metrics. Routing twice is safe: workflows drop the
    events they had. Progress is committed to the replay's own group, never the sidecar's.
    """
    if not topic:
        fail("--topic is required (the topic to replay; repeat for several)", EXIT_SETTINGS)
    if from_ is None:
        fail(f"--from is required: {TIME_HELP}", EXIT_SETTINGS)
    now = datetime.now(UTC)
    try:
        start = parse_time(from_, now)
        end = parse_time(to, now) if to is not None else None
        window = Window(start, end)
    except TimeFormatError as exc:
        fail(f"--from/--to: {exc}", EXIT_SETTINGS)
    except ValueError:
        fail(f"--to ({to}) must be after --from ({from_})", EXIT_SETTINGS)
    try:
        lateness_ms = parse_duration(lateness)
    except TimeFormatError as exc:
        fail(f"--lateness: {exc}", EXIT_SETTINGS)
    settings = settings_from(
        overrides(
            bootstrap=bootstrap, temporal_address=temporal_address, namespace=namespace,
            deadletter_topic=deadletter_topic, routes=routes, log_json=log_json,
            log_level=log_level,
        )
    )
    configure_logging(settings.log_level, json_lines=settings.log_json)
    import_path()
    router = guarded(lambda: _router(settings, route))
    group = group or f"{settings.kafka.group_id}-replay"
    if group == settings.kafka.group_id:
        fail(f"--group: {group!r} is the sidecar's consumer group; a replay needs its own",
             EXIT_SETTINGS)
    until = "the end" if window.end is None else format_ms(window.end)
    out.print(
        f"replaying {', '.join(topic)} from {format_ms(window.start)} to {until}"
        + (f" through route {route}" if route else "")
        + ("" if dry_run else f" (consumer group {group})")
    )
    if dry_run:
        raise typer.Exit(_dry_run(settings, router, topic, window, lateness_ms))
    raise typer.Exit(
        asyncio.run(_replay(settings, router, topic, window, group, lateness_ms, seen_check))
    )


def _router(settings: LoomSettings, name: str | None) -> Router:
    router = load_router(settings.route_spec())
    if "unmatched" in settings.model_fields_set:
        router.unmatched = settings.unmatched
    if name is None:
        return router
    chosen = [r for r in router.routes if fnmatchcase(r.name, name)]  # the one glob rule
    if not chosen:
        names = ", ".join(r.name for r in router.routes) or "none"
        raise SettingsError(f"--route: no route is named {name!r} (routes: {names})")
    # Only these routes: the events they do not take are none of this replay's business.
    return Router(chosen, unmatched=UnmatchedPolicy.SKIP, replies=False)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} offsets"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=out,
    )


# --- the replay -----------------------------------------------------------------------------------


async def _replay(
    settings: LoomSettings,
    router: Router,
    topics: list[str],
    window: Window,
    group: str,
    lateness_ms: int,
    seen_check: bool,
) -> int:
    try:
        client = await connect_temporal(settings, interceptors=tracing.client_interceptors())
        await check_namespace(client)
    except SettingsError as exc:
        fail(str(exc), EXIT_SETTINGS)
    except Exception as exc:
        fail(f"cannot connect to Temporal: {exc}")
    job = Replay(router, client, settings, topics=topics, window=window, group=group,
                 lateness_ms=lateness_ms, check_seen=seen_check)
    try:
        await job.start()
    except SettingsError as exc:
        fail(str(exc), EXIT_SETTINGS)
    except Exception as exc:
        fail(f"cannot read the window from Kafka at {settings.kafka.bootstrap}: "
             f"{type(exc).__name__}: {exc}")
    loop = asyncio.get_running_loop()
    # Signals reach the main thread only (the command runs in a thread under a test runner).
    signals = (signal.SIGINT, signal.SIGTERM) if threading.current_thread() is threading.main_thread() else ()
    for sig in signals:
        loop.add_signal_handler(sig, job.stop)
    try:
        with _progress() as progress:
            total = job.reader.total if job.reader is not None else None  # set by start()
            bar = progress.add_task("replay", total=total, status="")
            task = asyncio.create_task(job.run(), name="loom-replay")
            while True:
                summary = job.summary()
                progress.update(bar, completed=summary.read, total=summary.total,
                                status=_status(summary))
                if task.done():
                    break
                await asyncio.wait({task}, timeout=0.2)
        error = task.exception()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    _print_summary(job.summary())
    if error is not None:
        fail(f"the replay stopped on an error: {type(error).__name__}: {error}")
    return 0 if job.complete else EXIT_INTERRUPTED


def _status(s: ReplaySummary) -> str:
    return (f"routed {s.routed}  duplicates {s.duplicates}  unmatched {s.unmatched}  "
            f"dead-lettered {s.deadlettered}")


def _print_summary(s: ReplaySummary) -> None:
    if s.by_route:
        table = Table(title="calls per route")
        outcomes = sorted({o for counts in s.by_route.values() for o in counts})
        table.add_column("route")
        for outcome in outcomes:
            table.add_column(outcome, justify="right")
        for name, counts in sorted(s.by_route.items()):
            table.add_row(escape(name), *(str(counts.get(o, 0)) for o in outcomes))
        out.print(table)
    state = "done" if s.complete else "interrupted before the window's end"
    extra = f" (skipped {s.skipped})" if s.skipped else ""
    out.print(
        f"{state}: routed {s.routed}, duplicates {s.duplicates}, unmatched {s.unmatched}, "
        f"dead-lettered {s.deadlettered}{extra}; {s.read} offsets read, {s.outside} records "
        f"outside the window{_ended(s.ended_early)}"
    )


def _ended(partitions: int) -> str:
    if not partitions:
        return ""
    return f", {partitions} partition(s) stopped at a record past the window's end"


# --- --dry-run ------------------------------------------------------------------------------------


def _dry_run(
    settings: LoomSettings, router: Router, topics: list[str], window: Window, lateness_ms: int
) -> int:
    with _progress() as progress:
        bar = progress.add_task("dry run", total=None, status="")

        def read(done: int, total: int) -> None:
            progress.update(bar, completed=done, total=total)

        try:
            result = asyncio.run(
                preview(settings, router, topics, window, lateness_ms=lateness_ms, on_read=read)
            )
        except SettingsError as exc:
            fail(str(exc), EXIT_SETTINGS)
        except Exception as exc:
            fail(f"cannot read the window from Kafka at {settings.kafka.bootstrap}: "
                 f"{type(exc).__name__}: {exc}")
    _print_preview(result, router.unmatched)
    return 0


def _print_preview(result: Preview, unmatched: UnmatchedPolicy) -> None:
    table = Table(title="would route (dry run: nothing was called)")
    for column in ("route", "action", "events", "workflows", "e.g."):
        table.add_column(column, overflow="fold")
    for name, seen in sorted(result.routes.items()):
        count = f"{len(seen.workflows)}{'+' if seen.more_workflows else ''}"
        example = ", ".join(sorted(seen.workflows)[:3])
        table.add_row(escape(name), seen.kind, str(seen.events), count, escape(example))
    out.print(table)
    bad = ", ".join(f"{n} {reason}" for reason, n in sorted(result.bad.items())) or "0"
    out.print(
        f"unmatched {result.unmatched} (policy {unmatched.value}); bad input {bad} (would be "
        f"dead-lettered); {result.read} offsets read, {result.outside} records outside the "
        f"window{_ended(result.ended_early)}"
    )
