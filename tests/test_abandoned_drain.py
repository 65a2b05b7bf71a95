"""A second SIGTERM abandons the drain (by design), and the sidecar still leaves its group.

Without a LeaveGroup, the broker keeps the stopped member until its session times out, and
the next member waits for its partitions that long. The stopped member's session timeout is
set long here (30 s: the embedded broker drops a member that did not leave after about 1.5
times it, 54 s measured), so a next member that gets its partitions within the session
timeout proves the member left. The clean stop is the control.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from kit import FAST_GROUP, StartLoom, eventually, loom_settings

from bridge.dev import free_port
from bridge.events import Event
from bridge.kafka.binding import encode
from bridge.kafka.clients import start_client, stop_client
from bridge.testing import TemporalServer

pytestmark = [pytest.mark.kafka, pytest.mark.temporal]

SESSION_TIMEOUT_MS = 30_000
#: The embedded broker answers the next member's join after half the session timeout once
#: the stopped member left (15 s measured), and after 54 s when it did not.
JOIN_BOUND_S = SESSION_TIMEOUT_MS / 1000

# An update-with-start to a task queue no worker polls never finishes: the drain waits on it.
ROUTES = '''
from bridge.actions import UpdateWithStart
from bridge.routing import Match, Route, Router

router = Router([
    Route(
        "stuck",
        match=Match(type="test.stuck"),
        action=UpdateWithStart(
            workflow="NobodyRunsThis", task_queue="no-worker-{queue}", workflow_id="stuck-{{id}}"
        ),
    )
])
'''


@pytest.mark.parametrize("stop", ["clean", "abandoned"])
async def test_the_next_member_gets_the_partitions_promptly(
    stop: str,
    loom_kafka_bootstrap: str,
    loom_temporal: TemporalServer,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    start_loom: StartLoom,
    tmp_path: Path,
) -> None:
    topic, dlq = await new_topic(partitions=2), await new_topic()
    (tmp_path / "stuckroutes.py").write_text(ROUTES.format(queue=uuid.uuid4().hex[:8]))
    group = f"g-{uuid.uuid4().hex[:8]}"
    settings = loom_settings(
        loom_kafka_bootstrap, [topic], dlq, routes="stuckroutes:router", group_id=group,
        http_port=free_port(),
        kafka={"session_timeout_ms": SESSION_TIMEOUT_MS, "heartbeat_interval_ms": 1000},
        temporal={"address": loom_temporal.address, "namespace": loom_temporal.namespace},
        dispatch={"drain_timeout_s": 300},
    )
    sidecar = await start_loom("run", settings=settings, python_path=[tmp_path], name="first")
    await sidecar.wait_ready(90)
    if stop == "clean":  # the control: nothing in flight, one SIGTERM
        assert await sidecar.stop(60) == 0, sidecar.tail()
    else:
        producer = await make_producer()
        event = Event(id="e1", source="test", type="test.stuck", data={"n": 1})
        key, value, headers = encode(event)
        await producer.send_and_wait(topic, value, key=key, headers=headers)
        await sidecar.wait_metric("loom_in_flight", 1, timeout=90)
        sidecar.send(signal.SIGTERM)
        await eventually(lambda: "stopping (drain" in sidecar.output, timeout=30,
                         what="the first SIGTERM started the drain")
        sidecar.check_running()  # the drain waits on the call that never finishes
        sidecar.send(signal.SIGTERM)
        assert await sidecar.wait(60) == 130, sidecar.tail()

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=loom_kafka_bootstrap, group_id=group,
        enable_auto_commit=False, **FAST_GROUP,
    )
    began = time.monotonic()
    await start_client(consumer, timeout=90)  # aiokafka's start() returns once assigned
    try:
        joined = time.monotonic() - began
        assert len(consumer.assignment()) == 2
    finally:
        await stop_client(consumer)
    assert joined < JOIN_BOUND_S, f"joined after {joined:.1f}s\n{sidecar.tail()}"
