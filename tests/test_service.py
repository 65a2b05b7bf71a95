"""``loom run`` as a real subprocess against the session's Kafka and Temporal servers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import textwrap
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from recorder import RECORDER, RecorderWorkflow, publish
from temporalio.client import Client
from temporalio.worker import Worker

from bridge._loading import load_router
from bridge.dev import EmbeddedTemporal, free_port
from bridge.events import Event
from bridge.routing import Router
from bridge.settings import LoomSettings
from bridge.sidecar.process import Sidecar
from bridge.temporal.client import make_data_converter
from bridge.testing import TemporalServer

pytestmark = [pytest.mark.kafka, pytest.mark.temporal]

WORKFLOW_TYPE = RECORDER


ROUTES_WITH_STEP = '''
from pydantic import BaseModel
from bridge.actions import SignalWithStart
from bridge.routing import Match, Route, Router

class Step(BaseModel):
    """One step of an entity."""
    entity: str
    seq: int

router = Router([
    Route("step", match=Match(type="test.step"), data=Step,
          action=SignalWithStart(workflow={wf!r}, task_queue={tq!r},
                                 workflow_id="cli-{{data.entity}}")),
])
'''

ROUTES_EMPTY = '''
from bridge.routing import Router
router = Router([])
'''


def write_routes(directory: Path, source: str, **params: str) -> str:
    """Write a routes module under ``directory``; returns its module name."""
    name = f"loomtest_routes_{uuid.uuid4().hex[:10]}"
    text = source.format(**params) if params else source
    (directory / f"{name}.py").write_text(textwrap.dedent(text))
    return name


def loom_argv(*args: str) -> list[str]:
    # python -m: works whether or not the venv's bin/ is on PATH.
    return [sys.executable, "-m", "bridge.cli", *args]


@dataclass
class LoomEnv:
    """Environment of a loom subprocess pointed at the session servers."""

    directory: Path
    env: dict[str, str]
    topic: str
    dlq: str
    group: str
    http_port: int
    bootstrap: str
    extra: dict[str, str] = field(default_factory=dict)


@pytest.fixture
async def loom_env(
    tmp_path: Path,
    loom_kafka_bootstrap: str,
    loom_temporal: TemporalServer,
    new_topic: Callable[..., Awaitable[str]],
) -> LoomEnv:
    topic = await new_topic(partitions=2)
    dlq = await new_topic()
    group = f"g-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("LOOM_") or k.startswith("LOOM_TEST")
    }
    env.update({
        "PYTHONPATH": os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")]),
        "LOOM_KAFKA__BOOTSTRAP": loom_kafka_bootstrap,
        "LOOM_KAFKA__TOPICS": json.dumps([topic]),
        "LOOM_KAFKA__DEADLETTER_TOPIC": dlq,
        "LOOM_KAFKA__GROUP_ID": group,
        "LOOM_TEMPORAL__ADDRESS": loom_temporal.address,
        "LOOM_TEMPORAL__NAMESPACE": loom_temporal.namespace,
        "LOOM_HTTP_PORT": str(port),
        "LOOM_DISPATCH__COMMIT_INTERVAL_S": "0.2",
        "LOOM_DISPATCH__DRAIN_TIMEOUT_S": "10",
        # The embedded broker lets a group's next member in only after the previous member's
        # session expired (it ignores LeaveGroup): keep that short for the restart tests.
        "LOOM_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "LOOM_KAFKA__HEARTBEAT_INTERVAL_MS": "1000",
    })
    return LoomEnv(tmp_path, env, topic, dlq, group, port, loom_kafka_bootstrap)


class LoomProcess:
    """A ``loom ...`` subprocess whose combined output is collected as it runs."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.lines.append(line.decode(errors="replace"))

    @property
    def output(self) -> str:
        return "".join(self.lines)

    async def wait(self, timeout: float = 30) -> int:
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.wait_for(self._reader, 5)
        return code

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


async def start_loom(
    args: Sequence[str], env: Mapping[str, str], cwd: Path
) -> LoomProcess:
    proc = await asyncio.create_subprocess_exec(
        *loom_argv(*args), env=dict(env), cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    return LoomProcess(proc)


async def run_loom(
    args: Sequence[str], env: Mapping[str, str], cwd: Path, timeout: float = 60
) -> tuple[int, str]:
    """Run a short ``loom`` command to completion; returns (exit code, combined output)."""
    proc = await start_loom(args, env, cwd)
    try:
        code = await proc.wait(timeout)
    finally:
        proc.kill()
    return code, proc.output


@pytest.fixture
async def loom_processes() -> AsyncIterator[list[LoomProcess]]:
    """Processes started by a test; killed afterwards if still running (a failed test)."""
    procs: list[LoomProcess] = []
    yield procs
    for proc in procs:
        proc.kill()
        if proc.proc.returncode is None:
            await proc.proc.wait()


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, ""


async def wait_ready(port: int, proc: LoomProcess, timeout: float = 30) -> str:
    deadline = asyncio.get_running_loop().time() + timeout
    body = ""
    while asyncio.get_running_loop().time() < deadline:
        if proc.proc.returncode is not None:
            pytest.fail(f"loom exited with {proc.proc.returncode}:\n{proc.output}")
        status, body = await asyncio.to_thread(http_get, port, "/readyz")
        if status == 200:
            return body
        await asyncio.sleep(0.2)
    pytest.fail(f"not ready after {timeout}s (last /readyz: {body!r}):\n{proc.output}")


async def query_events(client: Client, workflow_id: str, count: int, timeout: float = 30) -> list[str]:
    deadline = asyncio.get_running_loop().time() + timeout
    got: list[str] = []
    while asyncio.get_running_loop().time() < deadline:
        try:
            got = await client.get_workflow_handle(workflow_id).query(RecorderWorkflow.events)
        except Exception:  # not started yet
            got = []
        if len(got) >= count:
            return got
        await asyncio.sleep(0.3)
    return got


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


async def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        await consumer.stop()


async def loom_publish(env: LoomEnv, entity: str, seq: int, *extra: str) -> str:
    """``loom publish`` one test.step event (subprocess); returns its id."""
    event_id = f"{entity}-{seq}"
    code, output = await run_loom(
        ["publish", "--type", "test.step", "--source", "test://cli", "--id", event_id,
         "--data", json.dumps({"entity": entity, "seq": seq}), "--ext", f"partitionkey={entity}",
         "--topic", env.topic, *extra],
        env.env, env.directory,
    )
    assert code == 0, output
    assert f"id={event_id} to {env.topic}[" in output
    return event_id


async def scrape(port: int) -> str:
    status, text = await asyncio.to_thread(http_get, port, "/metrics")
    assert status == 200
    return text


async def wait_metric(port: int, name: str, value: float, timeout: float = 30, **labels: str) -> str:
    deadline = asyncio.get_running_loop().time() + timeout
    text = ""
    while asyncio.get_running_loop().time() < deadline:
        text = await scrape(port)
        if metric_value(text, name, **labels) >= value:
            return text
        await asyncio.sleep(0.2)
    pytest.fail(f"{name}{labels} never reached {value}:\n{text}")


async def stop_loom(loom: LoomProcess) -> int:
    loom.proc.send_signal(signal.SIGTERM)
    return await loom.wait(30)


async def test_loom_run_subprocess_routes_serves_metrics_and_stops_cleanly_on_sigterm(
    loom_env: LoomEnv,
    temporal_client: Client,
    task_queue: str,
    loom_processes: list[LoomProcess],
) -> None:
    routes = write_routes(loom_env.directory, ROUTES_WITH_STEP, wf=WORKFLOW_TYPE, tq=task_queue)
    entity = uuid.uuid4().hex[:8]
    async with Worker(temporal_client, task_queue=task_queue, workflows=[RecorderWorkflow]):
        loom = await start_loom(["run", "--routes", routes], loom_env.env, loom_env.directory)
        loom_processes.append(loom)
        ready = json.loads(await wait_ready(loom_env.http_port, loom))
        assert ready == {"ready": True, "running": True, "kafka": True, "group": True,
                         "temporal": True, "partitions": 2}
        assert (await asyncio.to_thread(http_get, loom_env.http_port, "/livez"))[0] == 200
        assert (await asyncio.to_thread(http_get, loom_env.http_port, "/nope"))[0] == 404
        ids = [await loom_publish(loom_env, entity, 0),
               await loom_publish(loom_env, entity, 1, "--mode", "structured")]
        got = await query_events(temporal_client, f"cli-{entity}", 2)
        assert got == ids, loom.output
        metrics = await wait_metric(loom_env.http_port, "loom_committed_offset", 2,
                                    topic=loom_env.topic)
        assert metric_value(metrics, "loom_events_consumed_total", topic=loom_env.topic) == 2
        assert metric_value(metrics, "loom_events_routed_total", route="step") == 2
        assert metric_value(metrics, "loom_temporal_call_seconds_count") == 2
        assert metric_value(metrics, "loom_events_deadlettered_total") == 0
        # Lag per partition: the partition that got both events catches up. The gauge is set
        # by the sidecar's once-a-second health tick, so a tick taken between the two commits
        # may read 1 for a while; it must reach 0 and be reported for that partition only.
        lag_lines: list[str] = []
        for _ in range(75):
            metrics = await scrape(loom_env.http_port)
            lag_lines = [line for line in metrics.splitlines()
                         if line.startswith("loom_consumer_lag{") and loom_env.topic in line]
            if len(lag_lines) == 1 and lag_lines[0].endswith(" 0.0"):
                break
            await asyncio.sleep(0.2)
        assert len(lag_lines) == 1 and lag_lines[0].endswith(" 0.0"), metrics
        code = await stop_loom(loom)
    assert code == 0, loom.output
    assert "stopped cleanly" in loom.output
    # Both went to one partition (same key): its committed offset is past the last one.
    offsets = await committed_offsets(loom_env.bootstrap, loom_env.group, loom_env.topic, 2)
    assert sorted(o or 0 for o in offsets.values()) == [0, 2], offsets


async def test_temporal_address_alone_points_the_sidecar_at_temporal(
    loom_env: LoomEnv,
    loom_temporal: TemporalServer,
    temporal_client: Client,
    task_queue: str,
    loom_processes: list[LoomProcess],
) -> None:
    """Temporal's own variables, no LOOM_TEMPORAL__*: the sidecar reaches the namespace, routes
    an event, and serves the SDK's client metrics beside its own and the process's."""
    env = {k: v for k, v in loom_env.env.items() if not k.startswith("LOOM_TEMPORAL__")}
    env.update({
        "TEMPORAL_ADDRESS": loom_temporal.address,
        "TEMPORAL_NAMESPACE": loom_temporal.namespace,
        "TEMPORAL_CONFIG_FILE": str(loom_env.directory / "no-temporal.toml"),
    })
    routes = write_routes(loom_env.directory, ROUTES_WITH_STEP, wf=WORKFLOW_TYPE, tq=task_queue)
    entity = uuid.uuid4().hex[:8]
    async with Worker(temporal_client, task_queue=task_queue, workflows=[RecorderWorkflow]):
        loom = await start_loom(["run", "--routes", routes], env, loom_env.directory)
        loom_processes.append(loom)
        await wait_ready(loom_env.http_port, loom)  # ready: the namespace answered
        ids = [await loom_publish(loom_env, entity, 0)]
        assert await query_events(temporal_client, f"cli-{entity}", 1) == ids, loom.output
        # The SDK's own client metrics: DescribeNamespace is the readiness probe's call.
        metrics = await wait_metric(loom_env.http_port, "temporal_request_total", 2,
                                    operation="DescribeNamespace",
                                    namespace=loom_temporal.namespace)
        assert metric_value(metrics, "temporal_request_latency_count",
                            operation="SignalWithStartWorkflowExecution") >= 1
        # The process and platform collectors, as prometheus-client's default registry has.
        assert metric_value(metrics, "process_cpu_seconds_total") > 0
        assert metric_value(metrics, "process_resident_memory_bytes") > 0
        assert metric_value(metrics, "python_info", implementation="CPython") == 1
        assert metric_value(metrics, "loom_partitions_assigned") == 2
        assert await stop_loom(loom) == 0, loom.output
    start = next(line for line in loom.lines if "temporal-loom starting" in line)
    assert f"temporal.address={loom_temporal.address}" in start, start


async def test_dlq_redrive_after_the_route_is_fixed_reaches_the_workflow(
    loom_env: LoomEnv,
    temporal_client: Client,
    task_queue: str,
    loom_processes: list[LoomProcess],
) -> None:
    entity = uuid.uuid4().hex[:8]
    # 1. No route for test.step yet: the event is dead-lettered as unmatched.
    broken = write_routes(loom_env.directory, ROUTES_EMPTY)
    loom = await start_loom(["run", "--routes", broken], loom_env.env, loom_env.directory)
    loom_processes.append(loom)
    await wait_ready(loom_env.http_port, loom)
    event_id = await loom_publish(loom_env, entity, 0)
    await wait_metric(loom_env.http_port, "loom_events_deadlettered_total", 1, reason="unmatched")
    assert await stop_loom(loom) == 0, loom.output

    code, listing = await run_loom(["dlq", "list", "--json"], loom_env.env, loom_env.directory)
    assert code == 0, listing
    rows = [json.loads(line) for line in listing.splitlines() if line.startswith("{")]
    assert len(rows) == 1, listing
    assert rows[0]["dlq_offset"] == "0:0"
    assert rows[0]["reason"] == "unmatched"
    assert rows[0]["topic"] == loom_env.topic
    assert "no route matches type='test.step'" in rows[0]["message"]
    code, table = await run_loom(["dlq", "list"], loom_env.env, loom_env.directory)
    assert code == 0 and "unmatched" in table and "1 records" in table, table

    # 2. The route is fixed; the loom (same group) does not see the old record again...
    fixed = write_routes(loom_env.directory, ROUTES_WITH_STEP, wf=WORKFLOW_TYPE, tq=task_queue)
    async with Worker(temporal_client, task_queue=task_queue, workflows=[RecorderWorkflow]):
        loom = await start_loom(["run", "--routes", fixed], loom_env.env, loom_env.directory)
        loom_processes.append(loom)
        await wait_ready(loom_env.http_port, loom, timeout=60)
        await asyncio.sleep(1)
        assert await query_events(temporal_client, f"cli-{entity}", 1, timeout=0.5) == []
        # ...until it is re-driven.
        code, output = await run_loom(["dlq", "redrive", "--all"], loom_env.env, loom_env.directory)
        assert code == 0, output
        assert f"re-drove 0:0 (unmatched) to {loom_env.topic}" in output
        assert await query_events(temporal_client, f"cli-{entity}", 1) == [event_id], loom.output
        assert await stop_loom(loom) == 0, loom.output


SASL_SECRET = "kafka-pw-7f3a9c1e"
API_KEY_SECRET = "temporal-key-b41d06aa"


async def test_json_logs_one_dead_letter_line_and_secrets_never_printed(
    loom_env: LoomEnv,
    loom_processes: list[LoomProcess],
) -> None:
    env = {
        **loom_env.env,
        "LOOM_LOG_JSON": "true",
        "LOOM_LOG_LEVEL": "DEBUG",
        # Set but unused: PLAINTEXT ignores the SASL password; the dev server ignores the key.
        "LOOM_KAFKA__SASL_PASSWORD": SASL_SECRET,
        "LOOM_TEMPORAL__API_KEY": API_KEY_SECRET,
        "LOOM_TEMPORAL__TLS": "false",
    }
    routes = write_routes(loom_env.directory, ROUTES_EMPTY)
    loom = await start_loom(["run", "--routes", routes], env, loom_env.directory)
    loom_processes.append(loom)
    await wait_ready(loom_env.http_port, loom)
    entity = uuid.uuid4().hex[:8]
    await loom_publish(loom_env, entity, 0, "--data", json.dumps({"entity": entity, "secret_body": "PAYLOAD-BODY"}))
    await wait_metric(loom_env.http_port, "loom_events_deadlettered_total", 1)
    assert await stop_loom(loom) == 0, loom.output
    lines = [json.loads(line) for line in loom.lines if line.strip()]  # every line is JSON
    assert all({"ts", "level", "logger", "msg"} <= line.keys() for line in lines)
    start = [line for line in lines if line["msg"] == "temporal-loom starting"]
    assert len(start) == 1
    assert start[0]["kafka.sasl_password"] == "set"
    assert start[0]["temporal.api_key"] == "set"
    assert start[0]["kafka.topics"] == [loom_env.topic]
    letters = [line for line in lines if line.get("event") == "dead-letter"]
    assert len(letters) == 1, loom.output
    assert letters[0]["level"] == "ERROR"
    assert letters[0]["reason"] == "unmatched"
    assert letters[0]["topic"] == loom_env.topic
    assert "reason=unmatched" in letters[0]["msg"]
    assert SASL_SECRET not in loom.output
    assert API_KEY_SECRET not in loom.output
    info = [line for line in lines if line["level"] not in ("DEBUG",)]
    assert not any("PAYLOAD-BODY" in json.dumps(line) for line in info)


# --- in process: payload codec on both sides, readiness follows Temporal --------------------------


def sidecar_settings(env: LoomEnv, **temporal: Any) -> LoomSettings:
    return LoomSettings.model_validate({
        "kafka": {"bootstrap": env.bootstrap, "topics": [env.topic], "group_id": env.group,
                  "deadletter_topic": env.dlq, "session_timeout_ms": 6000,
                  "heartbeat_interval_ms": 1000},
        "temporal": temporal,
        "dispatch": {"commit_interval_s": 0.2, "drain_timeout_s": 5},
        "http_port": 0,
    })


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_payload_codec_is_used_by_the_sidecar_and_the_worker(
    loom_env: LoomEnv,
    loom_temporal: TemporalServer,
    temporal_client: Client,
    make_producer: Callable[..., Awaitable[Any]],
    task_queue: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    routes = write_routes(loom_env.directory, ROUTES_WITH_STEP, wf=WORKFLOW_TYPE, tq=task_queue)
    monkeypatch.syspath_prepend(str(loom_env.directory))
    settings = sidecar_settings(loom_env, address=loom_temporal.address,
                                namespace=loom_temporal.namespace, codec="reverse_codec:Reverse")
    sidecar = Sidecar(settings, load_router(routes))
    worker_client = await Client.connect(
        loom_temporal.address, namespace=loom_temporal.namespace,
        data_converter=make_data_converter(settings),
    )
    entity = uuid.uuid4().hex[:8]
    async with Worker(worker_client, task_queue=task_queue, workflows=[RecorderWorkflow]):
        task = asyncio.create_task(sidecar.run())
        try:
            await wait_for(lambda: sidecar.health is not None and sidecar.health.ready, 30, "ready")
            await publish(await make_producer(), loom_env.topic, [Event(
                id=f"{entity}-0", source="test://codec", type="test.step",
                data={"entity": entity, "seq": 0})])
            handle = worker_client.get_workflow_handle(f"cli-{entity}")
            got: list[str] = []
            for _ in range(100):
                with contextlib.suppress(Exception):
                    got = await handle.query(RecorderWorkflow.events)
                if got:
                    break
                await asyncio.sleep(0.2)
            assert got == [f"{entity}-0"]
        finally:
            sidecar.stop()
            assert await asyncio.wait_for(task, 30) == 0
    # What Temporal stored is the codec's output, not readable JSON.
    history = await temporal_client.get_workflow_handle(f"cli-{entity}").fetch_history()
    signals = [e.workflow_execution_signaled_event_attributes for e in history.events
               if e.HasField("workflow_execution_signaled_event_attributes")]
    assert len(signals) == 1
    payload = signals[0].input.payloads[0]
    assert payload.metadata["encoding"] == b"binary/reversed"
    assert entity.encode() not in payload.data


async def test_readiness_follows_temporal_availability(
    loom_env: LoomEnv, task_queue: str
) -> None:
    routes = write_routes(loom_env.directory, ROUTES_EMPTY)
    sys.path.insert(0, str(loom_env.directory))
    try:
        router = load_router(routes)
    finally:
        sys.path.remove(str(loom_env.directory))
    async with EmbeddedTemporal() as server:
        sidecar = Sidecar(sidecar_settings(loom_env, address=server.address), router)
        task = asyncio.create_task(sidecar.run())
        try:
            await wait_for(lambda: sidecar.health is not None and sidecar.health.ready, 30, "ready")
            health = sidecar.health
            assert health is not None
            await server.stop()
            await wait_for(lambda: not health.ready, 10, "not ready while Temporal is down")
            assert not health.temporal_connected and health.kafka_connected
            await server.start()
            await wait_for(lambda: health.ready, 20, "ready again")
        finally:
            sidecar.stop()
            assert await asyncio.wait_for(task, 30) == 0


async def test_unreachable_kafka_exits_1_naming_the_bootstrap_setting(
    loom_env: LoomEnv, loom_temporal: TemporalServer, caplog: pytest.LogCaptureFixture
) -> None:
    loom_env.bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    settings = sidecar_settings(loom_env, address=loom_temporal.address)
    sidecar = Sidecar(settings, Router([]))
    with caplog.at_level(logging.ERROR, logger="loom.service"):
        assert await asyncio.wait_for(sidecar.run(), 60) == 1
    assert "LOOM_KAFKA__BOOTSTRAP" in caplog.text
