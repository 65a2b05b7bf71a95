"""The ``loom`` command in process (typer's runner): settings errors, routes, publish, check."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import textwrap
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bridge.cli.app import app
from bridge.dev import free_port
from bridge.kafka.binding import decode
from bridge.testing import TemporalServer, read_records

ROUTES = '''
from pydantic import BaseModel
from bridge.actions import SignalWithStart
from bridge.routing import Match, Route, Router

class Step(BaseModel):
    entity: str
    seq: int

class Done(BaseModel):
    entity: str

router = Router([
    Route("step", match=Match(type="test.step"), data=Step,
          action=SignalWithStart(workflow="Recorder", task_queue="tq", workflow_id="r-{data.entity}")),
])
emits = {"test.done": Done}
'''

BAD_ROUTE = '''
from bridge.actions import SignalWithStart
from bridge.routing import Route, Router

router = Router([
    Route("broken", match="test.step",
          action=SignalWithStart(workflow="Recorder", task_queue="tq", workflow_id="constant")),
])
'''

SASL_SECRET = "sasl-pw-0c9e51d2"
API_KEY_SECRET = "api-key-6b2f8e47"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A clean working directory on sys.path, without any LOOM_* from the outside."""
    import os

    for name in list(os.environ):
        if name.startswith(("LOOM_", "TEMPORAL_", "OTEL_")) and not name.startswith("LOOM_TEST"):
            monkeypatch.delenv(name)
    # Nothing defaults the topics: the commands that consume need them.
    monkeypatch.setenv("LOOM_KAFKA__TOPICS", "loomcli.in")
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(tmp_path / "no-temporal.toml"))
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    # configure_logging put a handler on the runner's (now closed) stderr: take it off.
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == "loom":
            root.removeHandler(handler)


def module(directory: Path, source: str) -> str:
    name = f"loomcli_{uuid.uuid4().hex[:10]}"
    (directory / f"{name}.py").write_text(textwrap.dedent(source))
    return name


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


# --- settings errors fail fast, naming the setting --------------------------------------------


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"LOOM_KAFKA__BOOTSTRAP": "nonsense"}, "LOOM_KAFKA__BOOTSTRAP"),
        ({"LOOM_KAFKA__BOOTSTRAP": "host:99999"}, "LOOM_KAFKA__BOOTSTRAP"),
        ({"LOOM_TEMPORAL__TLS_CERT": "/nonexistent/client.pem",
          "LOOM_TEMPORAL__TLS_KEY": "/nonexistent/client.key"}, "LOOM_TEMPORAL__TLS_CERT"),
        ({"LOOM_KAFKA__SSL_CAFILE": "/nonexistent/ca.pem"}, "LOOM_KAFKA__SSL_CAFILE"),
        ({"LOOM_HTTP_PORT": "http"}, "LOOM_HTTP_PORT"),
        ({"LOOM_DISPATCH__MAX_IN_FLIGHT": "0"}, "LOOM_DISPATCH__MAX_IN_FLIGHT"),
        ({"LOOM_TEMPORAL__CODEC": "no-colon"}, "LOOM_TEMPORAL__CODEC"),
        ({"LOOM_KAFKA__SECURITY_PROTOCOL": "SASL_SSL"}, "LOOM_KAFKA"),
    ],
)
def test_run_fails_fast_with_exit_2_naming_the_setting(
    project: Path, env: dict[str, str], setting: str
) -> None:
    code, output = invoke("run", env=env)
    assert code == 2, output
    assert setting in output
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("env", "variable", "said"),
    [
        # pydantic-settings' own parsing, before pydantic validates anything
        ({"LOOM_KAFKA__PRODUCER": "acks=all"}, "LOOM_KAFKA__PRODUCER", "not a JSON object"),
        ({"LOOM_KAFKA__TOPICS": "[a,b"}, "LOOM_KAFKA__TOPICS", "not valid JSON"),
        ({"LOOM_EMIT__TOPIC_MAP": "a=b,c"}, "LOOM_EMIT__TOPIC_MAP", "k=v pairs"),
        # the standard variables the loom follows
        ({"TEMPORAL_PROFILE": "nope"}, "TEMPORAL_PROFILE", "not found"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER", "always_on"),
    ],
)
def test_every_settings_error_is_one_line_naming_the_variable(
    project: Path, env: dict[str, str], variable: str, said: str
) -> None:
    code, output = invoke("run", "--routes", module(project, ROUTES), env=env)
    assert code == 2, output
    assert output.count("\n") == 1, output  # one line
    assert variable in output and said in output, output
    assert "Traceback" not in output


def test_run_needs_routes_and_topics_and_says_which_is_missing(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LOOM_KAFKA__TOPICS")
    code, output = invoke("run")
    assert code == 2
    assert "LOOM_ROUTES is not set" in output and "LOOM_KAFKA__TOPICS is not set" in output
    code, output = invoke("run", "--routes", module(project, ROUTES))
    assert code == 2
    assert "LOOM_KAFKA__TOPICS is not set" in output and "LOOM_ROUTES" not in output
    code, output = invoke("run", env={"LOOM_KAFKA__TOPICS": "orders,payments"})
    assert code == 2
    assert "LOOM_ROUTES is not set" in output and "LOOM_KAFKA__TOPICS" not in output


def test_messages_keep_their_brackets(project: Path) -> None:
    # Rich markup would take "[embedded]" for a style and drop it.
    code, output = invoke("run", "--routes", "os:path[embedded]")
    assert code == 2
    assert "'path[embedded]'" in output


def test_version_and_shell_completion() -> None:
    from importlib.metadata import version

    code, output = invoke("--version")
    assert code == 0
    assert output == f"temporal-loom {version('temporal-loom')}\n"
    code, output = invoke("--help")
    assert code == 0
    assert "--install-completion" in output and "--show-completion" in output


def test_unknown_routes_module_names_loom_routes(project: Path) -> None:
    code, output = invoke("run", "--routes", "no_such_module_4711")
    assert code == 2
    assert "LOOM_ROUTES" in output and "no_such_module_4711" in output
    code, output = invoke("run", env={"LOOM_ROUTES": f"{module(project, ROUTES)}:missing"})
    assert code == 2
    assert "LOOM_ROUTES" in output and "no attribute 'missing'" in output


def test_a_bad_route_fails_at_start_naming_the_route(project: Path) -> None:
    code, output = invoke("run", "--routes", module(project, BAD_ROUTE))
    assert code == 2
    assert "LOOM_ROUTES" in output and "'broken'" in output


def test_a_codec_that_is_not_a_codec_is_refused_before_connecting(project: Path) -> None:
    mod = module(project, "NOT_A_CODEC = 42\n")
    code, output = invoke(
        "run", "--routes", module(project, ROUTES), env={"LOOM_TEMPORAL__CODEC": f"{mod}:NOT_A_CODEC"}
    )
    assert code == 2
    assert "LOOM_TEMPORAL__CODEC" in output and "PayloadCodec" in output


def test_flags_override_the_environment(project: Path) -> None:
    code, output = invoke("run", "--bootstrap", "nonsense", env={"LOOM_KAFKA__BOOTSTRAP": "ok:9092"})
    assert code == 2 and "LOOM_KAFKA__BOOTSTRAP" in output
    code, output = invoke("run", "--bootstrap", "ok:9092", "--routes", "no_such_module_4711",
                          env={"LOOM_KAFKA__BOOTSTRAP": "nonsense"})
    assert code == 2 and "LOOM_ROUTES" in output  # the flag fixed the bootstrap


# --- loom check ------------------------------------------------------------------------------------


def test_check_reports_failures_and_never_prints_secrets(project: Path) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    env = {
        "LOOM_KAFKA__BOOTSTRAP": nobody,
        "LOOM_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "LOOM_KAFKA__SASL_MECHANISM": "PLAIN",
        "LOOM_KAFKA__SASL_USERNAME": "loom",
        "LOOM_KAFKA__SASL_PASSWORD": SASL_SECRET,
        "LOOM_TEMPORAL__ADDRESS": nobody,
        "LOOM_TEMPORAL__API_KEY": API_KEY_SECRET,
        "LOOM_ROUTES": module(project, ROUTES),
    }
    code, output = invoke("check", "--timeout", "2", env=env)
    assert code == 1, output
    assert SASL_SECRET not in output and API_KEY_SECRET not in output
    assert "kafka.sasl_password" in output and "temporal.api_key" in output  # shown as "set"
    assert "LOOM_KAFKA__BOOTSTRAP" in output  # the failing connection names its setting
    assert "LOOM_TEMPORAL__ADDRESS" in output
    assert "1 routes" in output  # the routes themselves were fine
    # A settings error in check output never echoes the secret either.
    code, output = invoke("check", env={**env, "LOOM_KAFKA__BOOTSTRAP": "nonsense"})
    assert code == 2
    assert SASL_SECRET not in output and API_KEY_SECRET not in output


@pytest.mark.kafka
@pytest.mark.temporal
async def test_check_passes_against_the_session_servers(
    project: Path,
    loom_kafka_bootstrap: str,
    loom_temporal: TemporalServer,
    new_topic: Callable[..., Awaitable[str]],
) -> None:
    topic, dlq = await new_topic(), await new_topic()
    env = {
        "LOOM_KAFKA__BOOTSTRAP": loom_kafka_bootstrap,
        "LOOM_KAFKA__TOPICS": json.dumps([topic]),
        "LOOM_KAFKA__DEADLETTER_TOPIC": dlq,
        "LOOM_TEMPORAL__ADDRESS": loom_temporal.address,
        "LOOM_TEMPORAL__NAMESPACE": loom_temporal.namespace,
        "LOOM_ROUTES": module(project, ROUTES),
    }
    # The command runs its own event loop: give it a thread.
    code, output = await asyncio.to_thread(invoke, "check", env=env)
    assert code == 0, output
    assert "all checks passed" in output
    assert f"topic {topic}" in output
    assert "topic binding" not in output
    # A route bound to a topic the sidecar does not consume: reported, not a failure.
    bound = ROUTES.replace('match=Match(type="test.step")',
                           'match=Match(type="test.step", topic=["nowhere", "' + topic + '"])')
    code, output = await asyncio.to_thread(
        invoke, "check", env={**env, "LOOM_ROUTES": module(project, bound)})
    assert code == 0, output
    assert "topic binding" in output and "'nowhere'" in output and "warn" in output
    code, output = await asyncio.to_thread(
        invoke, "check", "--namespace", f"missing-{uuid.uuid4().hex[:6]}", "--timeout", "3", env=env
    )
    assert code == 1, output
    assert "LOOM_TEMPORAL__NAMESPACE" in output


# --- loom publish ------------------------------------------------------------------------------


@pytest.mark.kafka
async def test_publish_from_a_file_in_structured_mode_with_flag_overrides(
    project: Path, loom_kafka_bootstrap: str, new_topic: Callable[..., Awaitable[str]]
) -> None:
    topic = await new_topic()
    event_file = project / "event.json"
    event_file.write_text(json.dumps({
        "specversion": "1.0", "id": "from-file", "source": "test://file", "type": "test.step",
        "subject": "s-1", "data": {"entity": "e", "seq": 1}, "tenant": "acme",
    }))
    code, output = await asyncio.to_thread(
        invoke, "publish", "--file", str(event_file), "--id", "overridden", "--mode", "structured",
        "--key", "k-1", "--topic", topic, "--bootstrap", loom_kafka_bootstrap,
    )
    assert code == 0, output
    rec = (await read_records(loom_kafka_bootstrap, topic, count=1, timeout=10))[0]
    assert rec.key == b"k-1"
    assert dict(rec.headers)["content-type"].startswith(b"application/cloudevents+json")
    event = decode(rec)
    assert (event.id, event.source, event.type, event.subject) == (
        "overridden", "test://file", "test.step", "s-1")
    assert event.data == {"entity": "e", "seq": 1}
    assert event.extensions == {"tenant": "acme"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "s", "--data", "{}"], "--type"),
        (["--type", "t", "--source", "s", "--data", "{not json"], "--data"),
        (["--type", "t", "--source", "s", "--ext", "novalue"], "--ext"),
        (["--type", "t", "--source", "s", "--mode", "sideways"], "--mode"),
        (["--file", "/nonexistent/event.json"], "--file"),
    ],
)
def test_publish_refuses_bad_flags_before_connecting(
    project: Path, args: list[str], message: str
) -> None:
    code, output = invoke("publish", "--topic", "t", *args)
    assert code == 2, output
    assert message in output


# --- loom routes and loom worker ---------------------------------------------------------------


def test_routes_prints_the_table_and_writes_asyncapi(project: Path) -> None:
    mod = module(project, ROUTES)
    code, output = invoke("routes", "--routes", mod)
    assert code == 0, output
    for text in ("step", "type=test.step", "Step", "signal-with-start", "Recorder",
                 "r-{data.entity}", "tq"):
        assert text in output
    code, output = invoke("routes", "--routes", mod, "--asyncapi", "api.json")
    assert code == 0, output
    doc = json.loads((project / "api.json").read_text())
    assert doc["asyncapi"] == "3.0.0"
    assert set(doc["channels"]) == {"test_step", "emit_test_done"}
    assert set(doc["components"]["schemas"]) == {"Step", "Done"}
    code, output = invoke("routes", "--routes", mod, "--asyncapi", "api.yaml")
    assert code == 0, output
    assert (project / "api.yaml").read_text().startswith("asyncapi: 3.0.0")


WORKER_ENTRY = '''
import json, os
CALLS = []

def with_settings(settings):
    CALLS.append(("settings", settings.temporal.address))
    return 3

def without_settings():
    CALLS.append(("env", os.environ.get("LOOM_TEMPORAL__ADDRESS")))
'''


def test_worker_runs_the_entry_point_with_the_flags(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOM_TEMPORAL__ADDRESS", "env:7233")  # restored after the test
    mod = module(project, WORKER_ENTRY)
    code, _ = invoke("worker", "--entry", f"{mod}:with_settings", "--temporal-address", "t:1")
    assert code == 3
    code, _ = invoke("worker", "--entry", f"{mod}:without_settings", "--temporal-address", "t:2")
    assert code == 0
    calls: list[Any] = sys.modules[mod].CALLS
    assert calls == [("settings", "t:1"), ("env", "t:2")]
    code, output = invoke("worker", "--entry", f"{mod}:nothing_here")
    assert code == 2 and "--entry" in output


#: The module the short form loads its workflows and activities from.
FLOWS = "flows.cli_flows"


def test_worker_short_form_refuses_what_it_cannot_run(project: Path) -> None:
    mod = FLOWS
    cases = [
        (["worker"], "--workflows"),
        (["worker", "--workflows", f"{mod}:Hello"], "--task-queue is required"),
        (["worker", "--entry", f"{mod}:Hello", "--workflows", f"{mod}:Hello"], "--entry"),
        (["worker", "--workflows", f"{mod}:NOT_A_WORKFLOW", "--task-queue", "q"],
         "not a @workflow.defn class"),
        (["worker", "--workflows", f"{mod}:Hello,{mod}:Missing", "--task-queue", "q"],
         "no attribute 'Missing'"),
        (["worker", "--workflows", f"{mod}:Hello", "--task-queue", "q",
          "--activities", f"{mod}:NOT_A_WORKFLOW"], "expected @activity.defn"),
    ]
    for args, said in cases:
        code, output = invoke(*args)
        assert code == 2, (args, output)
        assert said in output, (args, output)


def test_worker_loads_workflows_and_activities() -> None:
    from bridge.worker.run import load_activities, load_workflows

    mod = FLOWS
    assert [w.__name__ for w in load_workflows(f" {mod}:Hello , {mod}:Hello ")] == ["Hello", "Hello"]
    assert [a.__name__ for a in load_activities(f"{mod}:ACTIVITIES,{mod}:greet")] == ["greet", "greet"]


def test_console_script_lists_every_command() -> None:
    import subprocess

    script = Path(sys.executable).parent / "loom"  # beside the interpreter: PATH may lack it
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60,
                            check=False, env={"COLUMNS": "120", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    for command in ("run", "worker", "check", "routes", "publish", "dlq"):
        assert f"│ {command} " in result.stdout, result.stdout
