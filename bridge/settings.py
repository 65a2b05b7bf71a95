"""Configuration: pydantic-settings, environment prefix ``LOOM_``, nested with ``__``.

Every setting can come from the environment (``LOOM_KAFKA__BOOTSTRAP=broker:9092``), from a
``.env`` file, or from CLI flags on top. Lists and maps are written the way people write them
(``LOOM_KAFKA__TOPICS=orders,payments``, ``LOOM_EMIT__TOPIC_MAP=a=b,c=d``) or as JSON. Secrets
are ``SecretStr`` and never printed. :func:`load_settings` turns every error, pydantic's
validation and pydantic-settings' own parsing alike, into one :class:`SettingsError` that names
the setting at fault (as its environment variable).

Settings that an ecosystem already names keep its names as fallbacks, a ``LOOM_*`` variable
winning when both are set: Temporal's ``TEMPORAL_*`` (read by ``temporalio.envconfig`` in
``bridge.temporal.client.connect_options``) and OpenTelemetry's ``OTEL_*``
(``bridge.telemetry.tracing``). :data:`FALLBACKS` says which, for the docs.

Nothing here defaults to the reference application: the sidecar needs ``LOOM_ROUTES`` and
``LOOM_KAFKA__TOPICS`` (:meth:`LoomSettings.require`).
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

from bridge._settings_env import TextList, TextMap, located, setting_name, source_problem
from bridge.actions import UnmatchedPolicy
from bridge.exceptions import SettingsError


class ProducerOptions(BaseModel):
    """aiokafka producer options for the dead-letter, reply and publish producers."""

    acks: Literal["all", "0", "1"] = "all"
    compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None = None
    # Off by default because the embedded broker (Tansu) refuses InitProducerId; turn it on
    # against real Kafka for idempotent writes.
    enable_idempotence: bool = False
    linger_ms: int = Field(default=5, ge=0)
    max_request_size: int = Field(default=4 * 1024 * 1024, gt=0)
    request_timeout_ms: int = Field(default=30_000, gt=0)


class KafkaSettings(BaseModel):
    """The Kafka side: where to consume, how to authenticate, where bad records go."""

    bootstrap: str = "127.0.0.1:9092"
    group_id: str = "temporal-loom"
    # No default: a sidecar consuming someone's idea of topics would dead-letter the rest.
    topics: TextList = Field(default_factory=list)
    deadletter_topic: str = "loom.deadletter"
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    # Records of aborted transactions never reach Temporal (aiokafka's default is uncommitted).
    isolation_level: Literal["read_committed", "read_uncommitted"] = "read_committed"
    max_poll_records: int = Field(default=500, gt=0)
    # How long the broker may hold a fetch waiting for data. Real Kafka answers as soon as
    # data arrives; the embedded broker tends to hold the full time, so lower it there.
    fetch_max_wait_ms: int = Field(default=500, ge=0)
    session_timeout_ms: int = Field(default=30_000, gt=0)
    # Issue 23. Records read ahead of a partition's commit point, at most (offsets from the
    # commit point to the last record taken); reaching it pauses that partition. A crash or a
    # rebalance redoes at most this many of its records. 0: no bound.
    max_uncommitted: int = Field(default=5_000, ge=0)
    # At assignment, the dead-letter topic is read from this long before the partition's first
    # uncommitted record (producer clock skew), so its records dead-lettered before are
    # skipped; at most redo_scan_max letters are read.
    redo_scan_margin_s: float = Field(default=300.0, ge=0)
    redo_scan_max: int = Field(default=100_000, gt=0)
    # A revoked partition's records in flight get this long (at most half the session
    # timeout) to finish before its commit, so the next owner need not redo them.
    revoke_drain_s: float = Field(default=5.0, ge=0)
    heartbeat_interval_ms: int = Field(default=3_000, gt=0)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    producer: ProducerOptions = Field(default_factory=ProducerOptions)

    @field_validator("bootstrap")
    @classmethod
    def _bootstrap_is_host_port(cls, value: str) -> str:
        for part in value.split(","):
            host, sep, port = part.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return value

    @field_validator("ssl_cafile", "ssl_certfile", "ssl_keyfile")
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file not found: {value}")
        return value

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and (
            self.sasl_mechanism is None or self.sasl_username is None or self.sasl_password is None
        ):
            raise ValueError(
                "security_protocol SASL_* needs sasl_mechanism, sasl_username and sasl_password"
            )
        return self

    def client_options(self) -> dict[str, Any]:
        """Connection options shared by aiokafka consumers, producers and admin clients."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            options["ssl_context"] = create_ssl_context(
                cafile=str(self.ssl_cafile) if self.ssl_cafile else None,
                certfile=str(self.ssl_certfile) if self.ssl_certfile else None,
                keyfile=str(self.ssl_keyfile) if self.ssl_keyfile else None,
            )
        if self.security_protocol.startswith("SASL"):
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            if self.sasl_password is not None:  # always set: _sasl_complete checked it
                options["sasl_plain_password"] = self.sasl_password.get_secret_value()
        return options

    def producer_options(self) -> dict[str, Any]:
        """Options for an aiokafka producer (connection + producer settings)."""
        return {**self.client_options(), **self.producer.model_dump(exclude_none=True)}


class TemporalSettings(BaseModel):
    """The Temporal side: cluster address, namespace, TLS or API key.

    Unset (None) fields fall back to Temporal's own configuration (``TEMPORAL_ADDRESS``,
    ``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``, ``TEMPORAL_TLS*``, ``TEMPORAL_PROFILE``),
    then to ``127.0.0.1:7233`` and ``default``:
    ``bridge.temporal.client.connect_options`` resolves them.
    """

    address: str | None = None
    namespace: str | None = None
    # None: Temporal's TEMPORAL_TLS / profile, else the SDK's rule (TLS with an API key).
    tls: bool | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    api_key: SecretStr | None = None
    payload_limit_bytes: int = Field(default=2 * 1024 * 1024, gt=0)
    # "module:attr" naming a PayloadCodec, or a factory returning one (e.g. encryption);
    # the sidecar's client and the worker both use it (bridge.temporal.client.make_data_converter).
    codec: str | None = None
    # How long the sidecar keeps trying to reach Temporal at start-up before giving up.
    connect_timeout_s: float = Field(default=30.0, ge=0)
    # How long a closed workflow may take to say whether it saw a refused event (a query
    # answered by replay on a worker, ~1 ms per history event); no answer: the event is late.
    closed_query_timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("tls_cert", "tls_key", "tls_ca")
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file not found: {value}")
        return value

    @field_validator("codec")
    @classmethod
    def _codec_is_module_attr(cls, value: str | None) -> str | None:
        if value is not None:
            module, sep, attr = value.partition(":")
            if not sep or not module or not attr:
                raise ValueError(f"expected 'module:attr', got {value!r}")
        return value

    @model_validator(mode="after")
    def _cert_and_key(self) -> TemporalSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        return self


class DispatchSettings(BaseModel):
    """Concurrency bounds, retries and shutdown."""

    # Temporal calls running at once (different workflow ids).
    max_in_flight: int = Field(default=256, gt=0)
    # Records accepted and not finished (running + queued behind their workflow id); reaching
    # it pauses the partitions. None or 0: no bound on the count, max_buffered_bytes bounds
    # them (queues per workflow id must be able to form for coalescing to pay).
    max_buffered: int | None = Field(default=None, ge=0)
    # Memory of the records held (estimated: their bytes plus ~4 KiB of objects each);
    # reaching it pauses the partitions.
    max_buffered_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    # A coalesced call (events queued behind one workflow id, in one signal) carries at most
    # this many events and this many bytes of payload (Temporal refuses 2 MB, warns at 512 KB).
    batch_max_events: int = Field(default=500, gt=0)
    batch_max_bytes: int = Field(default=256 * 1024, gt=0, le=2 * 1024 * 1024)
    retry_initial_s: float = Field(default=0.2, gt=0)
    retry_max_s: float = Field(default=10.0, gt=0)
    retry_multiplier: float = Field(default=2.0, ge=1)
    commit_interval_s: float = Field(default=1.0, gt=0)
    drain_timeout_s: float = Field(default=30.0, ge=0)
    # A refusal by the per-run signal cap clears when the run continues as new: retry it this
    # long, then dead-letter it (reason signal-limit).
    signal_limit_retry_s: float = Field(default=120.0, ge=0)

    @field_validator("max_buffered")
    @classmethod
    def _buffered_covers_running(cls, value: int | None, info: ValidationInfo) -> int | None:
        running = info.data.get("max_in_flight")  # absent when it failed its own validation
        if value and running is not None and value < running:
            raise ValueError(
                f"must be >= max_in_flight ({running}), or 0 for no bound on the count; got {value}"
            )
        return value

    @property
    def buffered_bound(self) -> int | None:
        """The bound on the count of accepted, unfinished records: ``max_buffered`` when set,
        else None (``max_buffered_bytes`` alone bounds them)."""
        return self.max_buffered or None


class EmitSettings(BaseModel):
    """Where events emitted by workflows go (the publish activity and the AsyncAPI document).

    Attributes:
        default_topic: Topic of types that ``topic_map`` does not name; None makes such
            emits fail (non-retryable) with a message naming the type.
        topic_map: Event type (exact, or glob such as ``payment.*``) to topic.
        mode: CloudEvents Kafka content mode of emits that do not choose one.
    """

    default_topic: str | None = "loom.events"
    topic_map: TextMap = Field(default_factory=dict)
    mode: Literal["binary", "structured"] = "binary"

    def topic_for(self, event_type: str) -> str | None:
        """The topic of ``event_type``: an exact entry wins, then the first matching pattern
        in declaration order, then ``default_topic``."""
        if event_type in self.topic_map:
            return self.topic_map[event_type]
        for pattern, topic in self.topic_map.items():
            if fnmatchcase(event_type, pattern):
                return topic
        return self.default_topic

    def with_defaults(self, topics: Mapping[str, str]) -> EmitSettings:
        """These settings over an application's own map: a configured entry wins over the
        application's entry for the same pattern and comes before the application's."""
        merged = dict(self.topic_map)
        for pattern, topic in topics.items():
            merged.setdefault(pattern, topic)
        return self.model_copy(update={"topic_map": merged})


class TracingSettings(BaseModel):
    """Tracing of a loom process (``LOOM_TRACING__*``); unset fields fall back to
    OpenTelemetry's variables (``bridge.telemetry.tracing.resolve``).

    Attributes:
        exporter: ``none`` (no SDK: context still propagates, nothing recorded), ``console``
            (spans as JSON on stdout), ``memory`` (kept in memory: tests, ``loom dev``) or
            ``otlp`` (the ``otlp`` extra). Unset: ``OTEL_TRACES_EXPORTER``, else ``otlp`` when
            ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, else ``none``.
        endpoint: OTLP endpoint (``http://collector:4317``; for ``http/protobuf`` the base URL,
            ``/v1/traces`` is added). Unset: ``OTEL_EXPORTER_OTLP_ENDPOINT``.
        protocol: ``grpc`` or ``http/protobuf``. Unset: ``OTEL_EXPORTER_OTLP_PROTOCOL``, else
            ``grpc``.
        service_name: ``service.name`` resource attribute. Unset: ``OTEL_SERVICE_NAME``, else
            ``temporal-loom``.
        sample_ratio: Root sampling ratio; a sampled incoming ``traceparent`` is always
            followed (parent-based). Unset: ``OTEL_TRACES_SAMPLER``, else 1.0.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    exporter: Literal["none", "console", "memory", "otlp"] | None = None
    endpoint: str | None = None
    protocol: Literal["grpc", "http/protobuf"] | None = None
    service_name: str | None = None
    sample_ratio: float | None = Field(default=None, ge=0.0, le=1.0)


class MapSettings(BaseModel):
    """The choreography map at ``/map`` (``LOOM_MAP__*``): an operator page on the HTTP port.

    Attributes:
        enabled: Record what the sidecar sees and serve the map (off: no recording cost).
        max_entries: Bound of the per-instance ring, in records.
        max_bytes: Bound of the ring, in estimated bytes.
        show_data: Keep and show events' data on timelines (ids and types are always shown).
        token: When set, the map answers only requests that carry it (``?token=``, then a
            cookie, or ``Authorization: Bearer``).
        temporal_ui: Base URL of the Temporal UI for links to a workflow's page.
        visibility_ttl_s: How long running-workflow counts from Temporal are cached.
    """

    enabled: bool = True
    max_entries: int = Field(default=20_000, ge=1)
    max_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    show_data: bool = False
    token: SecretStr | None = None
    temporal_ui: str = "http://localhost:8233"
    visibility_ttl_s: float = Field(default=10.0, gt=0)


class LoomSettings(BaseSettings):
    """All settings of the sidecar and the worker."""

    model_config = SettingsConfigDict(
        env_prefix="LOOM_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
    )

    # No default: the route table is the application's (MODULE[:ATTR]).
    routes: str | None = None
    unmatched: UnmatchedPolicy = UnmatchedPolicy.DEAD_LETTER
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8088, ge=0, lt=65536)  # 0: no HTTP server
    # /livez answers 503 once the event loop has not turned for this long (the probe is
    # answered from a thread, so a frozen loop is reported, not merely unreachable).
    liveness_stall_s: float = Field(default=30.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = False
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    temporal: TemporalSettings = Field(default_factory=TemporalSettings)
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)
    emit: EmitSettings = Field(default_factory=EmitSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    map: MapSettings = Field(default_factory=MapSettings)

    def require(self, *names: str) -> None:
        """Raise SettingsError naming each of ``names`` (``routes``, ``kafka.topics``) unset.

        The sidecar needs its routes and topics, and nothing defaults them.
        """
        missing = []
        for name in names:
            value: Any = self
            for part in name.split("."):
                value = getattr(value, part)
            if not value:
                env = setting_name(tuple(name.split(".")))
                missing.append(f"{env} is not set ({_REQUIRED_HINTS.get(env, 'required')})")
        if missing:
            raise SettingsError("; ".join(missing))

    def route_spec(self) -> str:
        """``routes``, or SettingsError naming ``LOOM_ROUTES`` when it is not set."""
        self.require("routes")  # raises unless set
        return str(self.routes)


_REQUIRED_HINTS = {
    "LOOM_ROUTES": "the route table as MODULE[:ATTR], e.g. LOOM_ROUTES=myapp.routes, or --routes",
    "LOOM_KAFKA__TOPICS": "the topics to consume, e.g. LOOM_KAFKA__TOPICS=orders,payments, "
    "or --topic",
}

#: What an unset setting falls back to, where it is not a plain default (for the docs).
FALLBACKS = {
    "LOOM_ROUTES": "required by `loom run`",
    "LOOM_KAFKA__TOPICS": "required by `loom run`",
    "LOOM_TEMPORAL__ADDRESS": "`TEMPORAL_ADDRESS` or a Temporal config profile, else `127.0.0.1:7233`",
    "LOOM_TEMPORAL__NAMESPACE": "`TEMPORAL_NAMESPACE` or a Temporal config profile, else `default`",
    "LOOM_TEMPORAL__TLS": "`TEMPORAL_TLS*` or a Temporal config profile, else on with an API key",
    "LOOM_TEMPORAL__API_KEY": "`TEMPORAL_API_KEY` or a Temporal config profile",
    "LOOM_TRACING__EXPORTER": "`OTEL_TRACES_EXPORTER`, else `otlp` when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, else `none`",
    "LOOM_TRACING__ENDPOINT": "`OTEL_EXPORTER_OTLP_ENDPOINT`",
    "LOOM_TRACING__PROTOCOL": "`OTEL_EXPORTER_OTLP_PROTOCOL`, else `grpc`",
    "LOOM_TRACING__SERVICE_NAME": "`OTEL_SERVICE_NAME`, else `temporal-loom`",
    "LOOM_TRACING__SAMPLE_RATIO": "`OTEL_TRACES_SAMPLER`, else `1.0` (parent-based)",
}


def load_settings(**overrides: Any) -> LoomSettings:
    """Read the settings (environment, ``.env``, then ``overrides``) or raise SettingsError."""
    try:
        return LoomSettings(**overrides)
    except ValidationError as exc:
        problems = [
            f"{located(LoomSettings, err['loc'])}: {err['msg']}"
            for err in exc.errors(include_url=False)
        ]
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
    except SourceError as exc:
        # pydantic-settings' own parsing (a group of settings given as JSON that is not).
        raise SettingsError(f"invalid settings: {source_problem(LoomSettings, exc)}") from None


def settings_reference() -> list[tuple[str, str, str]]:
    """Every setting as ``(environment variable, type, default)``, for the settings reference.

    The default is Markdown: a value in backquotes, or what the setting falls back to.
    """
    rows: list[tuple[str, str, str]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            annotation = info.annotation
            env = f"{prefix}{name.upper()}"
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, env + "__")
                continue
            default = info.get_default(call_default_factory=True)
            shown = "" if default is None else str(default.value if hasattr(default, "value") else default)
            shown = FALLBACKS.get(env, f"`{shown}`" if shown else "")
            type_name = str(annotation) if getattr(annotation, "__args__", None) else getattr(
                annotation, "__name__", str(annotation)
            )
            for noise in ("typing.", "pydantic.types.", "pathlib.", "bridge.actions."):
                type_name = type_name.replace(noise, "")
            rows.append((env, type_name, shown))

    walk(LoomSettings, "LOOM_")
    return rows
