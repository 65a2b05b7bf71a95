"""``loom dev``: the whole reference application on this machine, in one command.

Starts the embedded Temporal dev server (Web UI on) and the embedded Kafka-compatible broker,
creates the topics, then runs, in this process: the sidecar (``bridge.service.Sidecar`` with
``routes.router``),
the reference worker (``workflows.worker``) and the participant services (``services``).
It publishes a batch of sample orders, shows live progress (orders placed / completed /
compensated, events consumed / routed / dead-lettered, commands answered) and prints a
summary and the Temporal UI address. Nothing is simulated: every event crosses the broker,
every saga runs in Temporal.

``bounded=True`` exits once every order finished (0 when each ended as designed) or when
``timeout`` passed (1). Otherwise it keeps running for the UI until Ctrl-C, which stops
everything cleanly (sidecar drained and committed, worker and services stopped, servers
stopped)::

    python -m bridge.devstack --orders 10 --bounded --no-ui
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass, field

from rich.console import Console
from rich.live import Live
from rich.logging import RichHandler
from rich.table import Table
from rich.text import Text
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode

from bridge.consumer import Loom
from bridge.dev import EmbeddedKafka, EmbeddedTemporal, create_topic
from bridge.exceptions import EmbeddedServerError
from bridge.observability import metric_total
from bridge.service import Sidecar
from bridge.settings import LoomSettings

__all__ = ["DevSummary", "OrderState", "main", "run_dev"]

log = logging.getLogger("loom.dev")

#: Partitions of each topic the dev stack creates.
PARTITIONS = 2
_POLL_S = 0.5

# Statuses an order goes through on the dashboard; the last two are final.
PENDING, RUNNING, COMPLETED, COMPENSATED, FAILED = (
    "pending",
    "running",
    "completed",
    "compensated",
    "failed",
)
_FINAL = frozenset({COMPLETED, COMPENSATED, FAILED})


@dataclass
class OrderState:
    """What the dashboard knows about one order."""

    order_id: str
    expected: str
    status: str = PENDING
    reason: str | None = None

    @property
    def workflow_id(self) -> str:
        """The saga's workflow id."""
        return f"order-{self.order_id}"

    @property
    def finished(self) -> bool:
        """The saga closed (completed, compensated, or failed in Temporal)."""
        return self.status in _FINAL


@dataclass
class DevSummary:
    """Counts shown on the dashboard and in the summary."""

    orders: list[OrderState] = field(default_factory=list)
    placed: int = 0
    consumed: int = 0
    routed: int = 0
    deadlettered: int = 0
    commands: int = 0
    elapsed: float = 0.0

    def count(self, status: str) -> int:
        """Orders in ``status``."""
        return sum(1 for order in self.orders if order.status == status)

    @property
    def finished(self) -> bool:
        """Every order was placed and its saga closed."""
        return self.placed == len(self.orders) and all(o.finished for o in self.orders)

    @property
    def as_designed(self) -> bool:
        """Every order ended the way the sample data says it should."""
        return all(o.status == o.expected for o in self.orders)


def _dashboard(summary: DevSummary, title: str) -> Table:
    table = Table(title=title, show_header=False, title_justify="left", min_width=44)
    table.add_column("what", style="bold")
    table.add_column("count", justify="right")
    total = len(summary.orders)
    table.add_row("orders placed", f"{summary.placed}/{total}")
    table.add_row("sagas running", str(summary.count(RUNNING)))
    table.add_row("[green]completed", str(summary.count(COMPLETED)))
    table.add_row("[yellow]compensated", str(summary.count(COMPENSATED)))
    if summary.count(FAILED):
        table.add_row("[red]failed", str(summary.count(FAILED)))
    table.add_row("events consumed by the sidecar", str(summary.consumed))
    table.add_row("Temporal calls (routed)", str(summary.routed))
    table.add_row("dead-lettered", str(summary.deadlettered))
    table.add_row("commands answered by services", str(summary.commands))
    table.add_row("elapsed", f"{summary.elapsed:.1f}s")
    return table


def _orders_table(summary: DevSummary) -> Table:
    table = Table(title="orders", title_justify="left")
    for column in ("workflow id", "expected", "outcome", "reason"):
        table.add_column(column)
    for order in summary.orders:
        ok = order.status == order.expected
        style = "green" if ok else "red"
        table.add_row(
            order.workflow_id, order.expected, f"[{style}]{order.status}", order.reason or ""
        )
    return table


async def _poll_order(client: Client, order: OrderState) -> None:
    # Imported here: the result type lives in the reference app, loaded with the worker.
    from workflows.models import OrderResult

    handle = client.get_workflow_handle(order.workflow_id, result_type=OrderResult)
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return  # not started yet: order.placed still on its way
        raise
    if description.status is WorkflowExecutionStatus.RUNNING:
        order.status = RUNNING
    elif description.status is WorkflowExecutionStatus.COMPLETED:
        result = await handle.result()
        order.status, order.reason = result.status, result.reason
    elif description.status is not None:
        order.status, order.reason = FAILED, description.status.name.lower()


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


def dev_settings(kafka_bootstrap: str, temporal_address: str) -> LoomSettings:
    """Settings of the dev stack (the environment and ``.env`` are not read)."""
    return LoomSettings.model_validate({
        # A consumer group forms after about half the session timeout: keep it short (6 s is
        # also the smallest session timeout a real Kafka broker accepts by default).
        "kafka": {
            "bootstrap": kafka_bootstrap,
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


class _DevStack:
    def __init__(self, console: Console, orders: int, bounded: bool, ui: bool, timeout: float):
        self.console = console
        self.orders = orders
        self.bounded = bounded
        self.ui = ui
        self.timeout = timeout
        self.summary = DevSummary()

    async def run(self, stop: asyncio.Event) -> int:
        from routes import router
        from services import all_services
        from services.shop import expected_status, publish_orders, sample_orders
        from workflows.activities import COMMAND_TOPICS
        from workflows.worker import run_worker

        console = self.console
        started = time.monotonic()
        async with contextlib.AsyncExitStack() as stack:
            with console.status("starting the Temporal dev server and the Kafka broker..."):
                temporal, kafka = await asyncio.gather(
                    stack.enter_async_context(EmbeddedTemporal(ui=self.ui)),
                    stack.enter_async_context(EmbeddedKafka()),
                )
            settings = dev_settings(kafka.bootstrap, temporal.address)
            topics = [
                *settings.kafka.topics,
                *COMMAND_TOPICS.values(),
                settings.kafka.deadletter_topic,
                settings.emit.default_topic,
            ]
            for topic in topics:
                await create_topic(kafka.bootstrap, topic, PARTITIONS)
            console.print(f"[bold]Temporal[/] {temporal.address}   [bold]Kafka[/] {kafka.bootstrap}")
            if temporal.ui_url:
                console.print(f"[bold]Temporal UI[/] {self.workflows_url(temporal)}")

            client = await Client.connect(
                temporal.address, namespace=temporal.namespace, data_converter=pydantic_data_converter
            )
            with console.status("starting the worker, the participant services and the sidecar..."):
                worker_stop, worker_ready = asyncio.Event(), asyncio.Event()
                worker = asyncio.create_task(
                    run_worker(settings, client=client, stop=worker_stop, ready=worker_ready.set),
                    name="worker",
                )
                stack.push_async_callback(_stop_task, worker, worker_stop)
                await _wait_ready("the worker", self._ready_or_failed(worker, worker_ready))

                services = all_services(settings.kafka.client_options())
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
                assert sidecar.loom is not None
                loom = sidecar.loom

            batch = sample_orders(self.orders)
            self.summary.orders = [OrderState(o.order_id, expected_status(o)) for o in batch]

            def sent(_: object) -> None:
                self.summary.placed += 1

            publisher = asyncio.create_task(
                publish_orders(
                    settings.kafka.client_options(),
                    batch,
                    interval=0.0 if self.bounded else 0.25,
                    on_sent=sent,
                ),
                name="shop",
            )
            stack.push_async_callback(self._cancel, publisher)
            console.print(
                f"published orders to topic [bold]orders[/]; "
                f"{'waiting for every saga to finish' if self.bounded else 'Ctrl-C stops'}"
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
    def workflows_url(temporal: EmbeddedTemporal) -> str:
        """Where the sagas are in the Web UI."""
        return f"{temporal.ui_url}/namespaces/{temporal.namespace}/workflows"

    async def _watch(
        self,
        client: Client,
        loom: Loom,
        services: Sequence[object],
        stop: asyncio.Event,
        started: float,
    ) -> None:
        summary = self.summary
        deadline = started + self.timeout
        announced = False
        with Live(console=self.console, refresh_per_second=4, transient=False) as live:
            while True:
                open_orders = [o for o in summary.orders if not o.finished]
                await asyncio.gather(*(_poll_order(client, o) for o in open_orders))
                summary.consumed = int(metric_total(loom.metrics.consumed))
                summary.routed = int(metric_total(loom.metrics.routed))
                summary.deadlettered = int(metric_total(loom.metrics.deadlettered))
                summary.commands = sum(int(getattr(s, "handled", 0)) for s in services)
                summary.elapsed = time.monotonic() - started
                live.update(_dashboard(summary, "temporal-loom dev: order saga"))
                if loom.error is not None:
                    raise loom.error
                if summary.finished:
                    if self.bounded:
                        return
                    if not announced:
                        announced = True
                        live.console.print(
                            "[bold green]every order finished[/]; browse the sagas in the "
                            "Temporal UI, Ctrl-C to stop"
                        )
                if self.bounded and time.monotonic() > deadline:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), _POLL_S)
                if stop.is_set():
                    return

    def _report(self, temporal: EmbeddedTemporal) -> int:
        summary, console = self.summary, self.console
        console.print(_orders_table(summary))
        console.print(
            f"[bold]summary[/]: {len(summary.orders)} orders, placed {summary.placed}, "
            f"completed {summary.count(COMPLETED)}, compensated {summary.count(COMPENSATED)}, "
            f"failed {summary.count(FAILED)}, unfinished "
            f"{sum(1 for o in summary.orders if not o.finished)}; "
            f"events routed {summary.routed}, dead-lettered {summary.deadlettered}"
        )
        if temporal.ui_url:
            console.print(f"Temporal UI was at {self.workflows_url(temporal)}")
        if not summary.finished:
            console.print(f"[red]not every order finished within {self.timeout:g}s")
            return 1
        if not summary.as_designed:
            console.print("[red]some orders did not end as the sample data says they should")
            return 1
        console.print("[green]every order ended as designed")
        return 0


async def run_dev(
    *,
    orders: int = 20,
    bounded: bool = False,
    ui: bool = True,
    console: Console | None = None,
    timeout: float = 120,
) -> int:
    """Run the reference application on embedded servers, with a live dashboard.

    Args:
        orders: Sample orders to publish (every sixth kind fails a different step).
        bounded: Exit once every order finished instead of waiting for Ctrl-C.
        ui: Serve the Temporal Web UI.
        console: Where to draw (a new stdout console when None).
        timeout: With ``bounded``, seconds after which unfinished orders fail the run.

    Returns:
        The exit code: 0 when every order finished as designed (or on Ctrl-C in the
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
            return await _DevStack(console, orders, bounded, ui, timeout).run(stop)
    except EmbeddedServerError as exc:
        console.print(f"[red]{exc}")
        return 2
    finally:
        if handler is not None:
            root.removeHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bridge.devstack``: the command line of :func:`run_dev`."""
    parser = argparse.ArgumentParser(
        prog="python -m bridge.devstack", description="Run the reference app on embedded servers."
    )
    parser.add_argument("--orders", type=int, default=20, help="sample orders (default 20)")
    parser.add_argument(
        "--bounded", action="store_true", help="exit when every order finished (CI)"
    )
    parser.add_argument("--no-ui", dest="ui", action="store_false", help="no Temporal Web UI")
    parser.add_argument("--timeout", type=float, default=120, help="bounded run limit (s)")
    args = parser.parse_args(argv)
    return asyncio.run(
        run_dev(orders=args.orders, bounded=args.bounded, ui=args.ui, timeout=args.timeout)
    )


if __name__ == "__main__":
    sys.exit(main())
