"""``loom run`` (the sidecar) and ``loom worker`` (a Temporal worker with the publish activity)."""

from __future__ import annotations

import inspect
import os
from typing import Annotated

import typer

from bridge._loading import load_object, load_router
from bridge.cli._options import (
    EXIT_SETTINGS,
    Bootstrap,
    DeadletterTopic,
    GroupId,
    HttpPort,
    LogJson,
    LogLevel,
    Namespace,
    RoutesOpt,
    TemporalAddress,
    Topics,
    as_env,
    fail,
    guarded,
    import_path,
    overrides,
    settings_from,
)
from bridge.sidecar.process import run_sidecar
from bridge.telemetry import tracing
from bridge.telemetry.logs import configure_logging
from bridge.temporal.client import connect_options, make_data_converter
from bridge.worker.entry import serve_entry
from bridge.worker.run import load_activities, load_workflows, serve_worker

__all__ = ["run", "worker"]


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
    """Run the sidecar until SIGTERM/SIGINT (drains in-flight calls and commits first).

    Needs the routes (LOOM_ROUTES or --routes) and the topics (LOOM_KAFKA__TOPICS or --topic).
    """
    settings = settings_from(
        overrides(
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
    guarded(lambda: settings.require("routes", "kafka.topics"))
    configure_logging(settings.log_level, json_lines=settings.log_json)
    import_path()
    router = guarded(lambda: load_router(settings.route_spec()))
    # Each of these fails here, exit 2, rather than mid-start: a bad codec, an unreadable
    # Temporal profile, an OTEL_* value the loom cannot follow.
    guarded(lambda: make_data_converter(settings))
    guarded(lambda: connect_options(settings.temporal))
    guarded(lambda: tracing.resolve(settings.tracing))
    code = guarded(lambda: run_sidecar(settings, router))
    raise typer.Exit(code)


def worker(
    workflows: Annotated[
        str | None,
        typer.Option(
            "--workflows", help="Workflow classes MODULE:CLASS[,MODULE:CLASS...] to run."
        ),
    ] = None,
    task_queue: Annotated[
        str | None, typer.Option("--task-queue", help="Task queue to poll (with --workflows).")
    ] = None,
    activities: Annotated[
        str | None,
        typer.Option(
            "--activities",
            help="Your activities MODULE:ATTR[,...]: @activity.defn functions or lists of them.",
        ),
    ] = None,
    entry: Annotated[
        str | None,
        typer.Option("--entry", help="Worker entry point MODULE:ATTR (a custom worker)."),
    ] = None,
    temporal_address: TemporalAddress = None,
    namespace: Namespace = None,
    bootstrap: Bootstrap = None,
    log_json: LogJson = None,
    log_level: LogLevel = None,
) -> None:
    """Run a Temporal worker: your workflows (and activities) plus the loom's publish activity.

    ``--workflows hello.workflows:Greeter --task-queue greetings`` runs them with the publish
    activity that emit() needs, connected from LOOM_* (TEMPORAL_* too), until SIGTERM/SIGINT
    (graceful: running activities get LOOM_DISPATCH__DRAIN_TIMEOUT_S). ``--entry MODULE:ATTR``
    runs a custom worker instead: the entry point gets the settings (it builds its client with
    ``bridge.temporal.client.connect_temporal``) and may be a coroutine function; a parameter
    named ``stop`` gets an event set on SIGTERM/SIGINT (else the entry point is cancelled):
    exit code 0 either way.
    """
    if entry is not None and (workflows or activities or task_queue):
        fail("--entry runs a custom worker: give it alone, or --workflows and --task-queue",
             EXIT_SETTINGS)
    if entry is None and workflows is None:
        fail("give --workflows MODULE:CLASS[,...] and --task-queue NAME (or --entry MODULE:ATTR "
             "for a custom worker)", EXIT_SETTINGS)
    if entry is None and not task_queue:
        fail("--task-queue is required with --workflows (the routes' task_queue)", EXIT_SETTINGS)
    given = overrides(
        temporal_address=temporal_address,
        namespace=namespace,
        bootstrap=bootstrap,
        log_json=log_json,
        log_level=log_level,
    )
    settings = settings_from(given)
    configure_logging(settings.log_level, json_lines=settings.log_json)
    import_path()
    if workflows and task_queue:  # --workflows (checked above: not with --entry)
        classes = guarded(lambda: load_workflows(workflows))
        functions = guarded(lambda: load_activities(activities)) if activities else []
        guarded(lambda: make_data_converter(settings))
        code = guarded(lambda: serve_worker(settings, classes, functions, task_queue=task_queue))
        raise typer.Exit(code)
    spec = entry or ""  # checked above: --entry is given when --workflows is not
    target = guarded(lambda: load_object(spec, default_attr="main", setting="--entry"))
    if not callable(target):
        fail(f"--entry: {entry!r} is not callable", EXIT_SETTINGS)
    # The entry point may take the settings, or nothing and read LOOM_* itself: then the
    # flags reach it as environment variables.
    if not any(name != "stop" for name in inspect.signature(target).parameters):
        os.environ.update(as_env(given))
    raise typer.Exit(serve_entry(target, settings))
