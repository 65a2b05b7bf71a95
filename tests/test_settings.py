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
from bridge.temporal.client import connect_options, make_data_converter, temporal_tls

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


async def test_consumers_read_committed_by_default(env: pytest.MonkeyPatch) -> None:
    """Records of aborted transactions must not reach Temporal: aiokafka's own default is
    read_uncommitted."""
    from bridge.kafka.clients import consumer_for

    settings = load_settings()
    assert settings.kafka.isolation_level == "read_committed"
    assert consumer_for(settings.kafka, group_id=None)._isolation_level == "read_committed"
    env.setenv("LOOM_KAFKA__ISOLATION_LEVEL", "read_uncommitted")
    relaxed = load_settings().kafka
    assert consumer_for(relaxed, group_id=None)._isolation_level == "read_uncommitted"
    env.setenv("LOOM_KAFKA__ISOLATION_LEVEL", "committed")
    with pytest.raises(SettingsError, match="LOOM_KAFKA__ISOLATION_LEVEL"):
        load_settings()


def test_held_records_are_bounded_by_memory_unless_a_count_is_set(env: pytest.MonkeyPatch) -> None:
    # Queues per workflow id must be able to form for coalescing to pay: by default the bound
    # is bytes, not a small count (it used to be 4 x max_in_flight).
    env.setenv("LOOM_DISPATCH__MAX_IN_FLIGHT", "64")
    dispatch = load_settings().dispatch
    assert dispatch.buffered_bound is None
    assert dispatch.max_buffered_bytes == 64 * 1024 * 1024
    env.setenv("LOOM_DISPATCH__MAX_BUFFERED", "0")
    assert load_settings().dispatch.buffered_bound is None
    env.setenv("LOOM_DISPATCH__MAX_BUFFERED_BYTES", "1048576")
    assert load_settings().dispatch.max_buffered_bytes == 1024 * 1024
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


# --- settings the way people write them -----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "topics"),
    [
        ("orders,payments", ["orders", "payments"]),
        (" orders , payments ,", ["orders", "payments"]),
        ("orders", ["orders"]),
        ('["orders", "payments"]', ["orders", "payments"]),
    ],
)
def test_topics_as_a_comma_list_or_json(env: pytest.MonkeyPatch, value: str, topics: list[str]) -> None:
    env.setenv("LOOM_KAFKA__TOPICS", value)
    assert load_settings().kafka.topics == topics


@pytest.mark.parametrize(
    ("value", "mapping"),
    [
        ("payment.*=payments.out,order.completed=orders.done",
         {"payment.*": "payments.out", "order.completed": "orders.done"}),
        (" a = b ", {"a": "b"}),
        ('{"payment.*": "payments.out"}', {"payment.*": "payments.out"}),
    ],
)
def test_topic_map_as_pairs_or_json(
    env: pytest.MonkeyPatch, value: str, mapping: dict[str, str]
) -> None:
    env.setenv("LOOM_EMIT__TOPIC_MAP", value)
    assert load_settings().emit.topic_map == mapping


def test_lists_and_maps_from_dotenv_too(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("LOOM_KAFKA__TOPICS=a,b\nLOOM_EMIT__TOPIC_MAP=x=y\n")
    s = load_settings()
    assert (s.kafka.topics, s.emit.topic_map) == (["a", "b"], {"x": "y"})


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("LOOM_KAFKA__TOPICS", "[orders", "not valid JSON"),
        ("LOOM_EMIT__TOPIC_MAP", "a=b,c", "k=v pairs"),
        ("LOOM_EMIT__TOPIC_MAP", "{nope", "not valid JSON"),
        # pydantic-settings' own JSON decoding of a group of settings, not pydantic's validation
        ("LOOM_KAFKA__PRODUCER", "acks=all", "not a JSON object"),
        ("LOOM_KAFKA", "bootstrap=x:1", "not a JSON object"),
    ],
)
def test_every_parsing_error_is_one_settings_error_naming_the_variable(
    env: pytest.MonkeyPatch, name: str, value: str, said: str
) -> None:
    env.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert f"{name}: " in message and said in message
    assert "\n" not in message


def test_no_demo_defaults_and_require_names_what_is_missing(env: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert s.routes is None and s.kafka.topics == []
    with pytest.raises(SettingsError) as info:
        s.require("routes", "kafka.topics")
    assert "LOOM_ROUTES is not set" in str(info.value)
    assert "LOOM_KAFKA__TOPICS is not set" in str(info.value)
    env.setenv("LOOM_ROUTES", "myapp.routes")
    env.setenv("LOOM_KAFKA__TOPICS", "orders")
    load_settings().require("routes", "kafka.topics")
    assert load_settings().route_spec() == "myapp.routes"


# --- Temporal's own variables (temporalio.envconfig), the loom's winning ---------------------------

NO_PROFILE = {"TEMPORAL_CONFIG_FILE": "/nonexistent/temporal.toml"}  # no user profile leaks in


def test_temporal_variables_apply_when_the_loom_says_nothing(env: pytest.MonkeyPatch) -> None:
    assert connect_options(LoomSettings().temporal, NO_PROFILE) == {
        "target_host": "127.0.0.1:7233", "namespace": "default",
    }
    options = connect_options(LoomSettings().temporal, {
        **NO_PROFILE, "TEMPORAL_ADDRESS": "temporal.example:7233", "TEMPORAL_NAMESPACE": "prod",
        "TEMPORAL_API_KEY": KEY, "TEMPORAL_GRPC_META_X_TENANT": "t1",
    })
    assert options == {
        "target_host": "temporal.example:7233", "namespace": "prod", "api_key": KEY,
        "tls": True,  # Temporal's rule: TLS with an API key
        "rpc_metadata": {"x-tenant": "t1"},
    }


def test_loom_settings_win_over_temporal_variables(env: pytest.MonkeyPatch) -> None:
    env.setenv("LOOM_TEMPORAL__ADDRESS", "loom.example:7233")
    env.setenv("LOOM_TEMPORAL__NAMESPACE", "loom-ns")
    env.setenv("LOOM_TEMPORAL__API_KEY", "loom-key")
    env.setenv("LOOM_TEMPORAL__TLS", "false")  # a local proxy: plaintext despite the key
    options = connect_options(load_settings().temporal, {
        **NO_PROFILE, "TEMPORAL_ADDRESS": "temporal.example:7233", "TEMPORAL_NAMESPACE": "prod",
        "TEMPORAL_API_KEY": KEY,
    })
    assert options == {
        "target_host": "loom.example:7233", "namespace": "loom-ns", "api_key": "loom-key",
        "tls": False,
    }


def test_temporal_profile_file_and_tls_variables(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"CA")
    config = tmp_path / "temporal.toml"
    config.write_text(textwrap.dedent(f"""
        [profile.staging]
        address = "staging.example:7233"
        namespace = "staging"
        [profile.staging.tls]
        server_ca_cert_path = "{ca}"
        server_name = "staging.internal"
    """))
    options = connect_options(
        LoomSettings().temporal,
        {"TEMPORAL_CONFIG_FILE": str(config), "TEMPORAL_PROFILE": "staging"},
    )
    assert options["target_host"] == "staging.example:7233"
    assert options["namespace"] == "staging"
    assert options["tls"] == TLSConfig(server_root_ca_cert=b"CA", domain="staging.internal")


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"TEMPORAL_PROFILE": "nope"}, "TEMPORAL_PROFILE"),
        ({"TEMPORAL_TLS_SERVER_CA_CERT_PATH": "/nonexistent/ca.pem"},
         "TEMPORAL_TLS_SERVER_CA_CERT_PATH"),
    ],
)
def test_unreadable_temporal_configuration_names_the_variable(
    env: pytest.MonkeyPatch, environ: dict[str, str], variable: str
) -> None:
    with pytest.raises(SettingsError, match=f"^{variable}: ") as info:
        connect_options(LoomSettings().temporal, {**NO_PROFILE, **environ})
    assert "\n" not in str(info.value)


def test_a_broken_temporal_config_file_names_it(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    broken = tmp_path / "temporal.toml"
    broken.write_text("[profile.default\naddress = ")
    with pytest.raises(SettingsError, match=r"^TEMPORAL_CONFIG_FILE: ") as info:
        connect_options(LoomSettings().temporal, {"TEMPORAL_CONFIG_FILE": str(broken)})
    assert "\n" not in str(info.value)
