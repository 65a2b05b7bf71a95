"""Settings: environment, ``.env``, overrides, errors naming the setting, secrets, loaders."""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import TLSConfig

from bridge._loading import load_codec, load_router
from bridge.actions import UnmatchedPolicy
from bridge.exceptions import SettingsError
from bridge.routing import Router
from bridge.settings import LoomSettings, load_settings
from bridge.sidecar.process import Sidecar, settings_summary
from bridge.temporal.client import make_data_converter, temporal_tls

SECRET = "pw-91c3e0aa"
KEY = "key-55df19b2"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No LOOM_* from outside, a working directory without .env, tmp_path importable."""
    import os

    for name in list(os.environ):
        if name.startswith("LOOM_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return monkeypatch


def test_environment_nested_and_lists(env: pytest.MonkeyPatch) -> None:
    env.setenv("LOOM_KAFKA__BOOTSTRAP", "k1:9092,k2:9092")
    env.setenv("LOOM_KAFKA__TOPICS", json.dumps(["a", "b"]))
    env.setenv("LOOM_TEMPORAL__NAMESPACE", "prod")
    env.setenv("LOOM_DISPATCH__MAX_IN_FLIGHT", "64")
    env.setenv("LOOM_UNMATCHED", "skip")
    s = load_settings()
    assert s.kafka.bootstrap == "k1:9092,k2:9092"
    assert s.kafka.topics == ["a", "b"]
    assert s.temporal.namespace == "prod"
    assert s.dispatch.max_in_flight == 64
    assert s.unmatched is UnmatchedPolicy.SKIP


def test_max_buffered_defaults_to_four_times_max_in_flight(env: pytest.MonkeyPatch) -> None:
    env.setenv("LOOM_DISPATCH__MAX_IN_FLIGHT", "64")
    assert load_settings().dispatch.buffered_bound == 256
    env.setenv("LOOM_DISPATCH__MAX_BUFFERED", "0")
    assert load_settings().dispatch.buffered_bound == 256
    env.setenv("LOOM_DISPATCH__MAX_BUFFERED", "64")  # the single bound of earlier versions
    assert load_settings().dispatch.buffered_bound == 64
    env.setenv("LOOM_DISPATCH__MAX_BUFFERED", "63")
    with pytest.raises(SettingsError, match=r"LOOM_DISPATCH__MAX_BUFFERED: .*max_in_flight"):
        load_settings()


def test_dotenv_file_then_environment_then_overrides(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "LOOM_KAFKA__GROUP_ID=from-dotenv\nLOOM_KAFKA__BOOTSTRAP=dotenv:1\nLOOM_HTTP_PORT=9000\n"
    )
    env.setenv("LOOM_KAFKA__BOOTSTRAP", "env:2")
    s = load_settings(kafka={"deadletter_topic": "flag-dlq"}, http_port=9100)
    assert s.kafka.group_id == "from-dotenv"
    assert s.kafka.bootstrap == "env:2"  # environment beats .env
    assert s.kafka.deadletter_topic == "flag-dlq"  # an override merges into the nested model
    assert s.http_port == 9100


def test_errors_name_every_setting_at_fault(env: pytest.MonkeyPatch) -> None:
    env.setenv("LOOM_KAFKA__BOOTSTRAP", "nonsense")
    env.setenv("LOOM_TEMPORAL__PAYLOAD_LIMIT_BYTES", "-1")
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "LOOM_KAFKA__BOOTSTRAP" in message and "host:port" in message
    assert "LOOM_TEMPORAL__PAYLOAD_LIMIT_BYTES" in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LOOM_TEMPORAL__TLS_CA", "/nonexistent/ca.pem"),
        ("LOOM_KAFKA__SSL_CERTFILE", "/nonexistent/cert.pem"),
        ("LOOM_TEMPORAL__CODEC", "module-without-attr"),
        ("LOOM_KAFKA__SECURITY_PROTOCOL", "CARRIER_PIGEON"),
    ],
)
def test_bad_values_name_their_variable(env: pytest.MonkeyPatch, name: str, value: str) -> None:
    env.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings()


def test_secrets_stay_hidden_in_repr_dump_and_summary(env: pytest.MonkeyPatch) -> None:
    env.setenv("LOOM_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    env.setenv("LOOM_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    env.setenv("LOOM_KAFKA__SASL_USERNAME", "loom")
    env.setenv("LOOM_KAFKA__SASL_PASSWORD", SECRET)
    env.setenv("LOOM_TEMPORAL__API_KEY", KEY)
    s = load_settings()
    assert s.kafka.client_options()["sasl_plain_password"] == SECRET  # usable...
    summary = settings_summary(s)
    for text in (repr(s), str(s), s.model_dump_json(), json.dumps(summary)):  # ...never shown
        assert SECRET not in text and KEY not in text
    assert summary["kafka.sasl_password"] == "set"
    assert summary["temporal.api_key"] == "set"
    assert summary["kafka.sasl_mechanism"] == "SCRAM-SHA-512"


def test_temporal_tls_choices(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert temporal_tls(LoomSettings().temporal) is None  # the SDK decides (TLS with a key)
    assert temporal_tls(load_settings(temporal={"tls": True}).temporal) is True
    assert temporal_tls(load_settings(temporal={"tls": False}).temporal) is False
    cert, key, ca = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem"
    for path in (cert, key, ca):
        path.write_bytes(path.name.encode())
    tls = temporal_tls(
        load_settings(temporal={"tls_cert": cert, "tls_key": key, "tls_ca": ca}).temporal
    )
    assert tls == TLSConfig(server_root_ca_cert=b"ca.pem", client_cert=b"c.pem",
                            client_private_key=b"k.pem")
    with pytest.raises(SettingsError, match="tls_cert and tls_key go together"):
        load_settings(temporal={"tls_cert": cert})


def _module(directory: Path, source: str) -> str:
    name = f"loomset_{uuid.uuid4().hex[:10]}"
    (directory / f"{name}.py").write_text(textwrap.dedent(source))
    return name


async def test_codec_from_instance_or_factory_round_trips(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert make_data_converter(LoomSettings()) is pydantic_data_converter
    mod = "reverse_codec"  # tests/reverse_codec.py
    for attr in ("INSTANCE", "factory"):
        converter = make_data_converter(load_settings(temporal={"codec": f"{mod}:{attr}"}))
        assert type(converter.payload_codec).__name__ == "Reverse"
        assert converter.payload_converter is not None
        encoded = await converter.encode(["hello"])
        assert encoded[0].metadata["encoding"] == b"binary/reversed"
        assert await converter.decode(encoded, [str]) == ["hello"]
    with pytest.raises(SettingsError, match=r"LOOM_TEMPORAL__CODEC.*PayloadCodec"):
        load_codec(f"{mod}:NOT_A_CODEC")
    with pytest.raises(SettingsError, match=r"LOOM_TEMPORAL__CODEC.*cannot import"):
        load_codec("no_such_codec_module:x")


def test_load_router_accepts_router_list_or_factory(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    mod = _module(tmp_path, """
        from bridge.actions import SignalWithStart
        from bridge.routing import Route, Router

        def _route(name):
            return Route(name, "t." + name,
                         SignalWithStart(workflow="W", task_queue="q", workflow_id="{id}"))

        router = Router([_route("a")])
        ROUTES = [_route("b"), _route("c")]
        def make():
            return Router([_route("d")])
        WRONG = {"not": "routes"}
    """)
    assert [r.name for r in load_router(mod)] == ["a"]
    assert [r.name for r in load_router(f"{mod}:ROUTES")] == ["b", "c"]
    assert [r.name for r in load_router(f"{mod}:make")] == ["d"]
    with pytest.raises(SettingsError, match=r"LOOM_ROUTES.*dict"):
        load_router(f"{mod}:WRONG")


def test_explicit_unmatched_setting_overrides_the_router_policy(env: pytest.MonkeyPatch) -> None:
    router = Router([], unmatched=UnmatchedPolicy.FAIL)
    Sidecar(LoomSettings(), router, interceptors=[], header_hook=lambda inv: {})
    assert router.unmatched == UnmatchedPolicy.FAIL  # not set: the router's own policy
    env.setenv("LOOM_UNMATCHED", "skip")
    sidecar = Sidecar(load_settings(), router, interceptors=[], header_hook=lambda inv: {})
    assert sidecar.router.unmatched is UnmatchedPolicy.SKIP
