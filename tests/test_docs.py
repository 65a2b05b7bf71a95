"""The docs stay true: README.md and every page under docs/ run their Python code blocks, the
settings exist, the tutorial works end to end (tests/test_docs_site.py builds the site)."""

from __future__ import annotations

import contextlib
import re
import shlex
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from kit import LoomProcess, StartLoom, eventually, workflow_started
from temporalio.client import Client
from temporalio.service import RPCError

from bridge.dev import create_topic, free_port
from bridge.kafka.binding import decode
from bridge.testing import TemporalServer, read_records

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
#: Every Markdown page whose code blocks run: the README and the documentation site's sources.
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
TUTORIAL = ROOT / "docs" / "getting-started" / "tutorial.md"
_FILE_HEADER = re.compile(r"^# (hello/[\w/]+\.py)\n")


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def tutorial_files() -> dict[str, str]:
    files = {}
    for block in python_blocks(TUTORIAL.read_text()):
        header = _FILE_HEADER.match(block)
        if header:
            files[header.group(1)] = block
    return files


def test_the_two_commands_are_the_ones_ci_and_users_run() -> None:
    assert "scripts/dev " in README and "scripts/test " in README
    assert "exec scripts/test" in (ROOT / ".ci" / "run").read_text()
    assert "loom dev" in (ROOT / "scripts" / "dev").read_text()


def test_the_readme_is_the_front_door() -> None:
    """At most 200 lines; everything else lives in the documentation site, which it links."""
    assert len(README.splitlines()) <= 200
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README):
        if not target.startswith(("http://", "https://")):
            assert (ROOT / target).exists(), f"README links to {target}, which is not there"
    assert "docs/getting-started/tutorial.md" in README


def test_every_page_is_collected() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    assert {"README.md", "docs/architecture.md", "docs/getting-started/tutorial.md",
            "docs/guides/routes.md"} <= names


def test_the_tutorial_files_are_only_in_the_tutorial() -> None:
    # A hello/ block elsewhere would be skipped by the page test below and built by no one.
    for page in PAGES:
        if page != TUTORIAL:
            assert not any(_FILE_HEADER.match(b) for b in python_blocks(page.read_text())), page


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_standalone_code_blocks_run(page: Path) -> None:
    """Each Python block of the page runs on its own (the tutorial's files run end to end below)."""
    name = page.relative_to(ROOT).as_posix()
    for number, block in enumerate(python_blocks(page.read_text()), start=1):
        if _FILE_HEADER.match(block):
            continue
        namespace = {"__name__": f"docs_example_{page.stem.replace('-', '_')}_{number}"}
        exec(compile(block, f"{name} (python block {number})", "exec"), namespace)  # noqa: S102


def test_the_route_example_is_there() -> None:
    routes = (ROOT / "docs" / "guides" / "routes.md").read_text()
    assert any("Router(" in b for b in python_blocks(routes)), "the routes guide's example is gone"


def tutorial_commands() -> tuple[dict[str, str], list[str]]:
    """The tutorial's shell block: its exported variables and its ``loom`` commands."""
    block = next(b for b in re.findall(r"```bash\n(.*?)```", TUTORIAL.read_text(), flags=re.DOTALL)
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


@pytest.mark.kafka
@pytest.mark.temporal
async def test_the_tutorial_works_end_to_end(
    tmp_path: Path,
    temporal_client: Client,
    loom_temporal: TemporalServer,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    start_loom: StartLoom,
) -> None:
    """The tutorial's commands as a user types them: `loom run`, `loom worker --workflows ...`
    and `loom publish`, subprocesses configured by the tutorial's own exports."""
    # The tutorial's topics have fixed names: create them (once per broker).
    for topic in ("greetings", "greetings.sent"):
        with contextlib.suppress(Exception):  # already there from an earlier run on this broker
            await create_topic(loom_kafka_bootstrap, topic)
    write_hello_package(tmp_path)
    exports, commands = tutorial_commands()
    assert [c.split()[:2] for c in commands] == [["loom", "run"], ["loom", "worker"], ["loom", "publish"]]
    assert "--entry" not in commands[1]
    name = f"Ada{uuid.uuid4().hex[:6]}"
    workflow_id = f"greeter-{name}"
    env = {
        **exports,
        # The tutorial's servers are this session's; the rest is the tutorial's own settings.
        "LOOM_KAFKA__BOOTSTRAP": loom_kafka_bootstrap,
        "LOOM_TEMPORAL__ADDRESS": loom_temporal.address,
        "LOOM_TEMPORAL__NAMESPACE": loom_temporal.namespace,
        "LOOM_KAFKA__GROUP_ID": f"g-{uuid.uuid4().hex[:8]}",
        "LOOM_KAFKA__DEADLETTER_TOPIC": await new_topic(),
        "LOOM_KAFKA__SESSION_TIMEOUT_MS": "6000", "LOOM_KAFKA__HEARTBEAT_INTERVAL_MS": "1000",
        "LOOM_DISPATCH__COMMIT_INTERVAL_S": "0.2", "LOOM_HTTP_PORT": str(free_port()),
    }

    async def loom(command: str) -> LoomProcess:
        argv = shlex.split(command.replace("--id ada-", f"--id {name}-").replace('"Ada"', f'"{name}"'))
        return await start_loom(*argv[1:], env=env, name=argv[1])

    sidecar, worker = await loom(commands[0]), await loom(commands[1])
    await sidecar.wait_ready(60)
    worker.check_running()
    publish = await loom(commands[2])
    assert await publish.wait(60) == 0, publish.output
    # The greeter, an entity: it lives on; its state says what it handled.
    first_run = (await workflow_started(temporal_client, workflow_id, 60)).run_id
    handle = temporal_client.get_workflow_handle(workflow_id)
    assert await _state_when(handle, handled=1) == {"count": 1}
    # Published again (same id), then a new greeting behind it on the partition: once the new
    # one is handled, the repeat was routed before it, and dropped.
    for command in (commands[2], commands[2].replace("ada-1", "ada-2")):
        publish = await loom(command)
        assert await publish.wait(60) == 0, publish.output
    assert await _state_when(handle, handled=2) == {"count": 2}
    codes = [await proc.stop(60) for proc in (sidecar, worker)]  # graceful stop on SIGTERM
    assert codes == [0, 0], [sidecar.output, worker.output]
    latest = await temporal_client.get_workflow_handle(workflow_id).describe()
    assert latest.run_id == first_run  # one run: the same greeter took both greetings
    # Visibility is eventually consistent: wait until it lists the run, then count the runs.
    runs = await eventually(lambda: _runs(temporal_client, workflow_id), timeout=30,
                            what=f"{workflow_id} listed")
    assert len(runs) == 1
    sent = [e for e in map(decode, await read_records(loom_kafka_bootstrap, "greetings.sent"))
            if e.subject == workflow_id]
    assert sent, "no greeting.sent event for this run"  # emitted before the run completed
    assert sent[0].type == "greeting.sent"
    assert sent[0].data == {"text": f"Hello, {name}!"}
    assert sent[0].subject == workflow_id


async def _runs(client: Client, workflow_id: str) -> list[Any]:
    return [w async for w in client.list_workflows(f"WorkflowId = '{workflow_id}'")]


async def _state_when(handle: Any, *, handled: int, timeout: float = 60) -> Any:
    """The entity's state (``loom_state``) once ``loom_stats`` says it handled ``handled``."""

    async def probe() -> Any:
        try:
            stats = await handle.query("loom_stats")
        except RPCError as exc:  # its first workflow task not done yet
            raise AssertionError(f"no answer yet: {exc}") from None
        assert stats["handled"] >= handled, stats
        return await handle.query("loom_state")

    return await eventually(probe, timeout=timeout, what=f"the greeter handled {handled}")
