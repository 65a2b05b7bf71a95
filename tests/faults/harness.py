"""The fault suite's harness: sizes, the sidecar as a real process, group offsets, results.

``LOOM_FAULTS_FULL=1`` selects the full sizes of issue 8 (5,000 events, a 10 s outage...);
the default is a reduced size that keeps the whole suite within a few minutes on 2 cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from recorder import query_all, wait_delivered

from bridge.settings import LoomSettings
from faults.workload import Tally, tally

FULL = os.environ.get("LOOM_FAULTS_FULL", "") not in ("", "0")
TESTS_DIR = Path(__file__).resolve().parent.parent


def size(reduced: int, full: int) -> int:
    """The reduced figure by default, the full one under ``LOOM_FAULTS_FULL=1``."""
    return full if FULL else reduced


# --- results --------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the fault table."""

    scenario: str
    sent: int
    lost: int
    duplicated: int
    out_of_order: int
    deadlettered: int
    seconds: float = 0.0
    notes: str = ""
    passed: bool = True

    @classmethod
    def measured(
        cls,
        scenario: str,
        result: Tally,
        letters: list[Any],
        started: float,
        notes: str,
        *,
        passed: bool,
        sent: int | None = None,
    ) -> Row:
        """The row of a scenario from its tally, its dead letters and its ``time.monotonic()``
        start (``sent`` when more went out than the tally counts, as bad input)."""
        return cls(
            scenario, result.sent if sent is None else sent, result.lost, result.duplicated,
            result.out_of_order, len(letters), time.monotonic() - started, notes, passed,
        )


@dataclass
class Results:
    """Rows collected during the session, printed as a table and kept as JSON."""

    path: Path | None = None
    rows: list[Row] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        if self.path is not None:
            self.path.write_text(json.dumps([asdict(r) for r in self.rows], indent=2))

    def markdown(self) -> str:
        head = (
            "| scenario | events sent | lost | duplicated | out of order | dead-lettered "
            "| time (s) | notes |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
        )
        lines = [head]
        for r in self.rows:
            lines.append(
                f"| {r.scenario} | {r.sent:,} | {r.lost} | {r.duplicated} | {r.out_of_order} "
                f"| {r.deadlettered} | {r.seconds:.1f} | {r.notes} |"
            )
        return "\n".join(lines)


RESULTS = Results()


# --- settings for the sidecar -----------------------------------------------------------------


def loom_env(
    *,
    bootstrap: str,
    topic: str,
    dlq: str,
    group: str,
    temporal: str,
    task_queue: str,
    http_port: int = 0,
    max_in_flight: int = 64,
    drain_timeout_s: float = 10.0,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The ``LOOM_*`` environment of a sidecar process in a fault scenario."""
    env = {
        "LOOM_KAFKA__BOOTSTRAP": bootstrap,
        "LOOM_KAFKA__TOPICS": json.dumps([topic]),
        "LOOM_KAFKA__DEADLETTER_TOPIC": dlq,
        "LOOM_KAFKA__GROUP_ID": group,
        # A dead member must leave the group quickly, or every restart waits 30 s.
        "LOOM_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "LOOM_KAFKA__HEARTBEAT_INTERVAL_MS": "500",
        "LOOM_TEMPORAL__ADDRESS": temporal,
        "LOOM_DISPATCH__MAX_IN_FLIGHT": str(max_in_flight),
        "LOOM_DISPATCH__DRAIN_TIMEOUT_S": str(drain_timeout_s),
        "LOOM_DISPATCH__COMMIT_INTERVAL_S": "0.2",
        "LOOM_DISPATCH__RETRY_INITIAL_S": "0.05",
        "LOOM_DISPATCH__RETRY_MAX_S": "1.0",
        "LOOM_HTTP_PORT": str(http_port),
        "LOOM_ROUTES": "faults.workload:router",
        "LOOM_FAULTS_TASK_QUEUE": task_queue,
        "LOOM_LOG_LEVEL": "WARNING",
    }
    env.update(extra or {})
    return env


#: A single member that joins and leaves cleanly: the embedded broker answers a join after
#: ceil(session timeout / 2) s, so this joins in about one second instead of three.
FAST_GROUP = {"LOOM_KAFKA__SESSION_TIMEOUT_MS": "2000", "LOOM_KAFKA__HEARTBEAT_INTERVAL_MS": "100"}


def settings_from_env(env: Mapping[str, str]) -> LoomSettings:
    """The same settings for an in-process :class:`~bridge.sidecar.loop.Loom`."""
    return LoomSettings.model_validate({
        "kafka": {
            "bootstrap": env["LOOM_KAFKA__BOOTSTRAP"],
            "topics": json.loads(env["LOOM_KAFKA__TOPICS"]),
            "deadletter_topic": env["LOOM_KAFKA__DEADLETTER_TOPIC"],
            "group_id": env["LOOM_KAFKA__GROUP_ID"],
            "session_timeout_ms": int(env["LOOM_KAFKA__SESSION_TIMEOUT_MS"]),
            "heartbeat_interval_ms": int(env["LOOM_KAFKA__HEARTBEAT_INTERVAL_MS"]),
        },
        "temporal": {"address": env["LOOM_TEMPORAL__ADDRESS"]},
        "dispatch": {
            "max_in_flight": int(env["LOOM_DISPATCH__MAX_IN_FLIGHT"]),
            "drain_timeout_s": float(env["LOOM_DISPATCH__DRAIN_TIMEOUT_S"]),
            "commit_interval_s": float(env["LOOM_DISPATCH__COMMIT_INTERVAL_S"]),
            "retry_initial_s": float(env["LOOM_DISPATCH__RETRY_INITIAL_S"]),
            "retry_max_s": float(env["LOOM_DISPATCH__RETRY_MAX_S"]),
        },
        "http_port": 0,
    })


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# --- HTTP without a client library ------------------------------------------------------------


async def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, str]:
    """``GET http://127.0.0.1:port/path``: (status, body); (0, error) when unreachable."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), timeout
        )
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


def metric_value(text: str, name: str) -> float | None:
    """The (label-less) sample ``name`` in a Prometheus text exposition."""
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{}"):
            return float(line.rsplit(" ", 1)[1])
    return None


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# --- the sidecar as a process -----------------------------------------------------------------


class SidecarProcess:
    """``python -m bridge.cli run`` in its own process group, configured by ``LOOM_*``."""

    def __init__(self, env: Mapping[str, str], name: str = "sidecar") -> None:
        self.env = dict(env)
        self.name = name
        self.http_port = int(self.env.get("LOOM_HTTP_PORT", "0"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        fd, path = tempfile.mkstemp(prefix=f"loom-faults-{self.name}-", suffix=".log")
        self.log_path = Path(path)
        self._log = os.fdopen(fd, "wb")
        pythonpath = os.pathsep.join(p for p in (str(TESTS_DIR), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, **self.env, "PYTHONPATH": pythonpath, "PYTHONUNBUFFERED": "1"}
        routes = self.env.get("LOOM_ROUTES", "faults.workload:router")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "run", "--routes", routes],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(TESTS_DIR.parent),
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_bytes().decode("utf-8", "replace").splitlines()[-lines:])

    async def probe(self, path: str) -> int:
        """HTTP status of ``path`` (0 when the server does not answer)."""
        return (await http_get(self.http_port, path))[0]

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Until ``/readyz`` answers 200 (joined the group, owns partitions)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.returncode() is not None:
                raise AssertionError(f"{self.name} exited {self.returncode()}:\n{self.log_tail()}")
            if await self.probe("/readyz") == 200:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")

    async def wait_live(self, timeout: float = 60.0) -> None:
        """Until ``/livez`` answers 200 (may own no partition, e.g. a second member)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.returncode() is not None:
                raise AssertionError(f"{self.name} exited {self.returncode()}:\n{self.log_tail()}")
            if await self.probe("/livez") == 200:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{self.name} not live after {timeout}s:\n{self.log_tail()}")

    async def metrics(self) -> str:
        return (await http_get(self.http_port, "/metrics"))[1]

    def send(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    async def wait(self, timeout: float) -> int | None:
        """Wait for the exit; the exit code, or None if still running after ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.returncode() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.returncode()

    async def kill(self) -> None:
        """SIGKILL its whole process group (it and only what it started)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await asyncio.to_thread(self.proc.wait)

    async def close(self) -> None:
        """Stop it if still running (SIGTERM, then SIGKILL) and close its log."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            if await self.wait(15) is None:
                await self.kill()
        if self._log is not None:
            self._log.close()
            self._log = None


# --- Kafka helpers -----------------------------------------------------------------------------


async def log_ends(consumer: Any, tps: list[Any]) -> dict[Any, int]:
    """The offset after the last record of each partition, from a fetch's high watermark.

    The embedded broker answers ListOffsets (``end_offsets``) with the last batch's base
    offset + 1: 1 for a partition holding one batch of 5 records. A fetch response carries
    the true high watermark, so one fetch from the start of each partition is taken too.
    """
    ends: dict[Any, int] = await consumer.end_offsets(tps)
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, 0)
    deadline = time.monotonic() + 5
    while any(consumer.highwater(tp) is None for tp in tps) and time.monotonic() < deadline:
        await consumer.getmany(timeout_ms=200, max_records=1)
    return {tp: max(ends[tp], consumer.highwater(tp) or 0) for tp in tps}


async def group_offsets(
    bootstrap: str, group: str, topic: str
) -> tuple[dict[int, int], dict[int, int]] | None:
    """``({partition: committed}, {partition: log end})`` of ``topic`` (None: unknown)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, max_partition_fetch_bytes=1024
    )
    await admin.start()
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:  # metadata without the topic yet: unknown, not "nothing left"
            return None
        ends = await log_ends(consumer, tps)
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        done: dict[int, int] = {}
        for tp in tps:
            meta = committed.get(tp)
            done[tp.partition] = meta.offset if meta is not None and meta.offset >= 0 else 0
        return done, {tp.partition: ends[tp] for tp in tps}
    except Exception:
        return None
    finally:
        await consumer.stop()
        await admin.close()


async def group_lag(bootstrap: str, group: str, topic: str) -> int | None:
    """Log ends minus the group's committed offsets over ``topic`` (None: unknown)."""
    offsets = await group_offsets(bootstrap, group, topic)
    if offsets is None:
        return None
    done, ends = offsets
    return sum(max(0, ends[p] - done[p]) for p in ends)


async def wait_caught_up(bootstrap: str, group: str, topic: str, timeout: float) -> int | None:
    """Wait until the group committed everything of ``topic``; the last lag seen."""
    deadline = time.monotonic() + timeout
    lag = await group_lag(bootstrap, group, topic)
    while lag != 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        lag = await group_lag(bootstrap, group, topic)
    return lag


async def read_all(bootstrap: str, topic: str, timeout: float = 10.0, idle: float = 2.0) -> list[Any]:
    """Every record of ``topic`` from the beginning (stops after ``idle`` s without news)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        fetch_max_bytes=16 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        last_news = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last_news < idle:
            batch = await consumer.getmany(timeout_ms=300)
            for recs in batch.values():
                records.extend(recs)
                last_news = time.monotonic()
    finally:
        await consumer.stop()
    return records


# --- the end of every scenario --------------------------------------------------------------


async def settle(
    client: Any,
    expected: Mapping[str, list[str]],
    *,
    bootstrap: str,
    group: str,
    topic: str,
    timeout: float,
) -> tuple[Tally, int | None]:
    """Wait for delivery and for the group to commit everything, then count per workflow.

    The group's commit reaching the end of the topic means every record was finished, so a
    duplicate delivery, if any, has reached its workflow by then.
    """
    await wait_delivered(client, expected, timeout)
    lag = await wait_caught_up(bootstrap, group, topic, timeout=min(timeout, 60))
    seen = await query_all(client, expected)
    return tally(expected, seen), lag
