"""docker-compose.yml and the Dockerfile agree with the code (no Docker engine needed)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, TypeAdapter

from bridge.settings import LoomSettings
from routes import TOPICS
from services import all_services
from services.shop import ORDERS_TOPIC
from workflows.activities import COMMAND_TOPICS

ROOT = Path(__file__).resolve().parent.parent
LOOM_SERVICES = ("loom", "worker", "participants", "shop")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose["services"]
    return services


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # the "NAME=value" form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def loom_variables(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {
        name: {k: v for k, v in environment(svc).items() if k.startswith("LOOM_")}
        for name, svc in services.items()
    }


def container_ports(service: dict[str, Any]) -> set[int]:
    """Container ports published by a service ("host:container" short syntax)."""
    return {int(str(port).rsplit(":", 1)[-1]) for port in service.get("ports", [])}


def setting_path(variable: str) -> tuple[list[str], Any]:
    """The field path and type of a LOOM_ variable, walked through the LoomSettings model."""
    parts = variable.removeprefix("LOOM_").lower().split("__")
    model: type[BaseModel] = LoomSettings
    annotation: Any = None
    for index, part in enumerate(parts):
        field = model.model_fields.get(part)
        assert field is not None, f"{variable}: {model.__name__} has no field {part!r}"
        annotation = field.annotation
        is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        if index < len(parts) - 1:
            assert is_model, f"{variable}: {part!r} is not a nested model"
            model = annotation
        else:
            assert not is_model, f"{variable}: {part!r} is a group of settings, not one"
    return parts, annotation


def test_the_expected_services_exist(services: dict[str, dict[str, Any]]) -> None:
    assert {"kafka", "kafka-topics", "temporal", "temporal-ui", "loom", "worker"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["temporal"]["image"].startswith("temporalio/")
    assert services["temporal-ui"]["image"].startswith("temporalio/ui:")
    assert services["loom"]["command"] == ["run"]
    assert services["worker"]["command"] == ["worker"]
    for name in LOOM_SERVICES:
        assert services[name]["image"] == "temporal-loom:latest", name
        assert services[name]["build"] == ".", name


def test_kafka_is_a_single_kraft_node(services: dict[str, dict[str, Any]]) -> None:
    env = environment(services["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in key for key in env)
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@kafka:")
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"


def test_published_ports(services: dict[str, dict[str, Any]]) -> None:
    assert container_ports(services["temporal"]) == {7233}
    assert container_ports(services["temporal-ui"]) == {8080}
    # Inside the network on 9092, from the host on 9094 (advertised as localhost:9094).
    kafka_env = environment(services["kafka"])
    assert container_ports(services["kafka"]) == {9094}
    assert "EXTERNAL://localhost:9094" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    loom_env = environment(services["loom"])
    assert container_ports(services["loom"]) == {int(loom_env["LOOM_HTTP_PORT"])}
    assert loom_env["LOOM_HTTP_HOST"] == "0.0.0.0"  # reachable from outside the container
    assert f":{loom_env['LOOM_HTTP_PORT']}/readyz" in " ".join(services["loom"]["healthcheck"]["test"])


def test_every_loom_variable_is_a_real_setting(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    variables = loom_variables(services)
    assert any(variables.values())
    for name, env in variables.items():
        for variable in env:
            setting_path(variable)
        # The values validate, and each one lands where its name says.
        for variable in list(os.environ):
            if variable.startswith("LOOM_"):
                monkeypatch.delenv(variable)
        for variable, value in env.items():
            monkeypatch.setenv(variable, value)
        settings = LoomSettings(_env_file=None)
        for variable, value in env.items():
            parts, annotation = setting_path(variable)
            current: Any = settings
            for part in parts:
                current = getattr(current, part)
            assert current == TypeAdapter(annotation).validate_python(value), (name, variable)


def test_loom_variables_point_at_the_right_services(services: dict[str, dict[str, Any]]) -> None:
    kafka_env = environment(services["kafka"])
    internal = re.search(r"PLAINTEXT://([^,:]+):(\d+)", kafka_env["KAFKA_ADVERTISED_LISTENERS"])
    assert internal is not None
    kafka_address = f"{internal.group(1)}:{internal.group(2)}"
    assert internal.group(1) == "kafka"
    assert f"PLAINTEXT://:{internal.group(2)}" in kafka_env["KAFKA_LISTENERS"]
    for name in LOOM_SERVICES:
        env = environment(services[name])
        assert env["LOOM_KAFKA__BOOTSTRAP"] == kafka_address, name
        depends = services[name]["depends_on"]
        assert depends["kafka-topics"]["condition"] == "service_completed_successfully", name
    for name in ("loom", "worker"):
        env = environment(services[name])
        host, _, port = env["LOOM_TEMPORAL__ADDRESS"].partition(":")
        assert host == "temporal" and int(port) in container_ports(services["temporal"]), name
        assert "temporal" in services[name]["depends_on"], name
        # Real Kafka: the publish and dead-letter producers are idempotent.
        assert env["LOOM_KAFKA__PRODUCER__ENABLE_IDEMPOTENCE"] == "true"
    ui_host, _, ui_port = environment(services["temporal-ui"])["TEMPORAL_ADDRESS"].partition(":")
    assert (ui_host, int(ui_port)) == ("temporal", 7233)
    assert environment(services["temporal"])["POSTGRES_SEEDS"] in services


def test_every_topic_the_app_uses_is_created(services: dict[str, dict[str, Any]]) -> None:
    script = " ".join(services["kafka-topics"]["command"])
    loop = re.search(r"for topic in ([^;]+);", script)
    assert loop is not None
    created = set(loop.group(1).split())
    settings = LoomSettings.model_validate({})
    participants = all_services({"bootstrap_servers": "kafka:9092"})
    used = {
        *TOPICS,  # the reference routes' topics (nothing defaults LOOM_KAFKA__TOPICS)
        settings.kafka.deadletter_topic,
        settings.emit.default_topic,
        *COMMAND_TOPICS.values(),
        ORDERS_TOPIC,
        *(p.command_topic for p in participants),
        *(p.reply_topic for p in participants),
    }
    assert created == used
    # Replies go to topics the sidecar consumes; commands to topics it does not.
    assert {p.reply_topic for p in participants} <= set(TOPICS)
    assert not {p.command_topic for p in participants} & set(TOPICS)


def test_dockerfile_builds_the_loom_image() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["loom"\]', dockerfile, re.MULTILINE)
    for package in ("bridge", "routes", "workflows", "services"):
        assert re.search(rf"^COPY {package} ", dockerfile, re.MULTILINE), package
    assert "EXPOSE 8088" in dockerfile
