"""README.md stays true: its code runs, its settings exist, its tutorial works end to end."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from temporalio.client import Client

from bridge.dev import create_topic
from bridge.events import Event
from bridge.kafka.binding import decode, encode
from bridge.kafka.record import Record
from bridge.settings import LoomSettings, settings_reference
from bridge.sidecar.loop import Loom, running
from bridge.testing import TemporalServer

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
_FILE_HEADER = re.compile(r"^# (hello/[\w/]+\.py)\n")


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)


def tutorial_files() -> dict[str, str]:
    files = {}
    for block in python_blocks():
        header = _FILE_HEADER.match(block)
        if header:
            files[header.group(1)] = block
    return files


def test_the_two_commands_are_the_ones_ci_and_users_run() -> None:
    assert "scripts/dev " in README and "scripts/test " in README
    assert "exec scripts/test" in (ROOT / ".ci" / "run").read_text()
    assert "loom dev" in (ROOT / "scripts" / "dev").read_text()


def test_every_setting_is_documented() -> None:
    # Regenerate with: python -c "from tests.test_docs import settings_table as t; print(t())"
    assert settings_table() in README

def settings_table() -> str:
    """The README's configuration table, as the settings model says it."""
    rows = ["| variable | type | default |", "| --- | --- | --- |"]
    rows += [
        f"| `{env}` | {kind.replace('|', chr(92) + '|')} | {default} |"
        for env, kind, default in settings_reference()
    ]
    return "\n".join(rows) + "\n"



def test_standalone_code_blocks_run() -> None:
    standalone = [b for b in python_blocks() if not _FILE_HEADER.match(b)]
    assert standalone, "the README's route example is gone"
    for block in standalone:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme_example"})  # noqa: S102


@contextlib.contextmanager
def hello_package(tmp_path: Path) -> Iterator[None]:
    files = tutorial_files()
    assert set(files) == {
        "hello/__init__.py", "hello/models.py", "hello/workflows.py", "hello/routes.py",
        "hello/worker.py",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    sys.path.insert(0, str(tmp_path))
    try:
        yield
    finally:
        sys.path.remove(str(tmp_path))
        for module in [m for m in sys.modules if m == "hello" or m.startswith("hello.")]:
            del sys.modules[module]


@pytest.mark.kafka
@pytest.mark.temporal
async def test_the_tutorial_works_end_to_end(
    tmp_path: Path,
    temporal_client: Client,
    loom_temporal: TemporalServer,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
) -> None:
    # The tutorial's topics have fixed names: create them (once per broker).
    for topic in ("greetings", "greetings.sent"):
        with contextlib.suppress(Exception):  # already there from an earlier run on this broker
            await create_topic(loom_kafka_bootstrap, topic)
    name = f"Ada{uuid.uuid4().hex[:6]}"
    settings = LoomSettings.model_validate({
        "kafka": {
            "bootstrap": loom_kafka_bootstrap, "topics": ["greetings"],
            "deadletter_topic": await new_topic(), "group_id": f"g-{uuid.uuid4().hex[:8]}",
            "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000,
        },
        "temporal": {"address": loom_temporal.address, "namespace": loom_temporal.namespace},
        "dispatch": {"commit_interval_s": 0.2},
        "http_port": 0,
    })
    with hello_package(tmp_path):
        from hello.routes import router  # type: ignore[import-not-found]
        from hello.worker import main as worker_main  # type: ignore[import-not-found]

        worker = asyncio.create_task(worker_main(settings))
        try:
            async with running(Loom(router, temporal_client, settings)):
                producer = await make_producer()
                event = Event(id=f"{name}-1", source="tutorial", type="greeting.requested",
                              data={"name": name})
                key, value, headers = encode(event)
                await producer.send_and_wait("greetings", value=value, key=key, headers=headers)
                handle = temporal_client.get_workflow_handle(f"greeter-{name}")
                result = await asyncio.wait_for(_result(handle), timeout=60)
                assert result == name
                # Published again (same id): refused as a duplicate, no second run.
                await producer.send_and_wait("greetings", value=value, key=key, headers=headers)
                await asyncio.sleep(1.5)
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
    runs = [w async for w in temporal_client.list_workflows(f"WorkflowId = 'greeter-{name}'")]
    assert len(runs) == 1
    sent = await _find_greeting(loom_kafka_bootstrap, name)
    assert sent.type == "greeting.sent"
    assert sent.data == {"text": f"Hello, {name}!"}
    assert sent.subject == f"greeter-{name}"


async def _result(handle: Any) -> Any:
    while True:
        try:
            return await handle.result()
        except Exception:  # not started yet
            await asyncio.sleep(0.2)


async def _find_greeting(bootstrap: str, name: str) -> Event:
    consumer = AIOKafkaConsumer(
        "greetings.sent", bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    try:
        for _ in range(60):
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for rec in records:
                    event = decode(Record.from_aiokafka(rec))
                    if event.subject == f"greeter-{name}":
                        return event
    finally:
        await consumer.stop()
    raise AssertionError("no greeting.sent event for this run")
