"""README.md stays true: its code runs, its settings exist, its tutorial works end to end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from temporalio.client import Client

from bridge.dev import create_topic, free_port
from bridge.events import Event
from bridge.kafka.binding import decode
from bridge.kafka.record import Record
from bridge.settings import settings_reference
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


def settings_table() -> str:
    """The README's configuration table, as the settings model says it."""
    rows = ["| variable | type | default |", "| --- | --- | --- |"]
    rows += [
        f"| `{env}` | {kind.replace('|', chr(92) + '|')} | {default} |"
        for env, kind, default in settings_reference()
    ]
    return "\n".join(rows) + "\n"


def test_every_setting_is_documented() -> None:
    # Regenerate with: python -c "from tests.test_docs import settings_table as t; print(t())"
    assert settings_table() in README


def test_standalone_code_blocks_run() -> None:
    standalone = [b for b in python_blocks() if not _FILE_HEADER.match(b)]
    assert standalone, "the README's route example is gone"
    for block in standalone:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme_example"})  # noqa: S102


def tutorial_commands() -> tuple[dict[str, str], list[str]]:
    """The tutorial's shell block: its exported variables and its ``loom`` commands."""
    block = next(b for b in re.findall(r"```bash\n(.*?)```", README, flags=re.DOTALL)
                 if "loom worker" in b and "export" in b)
    env: dict[str, str] = {}
    commands: list[str] = []
    for line in block.splitlines():
        line = line.split("  #")[0].strip()
        if line.startswith("export "):
            for word in shlex.split(line.removeprefix("export ")):
                name, _, value = word.partition("=")
                env[name] = value
        elif line.startswith("loom "):
            commands.append(line)
    return env, commands


def write_hello_package(directory: Path) -> None:
    files = tutorial_files()
    assert set(files) == {
        "hello/__init__.py", "hello/models.py", "hello/workflows.py", "hello/routes.py",
    }  # and no hand-written worker
    for name, text in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, ""


async def eventually(
    probe: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], timeout: float, what: str,
    *procs: asyncio.subprocess.Process,
) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if done(value):
            return value
        exited = [p.returncode for p in procs if p.returncode is not None]
        if exited or asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: last {value!r}, exited {exited}")
        await asyncio.sleep(0.2)


def routed_total(metrics: str) -> float:
    return sum(
        float(line.rpartition(" ")[2]) for line in metrics.splitlines()
        if line.startswith("loom_events_routed_total{")
    )


@pytest.mark.kafka
@pytest.mark.temporal
async def test_the_tutorial_works_end_to_end(
    tmp_path: Path,
    temporal_client: Client,
    loom_temporal: TemporalServer,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
) -> None:
    """The README's commands as a user types them: `loom run`, `loom worker --workflows ...`
    and `loom publish`, subprocesses configured by the README's own exports."""
    # The tutorial's topics have fixed names: create them (once per broker).
    for topic in ("greetings", "greetings.sent"):
        with contextlib.suppress(Exception):  # already there from an earlier run on this broker
            await create_topic(loom_kafka_bootstrap, topic)
    write_hello_package(tmp_path)
    exports, commands = tutorial_commands()
    assert [c.split()[:2] for c in commands] == [["loom", "run"], ["loom", "worker"], ["loom", "publish"]]
    assert "--entry" not in commands[1]
    name = f"Ada{uuid.uuid4().hex[:6]}"
    http_port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LOOM_", "TEMPORAL_", "OTEL_"))}
    env = {
        **base, **exports,
        # The README's servers are this session's; the rest is the README's own settings.
        "LOOM_KAFKA__BOOTSTRAP": loom_kafka_bootstrap,
        "LOOM_TEMPORAL__ADDRESS": loom_temporal.address,
        "LOOM_TEMPORAL__NAMESPACE": loom_temporal.namespace,
        "LOOM_KAFKA__GROUP_ID": f"g-{uuid.uuid4().hex[:8]}",
        "LOOM_KAFKA__DEADLETTER_TOPIC": await new_topic(),
        "LOOM_KAFKA__SESSION_TIMEOUT_MS": "6000", "LOOM_KAFKA__HEARTBEAT_INTERVAL_MS": "1000",
        "LOOM_DISPATCH__COMMIT_INTERVAL_S": "0.2", "LOOM_HTTP_PORT": str(http_port),
        "TEMPORAL_CONFIG_FILE": str(tmp_path / "no-temporal.toml"),
    }

    async def loom(command: str) -> asyncio.subprocess.Process:
        argv = shlex.split(command.replace("ada-1", f"{name}-1").replace('"Ada"', f'"{name}"'))
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge.cli", *argv[1:], env=env, cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )

    sidecar, worker = await loom(commands[0]), await loom(commands[1])
    try:
        await eventually(lambda: asyncio.to_thread(http_get, http_port, "/readyz"),
                         lambda r: r[0] == 200, 60, "the sidecar ready", sidecar, worker)
        publish = await loom(commands[2])
        assert await asyncio.wait_for(publish.wait(), 60) == 0
        handle = temporal_client.get_workflow_handle(f"greeter-{name}")
        assert await asyncio.wait_for(_result(handle), timeout=60) == name
        # Published again (same id): refused as a duplicate, no second run. Wait until the
        # sidecar has routed it: the same wait would have let a second run start.
        publish = await loom(commands[2])
        assert await asyncio.wait_for(publish.wait(), 60) == 0
        await eventually(lambda: asyncio.to_thread(http_get, http_port, "/metrics"),
                         lambda r: routed_total(r[1]) >= 2, 60, "both events routed", sidecar)
        for proc in (sidecar, worker):  # graceful stop on SIGTERM
            proc.send_signal(signal.SIGTERM)
        codes = [await asyncio.wait_for(p.wait(), 60) for p in (sidecar, worker)]
        output = [(await p.stdout.read()).decode() for p in (sidecar, worker) if p.stdout]
        assert codes == [0, 0], output
    finally:
        for proc in (sidecar, worker):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
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
