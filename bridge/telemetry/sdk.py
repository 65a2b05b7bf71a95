"""The OpenTelemetry SDK of a loom process: exporter, sampler, resource.

:func:`resolve` reads the loom's ``LOOM_TRACING__*`` settings over OpenTelemetry's own
variables (``OTEL_TRACES_EXPORTER``, ``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_PROTOCOL`` (``grpc`` or ``http/protobuf``), ``OTEL_SERVICE_NAME``,
``OTEL_TRACES_SAMPLER``), a ``LOOM_*`` setting winning; :func:`setup` installs the tracer
provider once per process (``bridge.telemetry.tracing`` re-exports both).
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from opentelemetry import trace

from bridge.exceptions import SettingsError
from bridge.settings import TracingSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = ["OTLP_MODULES", "SAMPLERS", "TracingConfig", "TracingRuntime", "resolve", "setup"]

log = logging.getLogger("loom.tracing")

#: ``OTEL_TRACES_SAMPLER`` values the SDK knows (it reads ``OTEL_TRACES_SAMPLER_ARG`` itself).
SAMPLERS = (
    "always_on", "always_off", "traceidratio",
    "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio",
)
#: The OTLP span exporter of each protocol (the ``otlp`` extra installs both).
OTLP_MODULES = {
    "grpc": "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    "http/protobuf": "opentelemetry.exporter.otlp.proto.http.trace_exporter",
}


@dataclass(frozen=True)
class TracingConfig:
    """The tracing settings resolved against OpenTelemetry's variables (``LOOM_*`` wins).

    ``None`` leaves a choice to the SDK, which reads the same variables itself: the endpoint
    (``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``), the sampler (``OTEL_TRACES_SAMPLER[_ARG]``),
    the service name (``OTEL_SERVICE_NAME``, with ``OTEL_RESOURCE_ATTRIBUTES``).
    """

    exporter: str
    protocol: str
    endpoint: str | None
    service_name: str | None
    sample_ratio: float | None


def resolve(
    settings: TracingSettings, environ: Mapping[str, str] | None = None
) -> TracingConfig:
    """Resolve ``settings`` against ``OTEL_*`` (the process environment by default).

    Raises:
        SettingsError: An ``OTEL_*`` value the loom cannot follow (names the variable).
    """
    env = os.environ if environ is None else environ

    def otel(*names: str) -> tuple[str, str] | None:
        for name in names:
            value = env.get(name, "").strip()
            if value:
                return name, value
        return None

    exporter: str
    if settings.exporter is not None:
        exporter = settings.exporter
    else:
        chosen = otel("OTEL_TRACES_EXPORTER")
        if chosen is not None:
            exporter = chosen[1].split(",")[0].strip().lower()
            if exporter not in ("none", "console", "otlp"):
                raise SettingsError(
                    f"{chosen[0]}: {chosen[1]!r} is not supported: otlp, console or none "
                    "(or set LOOM_TRACING__EXPORTER)"
                )
        elif otel("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
            exporter = "otlp"
        else:
            exporter = "none"
    protocol: str
    if settings.protocol is not None:
        protocol = settings.protocol
    else:
        chosen = otel("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
        protocol = chosen[1] if chosen else "grpc"
        if chosen and protocol not in OTLP_MODULES:
            raise SettingsError(
                f"{chosen[0]}: {protocol!r} is not supported: grpc or http/protobuf"
            )
    service_name = settings.service_name
    if service_name is None and not otel("OTEL_SERVICE_NAME"):
        service_name = "temporal-loom"
    ratio = settings.sample_ratio
    sampler = otel("OTEL_TRACES_SAMPLER")
    if ratio is None and sampler is not None and sampler[1].lower() not in SAMPLERS:
        raise SettingsError(f"{sampler[0]}: {sampler[1]!r} is not one of {', '.join(SAMPLERS)}")
    if ratio is None and sampler is None:
        ratio = 1.0
    return TracingConfig(exporter, protocol, settings.endpoint, service_name, ratio)


class _HasTracing(Protocol):
    @property
    def tracing(self) -> TracingSettings: ...


@dataclass(frozen=True)
class TracingRuntime:
    """What :func:`setup` installed: the SDK provider and its exporter."""

    provider: TracerProvider
    exporter: SpanExporter

    def shutdown(self) -> None:
        """Flush and stop (call at process exit)."""
        self.provider.shutdown()


def setup(
    settings: TracingSettings | _HasTracing | None = None,
    *,
    exporter: SpanExporter | None = None,
    set_global: bool = True,
) -> TracingRuntime | None:
    """Install an OpenTelemetry SDK tracer provider for this process.

    Args:
        settings: ``TracingSettings``, or settings with a ``tracing`` attribute; unset ones
            follow OpenTelemetry's variables (:func:`resolve`).
        exporter: An exporter to use instead of the configured one.
        set_global: Make the provider the global one (the loom's spans and
            ``TracingInterceptor()`` without a tracer use the global provider). OpenTelemetry
            allows that once per process.

    Returns:
        The provider and exporter, or None when the exporter is ``none`` and none was given.

    Raises:
        SettingsError: ``otlp`` without the OTLP exporter installed, or an ``OTEL_*`` value
            the loom cannot follow (names the setting).
    """
    if settings is None:
        settings = TracingSettings()
    elif not isinstance(settings, TracingSettings):
        settings = settings.tracing
    config = resolve(settings)
    if exporter is None:
        exporter = _exporter(config)
        if exporter is None:
            return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    # Resource.create adds OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; a sampler of None
    # makes the SDK follow OTEL_TRACES_SAMPLER.
    name = {} if config.service_name is None else {"service.name": config.service_name}
    ratio = config.sample_ratio
    provider = TracerProvider(
        resource=Resource.create(name),
        sampler=None if ratio is None else ParentBased(TraceIdRatioBased(ratio)),
    )
    if isinstance(exporter, InMemorySpanExporter):
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    if set_global:
        trace.set_tracer_provider(provider)
        if trace.get_tracer_provider() is not provider:
            log.warning("a global tracer provider was already set: the loom's spans go there")
    return TracingRuntime(provider, exporter)


def _exporter(config: TracingConfig) -> SpanExporter | None:
    kind = config.exporter
    if kind == "none":
        return None
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if kind == "memory":
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        return InMemorySpanExporter()
    endpoint = config.endpoint
    # The HTTP exporter takes the signal's full URL; the setting is the base URL, as
    # OTEL_EXPORTER_OTLP_ENDPOINT is.
    if (
        config.protocol == "http/protobuf"
        and endpoint is not None
        and not endpoint.rstrip("/").endswith("/v1/traces")
    ):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    try:
        module = importlib.import_module(OTLP_MODULES[config.protocol])
    except ImportError:
        raise SettingsError(
            f"LOOM_TRACING__EXPORTER: 'otlp' over {config.protocol} needs the otlp extra: "
            "pip install 'temporal-loom[otlp]'"
        ) from None
    otlp: SpanExporter = module.OTLPSpanExporter(endpoint=endpoint)
    return otlp
