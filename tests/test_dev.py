"""The test harness itself: embedded servers and the pytest plugin's fixtures, on real servers."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from flows.dev_flows import CollectWorkflow
from kit import eventually
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.contrib.pydantic import pydantic_data_converter

from bridge import dev
from bridge.dev import EmbeddedKafka, EmbeddedTemporal, port_is_free, temporal_binary
from bridge.dev import free_port as _free_port
from bridge.exceptions import EmbeddedServerError
from bridge.testing import loom_worker


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): read its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:  # reaped meanwhile
        return False


@pytest.mark.kafka
async def test_produce_consume_with_group_and_manual_commit(
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
) -> None:
    topic = await new_topic(partitions=2)
    producer = await make_producer()
    for i in range(20):
        await producer.send_and_wait(topic, f"v{i}".encode(), key=f"k{i % 5}".encode())
    group = f"g-{uuid.uuid4().hex[:8]}"

    async def consume_and_commit(expected: int) -> tuple[list[bytes], int]:
        """Values taken by a fresh member of ``group``, and the group's committed total after."""
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=loom_kafka_bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            got: list[bytes] = []
            for _ in range(60):
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    got.extend(r.value for r in records)
                if len(got) >= expected:
                    break
            await consumer.commit()
            committed = [await consumer.committed(TopicPartition(topic, p)) for p in (0, 1)]
            return got, sum(v or 0 for v in committed)
        finally:
            await consumer.stop()

    first, committed = await consume_and_commit(20)
    assert sorted(first) == sorted(f"v{i}".encode() for i in range(20))
    assert committed == 20
    # After the manual commit, the same group resumes at the end: 2 new records only.
    await producer.send_and_wait(topic, b"late-1", partition=0)
    await producer.send_and_wait(topic, b"late-2", partition=1)
    late, committed = await consume_and_commit(2)
    assert sorted(late) == [b"late-1", b"late-2"]
    assert committed == 22


@pytest.mark.temporal
async def test_signal_with_start_round_trip(temporal_client: Client, task_queue: str) -> None:
    wf_id = f"collect-{uuid.uuid4().hex[:8]}"
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[CollectWorkflow]):
        handle = await temporal_client.start_workflow(
            CollectWorkflow.run, id=wf_id, task_queue=task_queue,
            start_signal="add", start_signal_args=["a"],
        )
        await temporal_client.start_workflow(
            CollectWorkflow.run, id=wf_id, task_queue=task_queue,
            start_signal="add", start_signal_args=["b"],
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        await handle.signal(CollectWorkflow.add, "stop")
        result = await handle.result()
    assert result == ["a", "b", "stop"]


@pytest.mark.kafka
@pytest.mark.temporal
async def test_servers_stop_and_free_their_ports(tmp_path: Path) -> None:
    db = tmp_path / "temporal.db"
    async with EmbeddedTemporal(db_file=db) as temporal, EmbeddedKafka() as kafka:
        pids = [temporal.pid, kafka.pid]
        ports = [temporal.port, kafka.port]
        assert all(pid is not None and _pid_alive(pid) for pid in pids)
        assert not any(port_is_free(p) for p in ports)
        client = await Client.connect(temporal.address, data_converter=pydantic_data_converter)
        task_queue = f"tq-{uuid.uuid4().hex[:8]}"
        async with loom_worker(client, task_queue=task_queue, workflows=[CollectWorkflow]):
            handle = await client.start_workflow(
                CollectWorkflow.run, id="survives-restart", task_queue=task_queue,
                start_signal="add", start_signal_args=["before"],
            )
            assert await handle.query(CollectWorkflow.seen) == ["before"]
        # Restart on the same port and file: the running workflow is still there.
        await temporal.restart()
        assert temporal.port == ports[0]
        client = await Client.connect(temporal.address, data_converter=pydantic_data_converter)
        async with loom_worker(client, task_queue=task_queue, workflows=[CollectWorkflow]):
            handle = client.get_workflow_handle("survives-restart")
            await handle.signal(CollectWorkflow.add, "stop")
            assert await handle.result() == ["before", "stop"]
        pids.append(temporal.pid)
    assert not any(pid is not None and _pid_alive(pid) for pid in pids)
    assert all(port_is_free(p) for p in ports)


async def test_body_raising_still_stops_the_server() -> None:
    kafka = EmbeddedKafka()
    with pytest.raises(RuntimeError, match="boom"):
        async with kafka:
            pid = kafka.pid
            raise RuntimeError("boom")
    assert pid is not None
    assert not _pid_alive(pid)
    assert port_is_free(kafka.port)


@pytest.mark.parametrize("server", [EmbeddedKafka, EmbeddedTemporal])
async def test_a_port_taken_before_the_server_binds_it_is_chosen_again(
    monkeypatch: pytest.MonkeyPatch, server: type[EmbeddedKafka | EmbeddedTemporal]
) -> None:
    # Another process takes the free port between its choice and the server's bind (parallel
    # test workers, loom dev beside other servers): the start is tried again on a new port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as thief:
        thief.bind(("127.0.0.1", 0))  # bound, not listening: a probe is refused at once
        taken = int(thief.getsockname()[1])
        chosen = iter([taken])
        monkeypatch.setattr(dev, "free_port", lambda: next(chosen, None) or _free_port())
        async with server() as started:
            assert started.port != taken
            assert started.running
        # A port the caller gave is never changed: the bind error is the caller's to see.
        with pytest.raises(EmbeddedServerError, match=r"(?i)address (already )?in use"):
            await server(port=taken).start()


async def test_missing_binary_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LOOM_TEMPORAL_BIN", str(tmp_path / "nope"))
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EmbeddedServerError, match=r"temporal-loom\[embedded\]"):
        temporal_binary()


async def test_failed_start_reports_the_log_tail() -> None:
    # An invalid dynamic config value makes the real server exit at start.
    server = EmbeddedTemporal(dynamic_config={"no.such.key": "{{{"}, startup_timeout=20)
    with pytest.raises(EmbeddedServerError, match="last lines of its log") as info:
        await server.start()
    assert "temporal" in str(info.value)
    assert port_is_free(server.port)


@pytest.mark.kafka
async def test_servers_die_with_a_killed_parent(tmp_path: Path) -> None:
    # A test runner killed with SIGKILL cannot stop its servers: they must not outlive it.
    script = (
        "import asyncio, sys\n"
        "from bridge.dev import EmbeddedKafka\n"
        "async def main():\n"
        "    kafka = EmbeddedKafka()\n"
        "    await kafka.start()\n"
        "    print(kafka.pid, flush=True)\n"
        "    await asyncio.sleep(60)\n"  # the parent lives until the test kills it
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
    broker = int(line)
    assert _pid_alive(broker)
    proc.kill()
    await proc.wait()
    await eventually(lambda: not _pid_alive(broker), timeout=10, interval=0.1,
                     what=f"the broker (pid {broker}) gone with its parent")
