"""deploy/kubernetes/ agrees with the code: probes, ports, settings, secrets, shutdown, metrics.

No cluster needed: the manifests are parsed, the probe and scrape paths are asked of a real
``HealthServer``, and every LOOM_ variable is read by the settings model.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from health_paths import (
    READY,
    assert_liveness_path,
    assert_metrics_path,
    assert_readiness_path,
    served_paths,
)
from settings_env import assert_real_settings, is_secret, setting_path

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"

Manifest = dict[str, Any]


@pytest.fixture(scope="module")
def manifests() -> dict[tuple[str, str], Manifest]:
    """Every object of the kustomization's resources, by (kind, name)."""
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    objects: dict[tuple[str, str], Manifest] = {}
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((KUBERNETES / resource).read_text()):
            if doc:
                key = (doc["kind"], doc["metadata"]["name"])
                assert key not in objects, f"{key} defined twice"
                objects[key] = doc
    # Nothing in the folder is left out of the kustomization.
    files = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert files == set(kustomization["resources"])
    return objects


def only(manifests: dict[tuple[str, str], Manifest], kind: str) -> Manifest:
    found = [doc for (k, _), doc in manifests.items() if k == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def deployment(manifests: dict[tuple[str, str], Manifest]) -> Manifest:
    return only(manifests, "Deployment")


@pytest.fixture(scope="module")
def pod(deployment: Manifest) -> Manifest:
    spec: Manifest = deployment["spec"]["template"]["spec"]
    return spec


def container(pod: Manifest, name: str) -> Manifest:
    found = [c for c in pod["containers"] if c["name"] == name]
    assert len(found) == 1, name
    result: Manifest = found[0]
    return result


def config_data(manifests: dict[tuple[str, str], Manifest]) -> dict[str, str]:
    data = only(manifests, "ConfigMap")["data"]
    return {str(k): str(v) for k, v in data.items()}


def secret_data(manifests: dict[tuple[str, str], Manifest]) -> dict[str, str]:
    secret = only(manifests, "Secret")
    assert "data" not in secret, "placeholders go in stringData (readable), not base64 data"
    return {str(k): str(v) for k, v in secret["stringData"].items()}


def container_env(
    manifests: dict[tuple[str, str], Manifest], spec: Manifest
) -> dict[str, str]:
    """What the container sees: its envFrom sources in order, then its own env on top."""
    sources = {
        ("configMapRef", only(manifests, "ConfigMap")["metadata"]["name"]): config_data(manifests),
        ("secretRef", only(manifests, "Secret")["metadata"]["name"]): secret_data(manifests),
    }
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        (kind, ref), = source.items()
        assert (kind, ref["name"]) in sources, f"{kind} {ref['name']!r} is not in the manifests"
        env.update(sources[kind, ref["name"]])
    for item in spec.get("env", []):
        env[item["name"]] = str(item["value"])
    return env


def port_number(spec: Manifest, port: int | str) -> int:
    """A probe's port (a number or the name of one of the container's ports)."""
    if isinstance(port, int):
        return port
    named = [p["containerPort"] for p in spec.get("ports", []) if p.get("name") == port]
    assert len(named) == 1, f"no container port named {port!r}"
    return int(named[0])


def test_the_pod_runs_the_loom_beside_the_worker(
    manifests: dict[tuple[str, str], Manifest], pod: Manifest
) -> None:
    assert {c["name"] for c in pod["containers"]} == {"loom", "worker"}
    loom, worker = container(pod, "loom"), container(pod, "worker")
    assert loom["image"] == worker["image"]
    assert loom["args"] == ["run"]
    assert worker["args"][0] == "worker"
    # The worker's entry point exists in the reference application.
    entry = worker["args"][worker["args"].index("--entry") + 1]
    module, _, attr = entry.partition(":")
    assert callable(getattr(importlib.import_module(module), attr))
    # Both read the same ConfigMap and Secret, which exist.
    for spec in (loom, worker):
        refs = {kind: ref["name"] for source in spec["envFrom"] for kind, ref in source.items()}
        assert refs == {
            "configMapRef": only(manifests, "ConfigMap")["metadata"]["name"],
            "secretRef": only(manifests, "Secret")["metadata"]["name"],
        }
        assert spec["resources"]["requests"] and spec["resources"]["limits"]["memory"]


def test_every_loom_variable_is_a_real_setting(
    manifests: dict[tuple[str, str], Manifest], pod: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources = {
        "ConfigMap": config_data(manifests),
        "Secret": secret_data(manifests),
        **{f"env of {c['name']}": {i["name"]: str(i["value"]) for i in c.get("env", [])}
           for c in pod["containers"]},
    }
    for where, env in sources.items():
        assert all(name.startswith("LOOM_") for name in env), where
        for variable in env:
            setting_path(variable)
    # What each container sees validates, and every variable lands where its name says.
    for spec in pod["containers"]:
        assert_real_settings(container_env(manifests, spec), monkeypatch)


def test_secrets_come_from_the_secret_and_nothing_else_does(
    manifests: dict[tuple[str, str], Manifest],
) -> None:
    secrets = secret_data(manifests)
    assert {"LOOM_KAFKA__SASL_PASSWORD", "LOOM_TEMPORAL__API_KEY"} <= set(secrets)
    assert all(is_secret(variable) for variable in secrets), "only secrets in the Secret"
    assert not any(is_secret(variable) for variable in config_data(manifests))


def test_routes_and_topics_are_given_explicitly(
    manifests: dict[tuple[str, str], Manifest], pod: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert {"LOOM_ROUTES", "LOOM_KAFKA__TOPICS"} <= set(config_data(manifests))
    settings = assert_real_settings(container_env(manifests, container(pod, "loom")), monkeypatch)
    assert settings.kafka.topics
    # The routes module is the reference application's, importable from the image's /app.
    from bridge._loading import load_router

    assert settings.routes is not None
    assert load_router(settings.routes).routes


async def test_probes_use_the_paths_and_port_the_loom_serves(
    manifests: dict[tuple[str, str], Manifest], pod: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    loom = container(pod, "loom")
    env = container_env(manifests, loom)
    settings = assert_real_settings(env, monkeypatch)
    assert settings.http_host == "0.0.0.0", "probes come from outside the container"
    assert env["LOOM_HTTP_HOST"] == "0.0.0.0"
    ports = [p["containerPort"] for p in loom["ports"]]
    assert ports == [settings.http_port]
    probes = {kind: loom[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    for kind, probe in probes.items():
        assert port_number(loom, probe["port"]) == settings.http_port, kind
    async with served_paths() as served:
        await assert_liveness_path(served, probes["startupProbe"]["path"])
        await assert_liveness_path(served, probes["livenessProbe"]["path"])
        await assert_readiness_path(served, probes["readinessProbe"]["path"])
        # The same checks fail on a path the loom does not serve.
        assert await served.status("/healthz", READY) == 404
    # The worker has no HTTP server: no probes on it.
    worker = container(pod, "worker")
    assert not {"startupProbe", "livenessProbe", "readinessProbe"} & set(worker)


def test_start_up_may_take_as_long_as_connecting_to_temporal(
    manifests: dict[tuple[str, str], Manifest], pod: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    loom = container(pod, "loom")
    settings = assert_real_settings(container_env(manifests, loom), monkeypatch)
    startup = loom["startupProbe"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert budget > settings.temporal.connect_timeout_s


def test_graceful_termination_outlasts_the_drain(
    manifests: dict[tuple[str, str], Manifest], pod: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = assert_real_settings(container_env(manifests, container(pod, "loom")), monkeypatch)
    assert "LOOM_DISPATCH__DRAIN_TIMEOUT_S" in config_data(manifests)
    assert pod["terminationGracePeriodSeconds"] > settings.dispatch.drain_timeout_s


async def test_prometheus_scrapes_the_metrics_path_and_port(
    manifests: dict[tuple[str, str], Manifest],
    deployment: Manifest,
    pod: Manifest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    loom = container(pod, "loom")
    settings = assert_real_settings(container_env(manifests, loom), monkeypatch)
    assert int(annotations["prometheus.io/port"]) == settings.http_port
    async with served_paths() as served:
        await assert_metrics_path(served, annotations["prometheus.io/path"])
