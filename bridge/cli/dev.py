"""``loom dev``: an application end to end on this machine, in one command.

Starts the embedded Temporal dev server (Web UI on) and the embedded Kafka-compatible broker,
creates the topics, then runs, in this process: the sidecar with the application's routes,
its worker and its services. It publishes the application's sample workload, shows live
progress (items placed, their workflows by status, events consumed / routed / dead-lettered,
commands answered) and prints a summary and the Temporal UI address. Nothing is simulated:
every event crosses the broker, every workflow runs in Temporal.

The application is a :class:`~bridge.dev.DevApp` named by an import spec (``--app``); the
default is the reference order saga of a temporal-loom checkout (``services.demo:app``).

``bounded=True`` exits once every item's workflow closed (0 when each ended as designed) or
when ``timeout`` passed (1). Otherwise it keeps running for the UI until Ctrl-C, which stops
everything cleanly (sidecar drained and committed, worker and services stopped, servers
stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Iterator, Sequence
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.logging import RichHandler
from rich.markup import escape
from rich.text import Text
from temporalio.client import Client

from bridge._loading import load_object, load_router
from bridge.cli._dashboard import DevSummary, ItemState, dashboard, items_table
from bridge.cli._options import EXIT_SETTINGS, fail, guarded, import_path
from bridge.dev import (
    DevApp,
    DevItem,
    DevService,
    EmbeddedKafka,
    EmbeddedTemporal,
    create_topic,
    free_port,
)
from bridge.exceptions import EmbeddedServerError, SettingsError
from bridge.settings import LoomSettings
from bridge.sidecar.loop import Loom
from bridge.sidecar.metrics import metric_total
from bridge.sidecar.process import Sidecar
from bridge.temporal.client import make_data_converter

__all__ = ["DEFAULT_APP", "DevSummary", "dev", "dev_settings", "load_dev_app", "run_dev"]

log = logging.getLogger("loom.dev")

#: The reference application, importable from the root of a temporal-loom checkout.
DEFAULT_APP = "services.demo:app"
#: Partitions of each topic the dev stack creates.
PARTITIONS = 2
_POLL_S = 0.5


def load_dev_app(spec: str) -> DevApp:
    """The :class:`~bridge.dev.DevApp` named by ``spec`` (``module:attr``).

    Raises:
        SettingsError: Not importable (with what to do outside a checkout), or no DevApp.
    """
    try:
        app = load_object(spec, default_attr="app", setting="--app")
    except SettingsError as exc:
        if spec != DEFAULT_APP:
            raise
        raise SettingsError(
            f"{exc}. `loom dev` runs the reference application from the root of a "
            "temporal-loom checkout (git clone the repository, cd into it, and run "
            "`scripts/dev`), or your own application with --app MODULE:ATTR naming a "
            "bridge.dev.DevApp"
        ) from None
    if not isinstance(app, DevApp):
        raise SettingsError(f"--app: {spec!r} is {type(app).__name__}, expected a bridge.dev.DevApp")
    return app


def dev_settings(app: DevApp, kafka_bootstrap: str, temporal_address: str) -> LoomSettings:
    """Settings of the dev stack (the environment and ``.env`` are not read)."""
    return LoomSettings.model_validate({
        "routes": app.routes,
        # A consumer group forms after about half the session timeout: keep it short (6 s is
        # also the smallest session timeout a real Kafka broker accepts by default).
        "kafka": {
            "bootstrap": kafka_bootstrap,
            "topics": list(app.topics),
            "group_id": "loom-dev",
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
            # The embedded broker holds each fetch for the whole wait: keep it short.
            "fetch_max_wait_ms": 50,
        },
        "temporal": {"address": temporal_address},
        "dispatch": {"commit_interval_s": 0.5, "drain_timeout_s": 10},
        "http_port": 0,
    })


async def _poll(app: DevApp, client: Client, state: ItemState) -> None:
    outcome = await app.outcome(client, state.item)
    if outcome is not None:
        state.status, state.reason = outcome
@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """First Ctrl-C (or SIGTERM) asks for a clean stop; a second one raises."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def on_signal() -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    installed = []
    for sig in previous:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
            handler = previous[sig]
            if callable(handler) or isinstance(handler, int):
                signal.signal(sig, handler)


async def _stop_task(task: asyncio.Task[None], stop: asyncio.Event, timeout: float = 15) -> None:
    stop.set()
    try:
        await asyncio.wait_for(task, timeout)
    except TimeoutError:
        log.warning("%s did not stop within %.0fs", task.get_name(), timeout)
    except Exception:
        log.exception("%s failed", task.get_name())


async def _wait_ready(what: str, ready: Awaitable[object], timeout: float = 60) -> None:
    try:
        await asyncio.wait_for(ready, timeout)
    except TimeoutError:
        raise EmbeddedServerError(f"{what} not ready after {timeout:.0f}s") from None


class _DevStack:
    def __init__(
        self, app: DevApp, console: Console, count: int, bounded: bool, ui: bool, timeout: float
    ) -> None:
        self.app = app
        self.console = console
        self.count = count
        self.bounded = bounded
        self.ui = ui
        self.timeout = timeout
        self.summary = DevSummary()

    async def run(self, stop: asyncio.Event) -> int:
        app, console = self.app, self.console
        router = load_router(app.routes, setting=f"DevApp.routes of {app.title!r}")
        started = time.monotonic()
        async with contextlib.AsyncExitStack() as stack:
            with console.status("starting the Temporal dev server and the Kafka broker..."):
                temporal, kafka = await asyncio.gather(
                    stack.enter_async_context(EmbeddedTemporal(ui=self.ui)),
                    stack.enter_async_context(EmbeddedKafka()),
                )
            settings = dev_settings(app, kafka.bootstrap, temporal.address)
            # The sidecar's HTTP port serves the choreography map (on loopback, a free port).
            ui = {"temporal_ui": temporal.ui_url} if temporal.ui_url else {}
            settings = settings.model_copy(update={
                "http_port": free_port(),
                "map": settings.map.model_copy(update=ui),
            })
            topics = [
                *settings.kafka.topics,
                *app.extra_topics,
                settings.kafka.deadletter_topic,
                settings.emit.default_topic,
            ]
            for topic in dict.fromkeys(t for t in topics if t):
                await create_topic(kafka.bootstrap, topic, PARTITIONS)
            console.print(f"[bold]Temporal[/] {temporal.address}   [bold]Kafka[/] {kafka.bootstrap}")
            if temporal.ui_url:
                console.print(f"[bold]Temporal UI[/] {self.workflows_url(temporal)}")

            client = await Client.connect(
                temporal.address,
                namespace=temporal.namespace,
                data_converter=make_data_converter(settings),
            )
            with console.status("starting the worker, the services and the sidecar..."):
                worker_stop, worker_ready = asyncio.Event(), asyncio.Event()
                worker = asyncio.create_task(
                    app.worker(settings, client, worker_stop, worker_ready.set), name="worker"
                )
                stack.push_async_callback(_stop_task, worker, worker_stop)
                await _wait_ready("the worker", self._ready_or_failed(worker, worker_ready))

                services = list(app.services(settings))
                services_stop = asyncio.Event()
                for service in services:
                    task = asyncio.create_task(service.run(services_stop), name=service.name)
                    stack.push_async_callback(_stop_task, task, services_stop)
                sidecar = Sidecar(settings, router, client=client)
                sidecar_task = asyncio.create_task(sidecar.run(), name="sidecar")
                stack.push_async_callback(self._stop_sidecar, sidecar, sidecar_task)
                # Consumer groups join in parallel: each join takes about half a session timeout.
                await asyncio.gather(
                    _wait_ready("the sidecar", self._sidecar_ready(sidecar, sidecar_task)),
                    *(_wait_ready(f"the {s.name} service", s.wait_ready()) for s in services),
                )
                loom = sidecar.loom
                if loom is None:
                    raise EmbeddedServerError("the sidecar stopped before it consumed")
            if sidecar.http is not None:
                console.print(f"[bold]Map[/] {self.map_url(sidecar)}")

            batch = app.sample(self.count)
            self.summary.items = [ItemState(item) for item in batch]

            def sent(_: DevItem) -> None:
                self.summary.placed += 1

            publisher = asyncio.create_task(
                app.publish(settings, batch, 0.0 if self.bounded else 0.25, sent), name="publish"
            )
            stack.push_async_callback(self._cancel, publisher)
            console.print(
                f"published {len(batch)} {app.noun}s; "
                f"{'waiting for every workflow to finish' if self.bounded else 'Ctrl-C stops'}"
            )
            await self._watch(client, loom, services, stop, started)
            console.print(Text("stopping...", style="dim"))
        return self._report(temporal)

    async def _ready_or_failed(self, task: asyncio.Task[None], ready: asyncio.Event) -> None:
        waiter = asyncio.create_task(ready.wait())
        done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            waiter.cancel()
            task.result()  # raises the worker's error
            raise EmbeddedServerError("the worker stopped before it was ready")

    @staticmethod
    async def _sidecar_ready(sidecar: Sidecar, task: asyncio.Task[int]) -> None:
        while sidecar.health is None or not sidecar.health.running:
            if task.done():
                raise EmbeddedServerError(f"the sidecar stopped with exit code {task.result()}")
            await asyncio.sleep(0.05)

    @staticmethod
    async def _stop_sidecar(sidecar: Sidecar, task: asyncio.Task[int]) -> None:
        sidecar.stop()  # stop fetching, drain, commit, close
        code = await task
        if code:
            log.warning("the sidecar stopped with exit code %d", code)

    @staticmethod
    async def _cancel(task: asyncio.Task[None]) -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    @staticmethod
    def map_url(sidecar: Sidecar) -> str:
        """The choreography map's page on the sidecar's HTTP port."""
        port = sidecar.http.port if sidecar.http is not None else 0
        return f"http://{sidecar.settings.http_host}:{port}/map"

    @staticmethod
    def workflows_url(temporal: EmbeddedTemporal) -> str:
        """Where the workflows are in the Web UI."""
        return f"{temporal.ui_url}/namespaces/{temporal.namespace}/workflows"

    async def _watch(
        self,
        client: Client,
        loom: Loom,
        services: Sequence[DevService],
        stop: asyncio.Event,
        started: float,
    ) -> None:
        summary = self.summary
        deadline = started + self.timeout
        announced = False
        with Live(console=self.console, refresh_per_second=4, transient=False) as live:
            while True:
                open_items = [i for i in summary.items if not i.finished]
                await asyncio.gather(*(_poll(self.app, client, i) for i in open_items))
                summary.consumed = int(metric_total(loom.metrics.consumed))
                summary.routed = int(metric_total(loom.metrics.routed))
                summary.deadlettered = int(metric_total(loom.metrics.deadlettered))
                summary.commands = sum(s.handled for s in services)
                summary.elapsed = time.monotonic() - started
                live.update(dashboard(self.app, summary))
                if loom.error is not None:
                    raise loom.error
                if summary.finished:
                    if self.bounded:
                        return
                    if not announced:
                        announced = True
                        live.console.print(
                            f"[bold green]every {self.app.noun} finished[/]; browse the "
                            "workflows in the Temporal UI, Ctrl-C to stop"
                        )
                if self.bounded and time.monotonic() > deadline:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), _POLL_S)
                if stop.is_set():
                    return

    def _report(self, temporal: EmbeddedTemporal) -> int:
        summary, console, noun = self.summary, self.console, self.app.noun
        console.print(items_table(self.app, summary))
        by_status = ", ".join(f"{s} {summary.count(s)}" for s in summary.statuses)
        unfinished = sum(1 for i in summary.items if not i.finished)
        console.print(
            f"[bold]summary[/]: {len(summary.items)} {noun}s, placed {summary.placed}, "
            f"{escape(by_status) or 'none finished'}, unfinished {unfinished}; "
            f"events routed {summary.routed}, dead-lettered {summary.deadlettered}"
        )
        if temporal.ui_url:
            console.print(f"Temporal UI was at {self.workflows_url(temporal)}")
        if not summary.finished:
            console.print(f"[red]not every {noun} finished within {self.timeout:g}s")
            return 1
        if not summary.as_designed:
            console.print(f"[red]some {noun}s did not end as the sample data says they should")
            return 1
        console.print(f"[green]every {noun} ended as designed")
        return 0


async def run_dev(
    app: DevApp,
    *,
    count: int = 20,
    bounded: bool = False,
    ui: bool = True,
    console: Console | None = None,
    timeout: float = 120,
) -> int:
    """Run ``app`` on embedded servers, with a live dashboard.

    Args:
        app: The application.
        count: Items of sample workload to publish.
        bounded: Exit once every item's workflow closed instead of waiting for Ctrl-C.
        ui: Serve the Temporal Web UI.
        console: Where to draw (a new stdout console when None).
        timeout: With ``bounded``, seconds after which unfinished items fail the run.

    Returns:
        The exit code: 0 when every item finished as designed (or on Ctrl-C in the
        unbounded mode once all finished), 1 when some did not, 2 when a server did not start.
    """
    console = console or Console()
    stop = asyncio.Event()
    handler: logging.Handler | None = None
    root = logging.getLogger()
    if not root.handlers:
        handler = RichHandler(console=console, show_path=False, level=logging.WARNING)
        root.addHandler(handler)
    try:
        with _stop_on_signals(stop):
            return await _DevStack(app, console, count, bounded, ui, timeout).run(stop)
    except EmbeddedServerError as exc:
        console.print(Text(str(exc), style="red"))
        return 2
    finally:
        if handler is not None:
            root.removeHandler(handler)


def dev(
    orders: Annotated[
        int, typer.Option("--orders", "--count", help="Items of sample workload to publish.")
    ] = 12,
    bounded: Annotated[
        bool, typer.Option(help="Exit when every item finished: 0 when all ended as designed.")
    ] = False,
    ui: Annotated[bool, typer.Option("--ui/--no-ui", help="Serve the Temporal Web UI.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds the bounded demo may take.")] = 180.0,
    app: Annotated[
        str,
        typer.Option(
            "--app",
            help="The application, a bridge.dev.DevApp as MODULE:ATTR (default: the reference "
            "order saga of a temporal-loom checkout).",
        ),
    ] = DEFAULT_APP,
) -> None:
    """Run an application (the reference order saga by default) on embedded Temporal and Kafka."""
    import_path()
    dev_app = guarded(lambda: load_dev_app(app))
    if orders < 1:
        fail("--orders must be at least 1", EXIT_SETTINGS)
    raise typer.Exit(
        asyncio.run(run_dev(dev_app, count=orders, bounded=bounded, ui=ui, timeout=timeout))
    )
