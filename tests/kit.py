"""The tests' kit: wait for a condition, settings for the session servers, ``loom`` as a process.

- :func:`eventually` polls a condition until it holds; on timeout it fails with the last value
  seen. Tests wait for what they mean with it, never for a fixed time.
- :func:`loom_settings` builds :class:`~bridge.settings.LoomSettings` for the embedded servers
  (short group timeouts, fast commits, no HTTP server); :func:`settings_as_env` turns them into the
  ``LOOM_*`` environment of a ``loom`` subprocess, so both ways of running get the same values.
- :class:`LoomProcess` runs ``loom <command>`` as a subprocess: environment from settings,
  combined output collected, readiness over HTTP, graceful stop (SIGTERM) or SIGKILL. The
  ``start_loom`` fixture (``tests/conftest.py``) starts them and closes them after the test.
- :func:`workflow_started` waits until a workflow exists (other errors fail at once);
  :func:`check_loop` in a probe fails the wait at once when an in-process loom died.
- :func:`metric_value` reads a sample out of ``/metrics`` text; :func:`http_get` asks the
  sidecar's HTTP server without a client library; :func:`committed_offsets` reads a group's.

Topics are read with :func:`bridge.testing.read_records` (the pytest plugin's reader).
The kit imports no pytest, so a ``loom`` subprocess can load :data:`NO_ROUTES` from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar, overload

from pydantic import BaseModel, SecretStr
from temporalio.client import Client, WorkflowExecutionDescription
from temporalio.service import RPCError, RPCStatusCode

from bridge.routing import Router
from bridge.settings import LoomSettings

T = TypeVar("T")

# Not resolve(): a workflow module of a test that imports the kit is re-imported in
# Temporal's sandbox, which refuses file system access (pytest imports it by absolute path).
TESTS_DIR = Path(__file__).parent

#: An empty route table, for settings whose routes are never loaded or do not matter.
EMPTY_ROUTER = Router([])
#: ``LOOM_ROUTES`` of :data:`EMPTY_ROUTER` (the kit is on a ``LoomProcess``'s ``PYTHONPATH``).
NO_ROUTES = "kit:EMPTY_ROUTER"


# --- waiting -------------------------------------------------------------------------------------


@overload
async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    timeout: float,
    until: Callable[[T], object] = ...,
    interval: float = ...,
    what: str = ...,
) -> T: ...


@overload
async def eventually(
    probe: Callable[[], T],
    *,
    timeout: float,
    until: Callable[[T], object] = ...,
    interval: float = ...,
    what: str = ...,
) -> T: ...


async def eventually(
    probe: Callable[[], Any],
    *,
    timeout: float,
    until: Callable[[Any], object] = bool,
    interval: float = 0.05,
    what: str = "",
) -> Any:
    """Poll ``probe`` (sync or async) until ``until(value)`` is true; return that value.

    An ``AssertionError`` raised by ``probe`` means "not yet" (the probe can assert); any other
    exception propagates at once, so a real failure fails the test now, not at the timeout.
    The probe runs at least once. On timeout, raises ``AssertionError`` with ``what`` and the
    last value (or the last assertion) seen.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: object = "(no value)"
    while True:
        try:
            value = probe()
            if inspect.isawaitable(value):
                value = await value
            if until(value):
                return value
            last = value
        except AssertionError as exc:
            last = exc
        if loop.time() >= deadline:
            shown = repr(last)
            if len(shown) > 2000:
                shown = shown[:2000] + "..."
            raise AssertionError(f"{what or 'condition'}: not true after {timeout}s; last: {shown}")
        await asyncio.sleep(interval)


class LoopDiedError(Exception):
    """An in-process loom's loop ended with an error while a test waited (fails at once)."""


def check_loop(loom: Any) -> None:
    """Raise :class:`LoopDiedError` if ``loom`` (a :class:`~bridge.sidecar.loop.Loom`) died:
    call it in a probe so that :func:`eventually` fails at once instead of at its timeout."""
    if loom.error is not None:
        raise LoopDiedError(f"the loop died: {loom.error!r}") from loom.error


@contextlib.contextmanager
def not_yet_on(status: RPCStatusCode, what: str) -> Iterator[None]:
    """Inside a probe of :func:`eventually`: Temporal's ``status`` means "not yet" (an
    ``AssertionError`` saying ``what``); any other error raises."""
    try:
        yield
    except RPCError as exc:
        if exc.status is not status:
            raise
        raise AssertionError(f"{what}: {exc}") from None


async def query_when_ready(handle: Any, query: Any, *args: Any) -> Any:
    """``handle.query(query, args=args)``, for :func:`eventually`: a run that just continued as new
    answers no query before its first workflow task (the server waits for it a while, then
    says FAILED_PRECONDITION, "not ready"); that is "not yet", any other error raises."""
    with not_yet_on(RPCStatusCode.FAILED_PRECONDITION, "not ready"):
        return await handle.query(query, args=list(args))


async def workflow_started(
    client: Client, workflow_id: str, timeout: float = 30
) -> WorkflowExecutionDescription:
    """Until ``workflow_id`` exists (its latest run's description); other errors raise at once."""

    async def describe() -> WorkflowExecutionDescription:
        with not_yet_on(RPCStatusCode.NOT_FOUND, f"{workflow_id} not started yet"):
            return await client.get_workflow_handle(workflow_id).describe()

    return await eventually(describe, timeout=timeout, interval=0.1, what=f"{workflow_id} started")


# --- settings ------------------------------------------------------------------------------------


#: Group timeouts for a member that joins and leaves cleanly (``kafka=FAST_GROUP``): the
#: embedded broker answers a join after ceil(session timeout / 2) s, so this joins in about one
#: second instead of three; the heartbeat notices a rebalance within 0.1 s. A member that dies
#: without leaving is replaced after about 3 s.
FAST_GROUP = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 100}


def loom_settings(
    bootstrap: str,
    topics: Sequence[str],
    deadletter_topic: str,
    *,
    routes: str = NO_ROUTES,
    group_id: str | None = None,
    **overrides: Any,
) -> LoomSettings:
    """Settings for the session servers: the given topics and routes (always set, never the
    defaults), a unique group, short group timeouts, commits every 0.2 s, no HTTP server.

    ``overrides`` are top-level settings (``http_port=8123``) or sections merged into the
    defaults (``dispatch={"max_in_flight": 8}``, ``temporal={"address": ...}``).
    """
    values: dict[str, Any] = {
        "routes": routes,
        "http_port": 0,
        "kafka": {
            "bootstrap": bootstrap,
            "topics": list(topics),
            "deadletter_topic": deadletter_topic,
            "group_id": group_id or f"g-{uuid.uuid4().hex[:8]}",
            # The embedded broker answers a join after about half the session timeout, and a
            # member that died without leaving is replaced after about 1.5 times it.
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
        },
        "dispatch": {"commit_interval_s": 0.2, "drain_timeout_s": 10},
    }
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return LoomSettings.model_validate(values)


def settings_as_env(settings: LoomSettings) -> dict[str, str]:
    """The ``LOOM_*`` variables that give a ``loom`` process ``settings`` (every value set)."""
    env: dict[str, str] = {}

    def walk(model: BaseModel, prefix: str) -> None:
        for name in sorted(model.model_fields_set):
            value = getattr(model, name)
            var = f"{prefix}{name.upper()}"
            if isinstance(value, BaseModel):
                walk(value, var + "__")
            elif value is None:
                continue
            elif isinstance(value, SecretStr):
                env[var] = value.get_secret_value()
            elif isinstance(value, enum.Enum):
                env[var] = str(value.value)
            elif isinstance(value, bool):
                env[var] = "true" if value else "false"
            elif isinstance(value, list | dict):
                env[var] = json.dumps(value)
            else:
                env[var] = str(value)

    walk(settings, "LOOM_")
    return env


# --- Kafka ---------------------------------------------------------------------------------------


async def committed_offsets(
    bootstrap: str, group: str, topic: str, partitions: int
) -> dict[int, int | None]:
    """The committed offset of ``group`` on each partition of ``topic`` (None: none yet)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from bridge.kafka.clients import started

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    async with started(consumer):
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}


# --- HTTP and metrics ----------------------------------------------------------------------------


async def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, str]:
    """``GET http://127.0.0.1:port/path``: (status, body); (0, error) when nothing answers."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    except (OSError, TimeoutError) as exc:
        return 0, str(exc)
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)
    except (OSError, TimeoutError) as exc:
        return 0, str(exc)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0, raw[:200].decode("utf-8", "replace")
    return status, body.decode("utf-8", "replace")


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (exposition text)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(value)
    return total


# --- loom as a subprocess ------------------------------------------------------------------------


class LoomExitedError(Exception):
    """The process exited while a test waited for it (not an AssertionError: fails at once)."""


class LoomProcess:
    """``python -m bridge.cli <args>`` in its own session, its combined output collected.

    Use :meth:`start` (or :meth:`run` for a short command), and :meth:`close` when done.
    """

    def __init__(self, proc: asyncio.subprocess.Process, name: str, http_port: int) -> None:
        self.proc = proc
        self.name = name
        self.http_port = http_port
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(
        cls,
        *args: str,
        cwd: Path,
        settings: LoomSettings | None = None,
        env: Mapping[str, str] | None = None,
        python_path: Sequence[Path] = (),
        name: str = "loom",
    ) -> LoomProcess:
        """Start ``loom <args>`` in ``cwd``.

        The environment is this process's without the variables the loom reads (``LOOM_*``,
        Temporal's ``TEMPORAL_*`` and OpenTelemetry's ``OTEL_*``; the test server overrides
        ``LOOM_TEST_*`` stay) and with no Temporal config file, then ``settings`` as
        ``LOOM_*``, then ``env``. ``PYTHONPATH`` gets ``python_path`` and the tests directory.
        """
        full = {
            k: v for k, v in os.environ.items()
            if not k.startswith(("LOOM_", "TEMPORAL_", "OTEL_")) or k.startswith("LOOM_TEST")
        }
        full["TEMPORAL_CONFIG_FILE"] = str(cwd / "no-temporal.toml")  # no profile from home
        if settings is not None:
            full.update(settings_as_env(settings))
        full.update(env or {})
        paths = [*map(str, python_path), str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]
        full["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        full["PYTHONUNBUFFERED"] = "1"
        proc = await asyncio.create_subprocess_exec(
            # python -m: works whether or not the venv's bin/ is on PATH.
            sys.executable, "-m", "bridge.cli", *args,
            cwd=cwd, env=full, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill() reaches all it started
        )
        return cls(proc, name, int(full.get("LOOM_HTTP_PORT", "0")))

    @classmethod
    async def run(
        cls, *args: str, cwd: Path, settings: LoomSettings | None = None,
        env: Mapping[str, str] | None = None, python_path: Sequence[Path] = (), timeout: float = 60,
    ) -> tuple[int | None, str]:
        """Run a short ``loom`` command to its end: (exit code, combined output)."""
        proc = await cls.start(*args, cwd=cwd, settings=settings, env=env, python_path=python_path)
        try:
            code = await proc.wait(timeout)
        finally:
            await proc.close()
        return code, proc.output

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.lines.append(line.decode(errors="replace"))

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def tail(self, lines: int = 40) -> str:
        return "".join(self.lines[-lines:]) or "(no output)"

    async def get(self, path: str, timeout: float = 2.0) -> tuple[int, str]:
        """(status, body) of ``GET path`` on its HTTP server; (0, error) when it does not answer
        within ``timeout`` seconds."""
        return await http_get(self.http_port, path, timeout)

    async def probe(self, path: str, timeout: float = 2.0) -> int:
        """HTTP status of ``path`` (0 when the server does not answer within ``timeout``)."""
        return (await self.get(path, timeout))[0]

    async def metrics(self) -> str:
        status, text = await self.get("/metrics")
        assert status == 200, f"{self.name} /metrics: {status} {text[:200]}"
        return text

    def check_running(self) -> None:
        """Raise :class:`LoomExitedError` (with its output's tail) if the process exited."""
        if self.returncode is not None:
            raise LoomExitedError(f"{self.name} exited with {self.returncode}:\n{self.tail()}")

    async def _until_status(self, path: str, timeout: float) -> str:
        async def answer() -> tuple[int, str]:
            self.check_running()
            return await self.get(path)

        try:
            status_body = await eventually(
                answer, timeout=timeout, until=lambda sb: sb[0] == 200, interval=0.1,
                what=f"{self.name} {path} 200",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.tail()}") from None
        return status_body[1]

    async def wait_ready(self, timeout: float = 60) -> str:
        """Until ``/readyz`` answers 200; its body. Fails at once if the process exits."""
        return await self._until_status("/readyz", timeout)

    async def wait_metric(self, name: str, at_least: float, timeout: float = 30, **labels: str) -> str:
        """Until the sum of ``name``'s samples with ``labels`` is ``at_least``; the metrics text."""

        async def scrape() -> str:
            self.check_running()
            return await self.metrics()

        return await eventually(
            scrape, timeout=timeout, until=lambda text: metric_value(text, name, **labels) >= at_least,
            interval=0.1, what=f"{self.name} {name}{labels} >= {at_least}",
        )

    def send(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process itself."""
        self.proc.send_signal(sig)

    async def wait(self, timeout: float) -> int | None:
        """Wait for the exit: the exit code, or None when still running after ``timeout``."""
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            return None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._reader), 5)  # the output up to its end
        return code

    async def stop(self, timeout: float = 30) -> int | None:
        """Graceful stop: SIGTERM, then wait up to ``timeout``; the exit code (None: still running)."""
        if self.returncode is None:
            self.send(signal.SIGTERM)
        return await self.wait(timeout)

    async def kill(self) -> None:
        """SIGKILL its whole process group (it and only what it started), and wait."""
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        await self.wait(30)

    async def close(self) -> None:
        """Stop it if still running (SIGTERM to its group, SIGKILL after 15 s); end the reader."""
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            if await self.wait(15) is None:
                await self.kill()
        if not self._reader.done():
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


class StartLoom(Protocol):
    """The ``start_loom`` fixture: ``await start_loom("run", settings=..., name=...)``; every
    process it started is closed after the test (a failed test leaves none running)."""

    async def __call__(
        self,
        *args: str,
        settings: LoomSettings | None = None,
        env: Mapping[str, str] | None = None,
        python_path: Sequence[Path] = (),
        name: str = "loom",
    ) -> LoomProcess: ...


# --- probes taken from a thread ------------------------------------------------------------------


class Prober:
    """Asks HTTP paths of a sidecar every ``period`` seconds from a thread of its own, and keeps
    each answer's status and time.

    The probes are taken off the test's event loop on purpose: a test loop that is busy (or
    starved on a loaded machine) would time its own waits out and blame the sidecar, as a
    probe's ``asyncio.wait_for`` did. A kubelet, too, probes from outside the process.

    Args:
        paths: The paths asked in turn, each one per period.
        budget: Seconds a probe waits for its answer (a status of 0: none in time).
        period: Seconds between two rounds.
    """

    def __init__(self, paths: Sequence[str], *, budget: float = 1.0, period: float = 0.1) -> None:
        self.paths = tuple(paths)
        self.budget = budget
        self.period = period
        #: (path, status, seconds) per probe; status 0: no answer within the budget.
        self.answers: list[tuple[str, int, float]] = []
        self._port: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prober", daemon=True)
        self._thread.start()

    def watch(self, port: int | None) -> None:
        """Probe the server on ``port`` from now on (None: none, e.g. while a sidecar drains
        to its exit: a draining sidecar is no longer live, by design)."""
        self._port = port

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            for path in self.paths:
                port = self._port
                if port is None:
                    break
                began = time.monotonic()
                try:
                    url = f"http://127.0.0.1:{port}{path}"
                    with urllib.request.urlopen(url, timeout=self.budget) as answer:
                        status = answer.status
                except urllib.error.HTTPError as err:
                    status = err.code
                except OSError:
                    status = 0
                if self._port == port:  # an answer lost to a switch is not the sidecar's
                    self.answers.append((path, status, time.monotonic() - began))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.budget + self.period + 1)

    def failures(self, expected: int = 200) -> list[tuple[str, int, float]]:
        """The probes that did not answer ``expected`` within the budget."""
        return [a for a in self.answers if a[1] != expected or a[2] > self.budget]

    @property
    def slowest(self) -> float:
        return max((a[2] for a in self.answers), default=0.0)
