"""``loom run`` as a real subprocess against the session's Kafka and Temporal servers."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kit import (
    LoomProcess,
    StartLoom,
    committed_offsets,
    eventually,
    loom_settings,
    metric_value,
    settings_as_env,
)
from recorder import (
    RECORDER,
    ROUTES_EMPTY,
    ROUTES_WITH_STEP,
    RecorderWorkflow,
    publish,
    wait_delivered,
    write_routes,
)
from temporalio.client import Client

from bridge._loading import load_router
from bridge.dev import EmbeddedTemporal, free_port
from bridge.events import Event
from bridge.routing import Router
from bridge.settings import LoomSettings
from bridge.sidecar.process import Sidecar
from bridge.temporal.client import make_data_converter
from bridge.testing import TemporalServer, loom_worker

pytestmark = [pytest.mark.kafka, pytest.mark.temporal]

WORKFLOW_TYPE = RECORDER


@dataclass
class LoomEnv:
    """Where a test's loom runs: its directory (route modules), topics, group and HTTP port."""

    directory: Path
    bootstrap: str
    temporal: TemporalServer
    topic: str
    dlq: str
    group: str
    http_port: int

    def settings(self, **overrides: Any) -> LoomSettings:
        """The kit's settings for this test's topics, group, Temporal server and HTTP port."""
        temporal = {"address": self.temporal.address, "namespace": self.temporal.namespace,
                    **overrides.pop("temporal", {})}
        overrides.setdefault("http_port", self.http_port)
        return loom_settings(self.bootstrap, [self.topic], self.dlq, group_id=self.group,
                             temporal=temporal, **overrides)


@pytest.fixture
async def loom_env(
    tmp_path: Path,
    loom_kafka_bootstrap: str,
    loom_temporal: TemporalServer,
    new_topic: Callable[..., Awaitable[str]],
) -> LoomEnv:
    topic = await new_topic(partitions=2)
    dlq = await new_topic()
    return LoomEnv(tmp_path, loom_kafka_bootstrap, loom_temporal, topic, dlq,
                   f"g-{uuid.uuid4().hex[:8]}", free_port())


async def run_loom(env: LoomEnv, *args: str) -> tuple[int | None, str]:
    """Run a short ``loom`` command with the test's settings: (exit code, combined output)."""
    return await LoomProcess.run(*args, cwd=env.directory, settings=env.settings(),
                                 python_path=[env.directory])


async def start_run(start_loom: StartLoom, env: LoomEnv, routes: str, **extra_env: str) -> LoomProcess:
    """``loom run --routes <routes>`` with the test's settings (and ``extra_env`` on top)."""
    return await start_loom("run", "--routes", routes, settings=env.settings(), env=extra_env,
                            python_path=[env.directory])


async def recorded(client: Client, workflow_id: str, ids: Sequence[str]) -> list[str]:
    """What ``workflow_id`` recorded once it holds ``ids`` (or after 30 s: what it held)."""
    return (await wait_delivered(client, {workflow_id: ids}, 30))[workflow_id]


async def loom_publish(env: LoomEnv, entity: str, seq: int, *extra: str) -> str:
    """``loom publish`` one test.step event (subprocess); returns its id."""
    event_id = f"{entity}-{seq}"
    code, output = await run_loom(
        env, "publish", "--type", "test.step", "--source", "test://cli", "--id", event_id,
        "--data", json.dumps({"entity": entity, "seq": seq}), "--ext", f"partitionkey={entity}",
        "--topic", env.topic, *extra,
    )
    assert code == 0, output
    assert f"id={event_id} to {env.topic}[" in output
    return event_id


async def test_loom_run_subprocess_routes_serves_metrics_and_stops_cleanly_on_sigterm(
    loom_env: LoomEnv,
    temporal_client: Client,
    task_queue: str,
    start_loom: StartLoom,
) -> None:
    routes = write_routes(loom_env.directory, ROUTES_WITH_STEP, wf=WORKFLOW_TYPE, tq=task_queue)
    entity = uuid.uuid4().hex[:8]
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[RecorderWorkflow]):
        loom = await start_run(start_loom, loom_env, routes)
        ready = json.loads(await loom.wait_ready(30))
        assert ready == {"ready": True, "running": True, "kafka": True, "group": True,
                         "temporal": True, "partitions": 2}
        assert await loom.probe("/livez") == 200
        assert await loom.probe("/nope") == 404
        ids = [await loom_publish(loom_env, entity, 0),
               await loom_publish(loom_env, entity, 1, "--mode", "structured")]
        got = await recorded(temporal_client, f"cli-{entity}", ids)
        assert got == ids, loom.output
        metrics = await loom.wait_metric("loom_committed_offset", 2, topic=loom_env.topic)
        assert metric_value(metrics, "loom_events_consumed_total", topic=loom_env.topic) == 2
        assert metric_value(metrics, "loom_events_routed_total", route="step") == 2
        assert metric_value(metrics, "loom_temporal_call_seconds_count") == 2
        assert metric_value(metrics, "loom_events_deadlettered_total") == 0

        # Lag per partition: the partition that got both events catches up. The gauge is set
        # by the sidecar's once-a-second health tick, so a tick taken between the two commits
        # may read 1 for a while; it must reach 0 and be reported for that partition only.
        async def lag_lines() -> list[str]:
            return [line for line in (await loom.metrics()).splitlines()
                    if line.startswith("loom_consumer_lag{") and loom_env.topic in line]

        await eventually(
            lag_lines, timeout=15, interval=0.2,
            until=lambda lines: len(lines) == 1 and lines[0].endswith(" 0.0"),
            what="one loom_consumer_lag sample for the topic, at 0",
        )
        code = await loom.stop()
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
    start_loom: StartLoom,
) -> None:
    """Temporal's own variables, no LOOM_TEMPORAL__*: the sidecar reaches the namespace, routes
    an event, and serves the SDK's client metrics beside its own and the process's."""
    env = {k: v for k, v in settings_as_env(loom_env.settings()).items()
           if not k.startswith("LOOM_TEMPORAL__")}
    env.update({
        "TEMPORAL_ADDRESS": loom_temporal.address,
        "TEMPORAL_NAMESPACE": loom_temporal.namespace,
        "TEMPORAL_CONFIG_FILE": str(loom_env.directory / "no-temporal.toml"),
    })
    routes = write_routes(loom_env.directory, ROUTES_WITH_STEP, wf=WORKFLOW_TYPE, tq=task_queue)
    entity = uuid.uuid4().hex[:8]
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[RecorderWorkflow]):
        loom = await start_loom("run", "--routes", routes, env=env,
                                python_path=[loom_env.directory])
        await loom.wait_ready(30)  # ready: the namespace answered
        ids = [await loom_publish(loom_env, entity, 0)]
        assert await recorded(temporal_client, f"cli-{entity}", ids) == ids, loom.output
        # The SDK's own client metrics: DescribeNamespace is the readiness probe's call.
        metrics = await loom.wait_metric("temporal_request_total", 2,
                                         operation="DescribeNamespace",
                                         namespace=loom_temporal.namespace)
        assert metric_value(metrics, "temporal_request_latency_count",
                            operation="SignalWithStartWorkflowExecution") >= 1
        # The process and platform collectors, as prometheus-client's default registry has.
        assert metric_value(metrics, "process_cpu_seconds_total") > 0
        assert metric_value(metrics, "process_resident_memory_bytes") > 0
        assert metric_value(metrics, "python_info", implementation="CPython") == 1
        assert metric_value(metrics, "loom_partitions_assigned") == 2
        assert await loom.stop() == 0, loom.output
    start = next(line for line in loom.lines if "temporal-loom starting" in line)
    assert f"temporal.address={loom_temporal.address}" in start, start


async def test_dlq_redrive_after_the_route_is_fixed_reaches_the_workflow(
    loom_env: LoomEnv,
    temporal_client: Client,
    make_producer: Callable[..., Awaitable[Any]],
    task_queue: str,
    start_loom: StartLoom,
) -> None:
    entity = uuid.uuid4().hex[:8]
    workflow_id = f"cli-{entity}"
    # 1. No route for test.step yet: the event is dead-lettered as unmatched.
    broken = write_routes(loom_env.directory, ROUTES_EMPTY)
    loom = await start_run(start_loom, loom_env, broken)
    await loom.wait_ready(30)
    event_id = await loom_publish(loom_env, entity, 0)
    await loom.wait_metric("loom_events_deadlettered_total", 1, reason="unmatched")
    assert await loom.stop() == 0, loom.output

    code, listing = await run_loom(loom_env, "dlq", "list", "--json")
    assert code == 0, listing
    rows = [json.loads(line) for line in listing.splitlines() if line.startswith("{")]
    assert len(rows) == 1, listing
    assert rows[0]["dlq_offset"] == "0:0"
    assert rows[0]["reason"] == "unmatched"
    assert rows[0]["topic"] == loom_env.topic
    assert "no route matches type='test.step'" in rows[0]["message"]
    code, table = await run_loom(loom_env, "dlq", "list")
    assert code == 0 and "unmatched" in table and "1 records" in table, table

    # 2. The route is fixed; the loom (same group) does not see the old record again...
    fixed = write_routes(loom_env.directory, ROUTES_WITH_STEP, wf=WORKFLOW_TYPE, tq=task_queue)
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[RecorderWorkflow]):
        loom = await start_run(start_loom, loom_env, fixed)
        await loom.wait_ready(60)
        # A later event of the same workflow (same key: same partition, taken after the old
        # record) is the proof that the loom got past the old record's offset: had the old
        # record come back, the workflow would have recorded it before this one.
        later = f"{entity}-1"
        await publish(await make_producer(), loom_env.topic, [Event(
            id=later, source="test://cli", type="test.step", data={"entity": entity, "seq": 1},
            extensions={"partitionkey": entity})])
        assert await recorded(temporal_client, workflow_id, [later]) == [later], loom.output
        # ...until it is re-driven.
        code, output = await run_loom(loom_env, "dlq", "redrive", "--all")
        assert code == 0, output
        assert f"re-drove 0:0 (unmatched) to {loom_env.topic}" in output
        got = await recorded(temporal_client, workflow_id, [later, event_id])
        assert got == [later, event_id], loom.output
        assert await loom.stop() == 0, loom.output


SASL_SECRET = "kafka-pw-7f3a9c1e"
API_KEY_SECRET = "temporal-key-b41d06aa"


async def test_json_logs_one_dead_letter_line_and_secrets_never_printed(
    loom_env: LoomEnv,
    start_loom: StartLoom,
) -> None:
    routes = write_routes(loom_env.directory, ROUTES_EMPTY)
    loom = await start_run(
        start_loom, loom_env, routes,
        LOOM_LOG_JSON="true",
        LOOM_LOG_LEVEL="DEBUG",
        # Set but unused: PLAINTEXT ignores the SASL password; the dev server ignores the key.
        LOOM_KAFKA__SASL_PASSWORD=SASL_SECRET,
        LOOM_TEMPORAL__API_KEY=API_KEY_SECRET,
        LOOM_TEMPORAL__TLS="false",
    )
    await loom.wait_ready(30)
    entity = uuid.uuid4().hex[:8]
    await loom_publish(loom_env, entity, 0, "--data", json.dumps({"entity": entity, "secret_body": "PAYLOAD-BODY"}))
    await loom.wait_metric("loom_events_deadlettered_total", 1)
    assert await loom.stop() == 0, loom.output
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


def in_process_settings(env: LoomEnv, **temporal: Any) -> LoomSettings:
    return env.settings(temporal=temporal, http_port=0, dispatch={"drain_timeout_s": 5})


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
    settings = in_process_settings(loom_env, codec="reverse_codec:Reverse")
    sidecar = Sidecar(settings, load_router(routes))
    worker_client = await Client.connect(
        loom_temporal.address, namespace=loom_temporal.namespace,
        data_converter=make_data_converter(settings),
    )
    entity = uuid.uuid4().hex[:8]
    async with loom_worker(worker_client, task_queue=task_queue, workflows=[RecorderWorkflow]):
        task = asyncio.create_task(sidecar.run())
        try:
            await eventually(lambda: sidecar.health is not None and sidecar.health.ready,
                             timeout=30, what="ready")
            await publish(await make_producer(), loom_env.topic, [Event(
                id=f"{entity}-0", source="test://codec", type="test.step",
                data={"entity": entity, "seq": 0})])
            got = await recorded(worker_client, f"cli-{entity}", [f"{entity}-0"])
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
        sidecar = Sidecar(in_process_settings(loom_env, address=server.address, namespace=server.namespace), router)
        task = asyncio.create_task(sidecar.run())
        try:
            await eventually(lambda: sidecar.health is not None and sidecar.health.ready,
                             timeout=30, what="ready")
            health = sidecar.health
            assert health is not None
            await server.stop()
            await eventually(lambda: not health.ready, timeout=10,
                             what="not ready while Temporal is down")
            assert not health.temporal_connected and health.kafka_connected
            await server.start()
            await eventually(lambda: health.ready, timeout=20, what="ready again")
        finally:
            sidecar.stop()
            assert await asyncio.wait_for(task, 30) == 0


async def test_unreachable_kafka_exits_1_naming_the_bootstrap_setting(
    loom_env: LoomEnv, caplog: pytest.LogCaptureFixture
) -> None:
    nobody = f"127.0.0.1:{free_port()}"  # nothing listens there
    settings = loom_env.settings(http_port=0, dispatch={"drain_timeout_s": 5},
                                 kafka={"bootstrap": nobody})
    sidecar = Sidecar(settings, Router([]))
    with caplog.at_level(logging.ERROR, logger="loom.service"):
        assert await asyncio.wait_for(sidecar.run(), 60) == 1
    assert "LOOM_KAFKA__BOOTSTRAP" in caplog.text
