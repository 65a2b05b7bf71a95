"""A Temporal worker without writing one: the application's workflows and activities plus the
loom's publish activity, configured from ``LOOM_*``.

``loom worker --workflows hello.workflows:Greeter --task-queue greetings`` runs
:func:`serve_worker`; an application that starts its worker itself (``loom dev``, a custom
entry point) awaits :func:`run_worker`::

    stop = asyncio.Event()
    await run_worker(settings, [Greeter], task_queue="greetings", stop=stop)

The client comes from :func:`bridge.temporal.client.connect_temporal` (``LOOM_TEMPORAL__*``
over ``TEMPORAL_*``, the pydantic data converter, the payload codec, tracing), the publish
producer from :class:`bridge.kafka.clients.LoomProducer` on ``settings.kafka`` and its topics
from ``settings.emit``. Stopping is graceful: the worker stops polling, running activities get
``LOOM_DISPATCH__DRAIN_TIMEOUT_S`` to finish, then the producer flushes and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from bridge._loading import load_object
from bridge.exceptions import SettingsError
from bridge.kafka.clients import LoomProducer
from bridge.settings import DispatchSettings, EmitSettings, LoomSettings
from bridge.telemetry import tracing
from bridge.temporal.client import connect_options, connect_temporal
from bridge.worker.activities import loom_activities

__all__ = ["build_worker", "load_activities", "load_workflows", "run_worker", "serve_worker"]

log = logging.getLogger("loom.worker")


def build_worker(
    client: Client,
    *,
    task_queue: str,
    workflows: Sequence[type] = (),
    activities: Sequence[Callable[..., Any]] = (),
    drain_timeout_s: float = DispatchSettings().drain_timeout_s,
    **options: Any,
) -> Worker:
    """The Temporal worker ``loom worker`` runs: Temporal's sandboxed workflow runner (each run
    re-imports its workflow's module, as in production), the client's data converter (the
    loom's: pydantic, with the configured codec), ``drain_timeout_s`` of grace for running
    activities on shutdown.

    :func:`run_worker` builds its worker here, and so does the test kit
    (:func:`bridge.testing.loom_worker`), so that tests run workflows the way users do.

    Args:
        client: A connected client (its data converter and interceptors are used).
        task_queue: The task queue to poll.
        workflows: Workflow classes.
        activities: Activities (the caller adds ``loom.publish`` when it has a producer).
        drain_timeout_s: Grace for running activities when the worker shuts down.
        **options: Other ``temporalio.worker.Worker`` options (concurrency bounds...).
    """
    return Worker(
        client,
        task_queue=task_queue,
        workflows=list(workflows),
        activities=list(activities),
        graceful_shutdown_timeout=timedelta(seconds=drain_timeout_s),
        **options,
    )


async def run_worker(
    settings: LoomSettings,
    workflows: Sequence[type],
    activities: Sequence[Callable[..., Any]] = (),
    *,
    task_queue: str,
    stop: asyncio.Event | None = None,
    ready: Callable[[], None] | None = None,
    client: Client | None = None,
    emit: EmitSettings | None = None,
) -> None:
    """Run a worker with ``workflows``, ``activities`` and ``loom.publish`` until ``stop``.

    Args:
        settings: Temporal, Kafka (the publish producer), emit and dispatch settings.
        workflows: Workflow classes.
        activities: The application's activities (the publish activity is added).
        task_queue: The task queue to poll (the routes' ``task_queue``).
        stop: Set it to stop gracefully; without it the worker runs until cancelled.
        ready: Called once the worker is started.
        client: A connected client; connected from ``settings`` when omitted.
        emit: The publish activity's topics; ``settings.emit`` when omitted.

    Raises:
        RuntimeError: The worker failed (e.g. its namespace does not exist); a worker that
            stops on its own never leaves the caller waiting for ``stop``.
    """
    if client is None:
        client = await connect_temporal(settings)
    stop = stop or asyncio.Event()
    async with LoomProducer(settings.kafka) as producer:
        worker = build_worker(
            client,
            task_queue=task_queue,
            workflows=workflows,
            activities=[*activities, *loom_activities(producer, emit or settings.emit)],
            drain_timeout_s=settings.dispatch.drain_timeout_s,
        )
        running = asyncio.create_task(worker.run(), name=f"worker {task_queue}")
        stopping = asyncio.create_task(stop.wait(), name="worker stop")
        log.info(
            "worker polling task queue %r on %s", task_queue, client.service_client.config.target_host
        )
        if ready is not None:
            ready()
        try:
            await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # abandoned: no grace for running activities
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await running
            raise
        finally:
            stopping.cancel()
        if not running.done():
            await worker.shutdown()  # stop polling, let running activities finish
        await running  # raises the worker's own error


def _spec_list(spec: str) -> list[str]:
    return [part.strip() for part in spec.split(",") if part.strip()]


def load_workflows(spec: str, *, setting: str = "--workflows") -> list[type]:
    """Workflow classes from ``module:Class[,module:Class...]``.

    Raises:
        SettingsError: Not importable, or not a ``@workflow.defn`` class; names ``setting``.
    """
    found: list[type] = []
    for part in _spec_list(spec):
        obj = load_object(part, default_attr=None, setting=setting)
        if not isinstance(obj, type) or getattr(obj, "__temporal_workflow_definition", None) is None:
            raise SettingsError(f"{setting}: {part!r} is not a @workflow.defn class")
        found.append(obj)
    if not found:
        raise SettingsError(f"{setting}: expected module:Class[,module:Class...], got {spec!r}")
    return found


def load_activities(spec: str, *, setting: str = "--activities") -> list[Callable[..., Any]]:
    """Activities from ``module:attr[,module:attr...]``: each attribute an ``@activity.defn``
    function (or bound method) or a list of them.

    Raises:
        SettingsError: Not importable, or not activities; names ``setting``.
    """
    found: list[Callable[..., Any]] = []
    for part in _spec_list(spec):
        obj = load_object(part, default_attr=None, setting=setting)
        items: Iterable[Any] = obj if isinstance(obj, list | tuple) else [obj]
        for item in items:
            if getattr(item, "__temporal_activity_definition", None) is None:
                raise SettingsError(
                    f"{setting}: {part!r} holds {type(item).__name__}, expected @activity.defn "
                    "functions (or a list of them)"
                )
            found.append(item)
    return found


def serve_worker(
    settings: LoomSettings,
    workflows: Sequence[type],
    activities: Sequence[Callable[..., Any]] = (),
    *,
    task_queue: str,
    emit: EmitSettings | None = None,
) -> int:
    """Run :func:`run_worker` in a fresh event loop until SIGTERM/SIGINT; the exit code.

    Installs the process's OpenTelemetry SDK when ``LOOM_TRACING__*`` (or ``OTEL_*``) ask for
    one. The first signal stops gracefully; a second one abandons the wait (exit code 130).

    Raises:
        SettingsError: Temporal's configuration cannot be read, or tracing cannot be set up.
    """
    connect_options(settings.temporal)  # a bad TEMPORAL_PROFILE is a settings error, exit 2
    runtime = tracing.setup(settings.tracing)
    try:
        return asyncio.run(_serve(settings, workflows, activities, task_queue, emit))
    finally:
        if runtime is not None:
            runtime.shutdown()


async def _serve(
    settings: LoomSettings,
    workflows: Sequence[type],
    activities: Sequence[Callable[..., Any]],
    task_queue: str,
    emit: EmitSettings | None,
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    task = asyncio.current_task()

    def on_signal(signum: int) -> None:
        if not stop.is_set():
            log.info("%s: stopping the worker", signal.Signals(signum).name)
            stop.set()
        elif task is not None:
            log.warning("second signal: not waiting for running activities")
            task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        try:
            client = await connect_temporal(settings)
        except RuntimeError as exc:
            log.error("cannot start: %s", exc)  # noqa: TRY400 (the cause is the address)
            return 1
        await run_worker(
            settings, workflows, activities, task_queue=task_queue, stop=stop, client=client,
            emit=emit,
        )
    except asyncio.CancelledError:
        return 130
    except Exception:
        log.exception("the worker stopped on an error")
        return 1
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
    log.info("worker stopped cleanly")
    return 0
