"""docker-compose.yml, its deploy/ files and the Dockerfile agree with the code (no Docker engine).

The LOOM_ variables are read by the settings model, the paths and ports named for probes and
scrapes are asked of a real ``HealthServer``, the topics come from the reference application.
"""

from __future__ import annotations

import base64
import importlib
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from health_paths import assert_metrics_path, assert_readiness_path, served_paths
from settings_env import assert_real_settings, setting_path

from bridge.settings import LoomSettings
from routes import TOPICS
from services import all_services
from services.shop import ORDERS_TOPIC
from workflows.activities import COMMAND_TOPICS

ROOT = Path(__file__).resolve().parent.parent
LOOM_SERVICES = ("loom", "worker", "participants", "shop")
OBSERVABILITY = ("prometheus", "grafana")


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


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Volume mounts of a service: container path -> source (named volume or host path)."""
    found: dict[str, str] = {}
    for volume in service.get("volumes", []):
        source, target = str(volume).split(":")[:2]
        found[target] = source
    return found


def loom_settings(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> LoomSettings:
    """The settings the loom service runs with (its LOOM_ environment, nothing else)."""
    return assert_real_settings(environment(services["loom"]), monkeypatch)


def test_the_expected_services_exist(services: dict[str, dict[str, Any]]) -> None:
    assert {
        "kafka", "kafka-topics", "postgresql", "temporal-schema", "temporal",
        "temporal-namespace", "temporal-ui", "loom", "worker", *OBSERVABILITY,
    } <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["temporal-ui"]["image"].startswith("temporalio/ui:")
    assert services["loom"]["command"] == ["run"]
    assert services["worker"]["command"][0] == "worker"
    for name in LOOM_SERVICES:
        assert services[name]["image"] == "temporal-loom:latest", name
        assert services[name]["build"] == ".", name


def test_the_worker_entry_point_exists(services: dict[str, dict[str, Any]]) -> None:
    command = services["worker"]["command"]
    module, _, attr = command[command.index("--entry") + 1].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))


def test_every_image_has_a_pinned_current_tag(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag, f"{name}: {image} has no tag"
        if name not in LOOM_SERVICES:  # built here: the others are pulled
            assert tag != "latest" and re.search(r"\d", tag), f"{name}: pin {image}"


def test_temporal_runs_the_server_image_with_its_schema_set_up_first(
    services: dict[str, dict[str, Any]],
) -> None:
    images = {name: svc["image"] for name, svc in services.items()}
    # temporalio/auto-setup is deprecated upstream: the server image, schema by admin-tools.
    assert not any("auto-setup" in image for image in images.values())
    server_tag = images["temporal"].removeprefix("temporalio/server:")
    assert images["temporal"] == f"temporalio/server:{server_tag}"
    for tool in ("temporal-schema", "temporal-namespace"):
        assert images[tool] == f"temporalio/admin-tools:{server_tag}", tool
    temporal = services["temporal"]
    assert temporal["depends_on"]["temporal-schema"]["condition"] == "service_completed_successfully"
    assert services["temporal-schema"]["depends_on"]["postgresql"]["condition"] == "service_healthy"
    # The schema goes where the server looks for it.
    server_env, schema_env = environment(temporal), environment(services["temporal-schema"])
    for variable in ("DB", "DB_PORT", "POSTGRES_USER", "POSTGRES_PWD", "POSTGRES_SEEDS"):
        assert server_env[variable] == schema_env[variable], variable
    assert schema_env["SQL_PASSWORD"] == server_env["POSTGRES_PWD"]
    assert server_env["POSTGRES_SEEDS"] in services
    postgres_env = environment(services["postgresql"])
    assert (postgres_env["POSTGRES_USER"], postgres_env["POSTGRES_PASSWORD"]) == (
        server_env["POSTGRES_USER"], server_env["POSTGRES_PWD"])
    script = "\n".join(services["temporal-schema"]["command"])
    for step in ("create", "setup-schema", "update-schema"):
        assert f"$$sql {step}" in script, step
    assert "temporal_visibility" in script


def test_temporal_is_healthy_before_anything_uses_it(services: dict[str, dict[str, Any]]) -> None:
    assert services["temporal"]["healthcheck"]["test"]
    for name in ("temporal-namespace", "temporal-ui", "loom", "worker"):
        depends = services[name]["depends_on"]
        assert depends["temporal"]["condition"] == "service_healthy", name
    for name in ("loom", "worker"):
        depends = services[name]["depends_on"]
        assert depends["temporal-namespace"]["condition"] == "service_completed_successfully"
    namespace = environment(services["temporal-namespace"])
    for name in ("loom", "worker"):
        assert environment(services[name])["LOOM_TEMPORAL__NAMESPACE"] == namespace["NAMESPACE"]
    assert namespace["TEMPORAL_ADDRESS"] == environment(services["loom"])["LOOM_TEMPORAL__ADDRESS"]


def test_kafka_is_a_single_kraft_node(services: dict[str, dict[str, Any]]) -> None:
    env = environment(services["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in key for key in env)
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@kafka:")
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    # A KRaft cluster id is a base64url UUID (16 bytes).
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16


def test_kafka_data_lives_in_the_volume(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    env = environment(services["kafka"])
    # The broker writes where KAFKA_LOG_DIRS says; that must be the mounted named volume.
    kafka = mounts(services["kafka"])
    assert env["KAFKA_LOG_DIRS"] in kafka, f"KAFKA_LOG_DIRS is not a mount: {kafka}"
    assert kafka[env["KAFKA_LOG_DIRS"]] in compose["volumes"]
    postgres = mounts(services["postgresql"])
    assert postgres.get("/var/lib/postgresql/data") in compose["volumes"]


def test_published_ports(services: dict[str, dict[str, Any]]) -> None:
    assert container_ports(services["temporal"]) == {7233}
    assert container_ports(services["temporal-ui"]) == {8080}
    # Inside the network on 9092, from the host on 9094 (advertised as localhost:9094).
    kafka_env = environment(services["kafka"])
    assert container_ports(services["kafka"]) == {9094}
    assert "EXTERNAL://localhost:9094" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    assert container_ports(services["prometheus"]) == {9090}
    assert container_ports(services["grafana"]) == {3000}


async def test_the_loom_serves_its_port_to_the_outside(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = loom_settings(services, monkeypatch)
    assert container_ports(services["loom"]) == {settings.http_port}
    assert settings.http_host == "0.0.0.0"  # reachable from outside the container
    check = " ".join(services["loom"]["healthcheck"]["test"])
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/\S*?)'", check)
    assert url is not None, check
    assert int(url.group(1)) == settings.http_port
    async with served_paths() as served:
        await assert_readiness_path(served, url.group(2))


def test_every_loom_variable_is_a_real_setting(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    variables = loom_variables(services)
    assert any(variables.values())
    for env in variables.values():
        for variable in env:
            setting_path(variable)
        # The values validate, and each one lands where its name says.
        assert_real_settings(env, monkeypatch)


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
    assert services["kafka-topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in ("loom", "worker"):
        env = environment(services[name])
        host, _, port = env["LOOM_TEMPORAL__ADDRESS"].partition(":")
        assert host == "temporal" and int(port) in container_ports(services["temporal"]), name
        # Real Kafka: the publish and dead-letter producers are idempotent.
        assert env["LOOM_KAFKA__PRODUCER__ENABLE_IDEMPOTENCE"] == "true"
    ui_host, _, ui_port = environment(services["temporal-ui"])["TEMPORAL_ADDRESS"].partition(":")
    assert (ui_host, int(ui_port)) == ("temporal", 7233)


def test_routes_and_topics_are_given_explicitly(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = environment(services["loom"])
    assert {"LOOM_ROUTES", "LOOM_KAFKA__TOPICS"} <= set(env)
    settings = loom_settings(services, monkeypatch)
    from bridge._loading import load_router

    assert settings.routes is not None
    assert load_router(settings.routes).routes


def test_every_topic_the_app_uses_is_created(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    script = " ".join(services["kafka-topics"]["command"])
    loop = re.search(r"for topic in ([^;]+);", script)
    assert loop is not None
    created = set(loop.group(1).split())
    # The topics the routes consume are the loom's LOOM_KAFKA__TOPICS.
    settings = loom_settings(services, monkeypatch)
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
    assert {p.reply_topic for p in participants} <= set(settings.kafka.topics)
    assert not {p.command_topic for p in participants} & set(settings.kafka.topics)
    assert ORDERS_TOPIC in settings.kafka.topics
    # ... and the loom consumes exactly the reference routes' topics.
    assert sorted(settings.kafka.topics) == sorted(TOPICS)


# --- the observability profile: Prometheus scrapes the loom, Grafana shows the dashboard ------


def test_prometheus_and_grafana_run_under_the_observability_profile(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in OBSERVABILITY:
        assert services[name]["profiles"] == ["observability"], name
    for name, service in services.items():
        if name not in OBSERVABILITY:
            assert "observability" not in service.get("profiles", []), name


async def test_prometheus_scrapes_the_loom_metrics(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    prometheus = services["prometheus"]
    config_flag = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    source = mounts(prometheus)[config_flag.removeprefix("--config.file=")]
    config = yaml.safe_load((ROOT / source).read_text())
    jobs = config["scrape_configs"]
    assert len(jobs) == 1
    targets = [t for group in jobs[0]["static_configs"] for t in group["targets"]]
    settings = loom_settings(services, monkeypatch)
    assert targets == [f"loom:{settings.http_port}"]
    async with served_paths() as served:
        await assert_metrics_path(served, jobs[0].get("metrics_path", "/metrics"))


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard(
    services: dict[str, dict[str, Any]],
) -> None:
    grafana = mounts(services["grafana"])
    provisioning = ROOT / grafana["/etc/grafana/provisioning"]
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (datasource,) = datasources["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == f"http://prometheus:{next(iter(container_ports(services['prometheus'])))}"
    providers = yaml.safe_load((provisioning / "dashboards" / "temporal-loom.yml").read_text())
    (provider,) = providers["providers"]
    dashboards = ROOT / grafana[provider["options"]["path"]]
    files = sorted(dashboards.glob("*.json"))
    assert [f.name for f in files] == ["temporal-loom.json"]
    dashboard = json.loads(files[0].read_text())
    # Panels take the data source from the dashboard's variable, which picks Prometheus.
    (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == datasource["type"]
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": f"${{{variable['name']}}}"}


# --- the Dockerfile -----------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in dockerfile_instructions():
        if word == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def test_dockerfile_builds_the_loom_image(monkeypatch: pytest.MonkeyPatch) -> None:
    instructions = dockerfile_instructions()
    assert ("ENTRYPOINT", '["loom"]') in instructions
    copied = {source for word, rest in instructions if word == "COPY" for source in rest.split()[:-1]}
    # The license file is part of the distribution (license-files in pyproject.toml).
    assert {"pyproject.toml", "README.md", "LICENSE", "bridge"} <= copied
    runs = " ".join(rest for word, rest in instructions if word == "RUN")
    assert re.search(r"pip install [\"']?\.\[otlp\]", runs), "the image has the OTLP exporter"
    env = dockerfile_env()
    # The HTTP port is reachable from outside: docker run -p, probes, scrapes.
    settings = assert_real_settings({k: v for k, v in env.items() if k.startswith("LOOM_")},
                                    monkeypatch)
    assert settings.http_host == "0.0.0.0"
    assert ("EXPOSE", str(settings.http_port)) in instructions


def test_the_reference_app_runs_from_the_working_directory() -> None:
    instructions = dockerfile_instructions()
    workdirs = [rest for word, rest in instructions if word == "WORKDIR"]
    assert workdirs == ["/app"]
    # routes/, workflows/ and services/ are not installed packages: they import from /app.
    assert dockerfile_env()["PYTHONPATH"] == "/app"
    for package in ("routes", "workflows", "services"):
        assert ("COPY", f"{package} ./{package}") in instructions, package
