"""Tracing: an event's traceparent continues through the loom, the workflow and emitted events."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from flows.tracing_flows import Traced, TracedWorkflow
from kit import loom_settings, workflow_started
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor

from bridge.actions import ActionKind, Invocation, SignalWithStart
from bridge.events import EVENT_SIGNAL, Event
from bridge.exceptions import SettingsError
from bridge.kafka.binding import decode, encode
from bridge.kafka.clients import LoomProducer
from bridge.routing import Match, Route, Router
from bridge.settings import EmitSettings, KafkaSettings, TracingSettings
from bridge.sidecar.loop import Loom, running
from bridge.telemetry import tracing
from bridge.testing import loom_worker, read_records
from bridge.worker.activities import loom_activities

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
PARENT_SPAN_ID = 0xB7AD6B7169203331
TRACEPARENT = f"00-{TRACE_ID:032x}-{PARENT_SPAN_ID:016x}-01"


# --- an SDK tracer provider for the whole session --------------------------------------------------


@pytest.fixture(scope="session")
def span_exporter() -> InMemorySpanExporter:
    """In-memory spans of the global provider (the loom's spans use the global tracer).

    OpenTelemetry sets the global provider once per process: reuse an SDK provider another
    test installed, otherwise install one. Tests filter spans by trace id.
    """
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        runtime = tracing.setup(exporter=exporter)
        assert runtime is not None
        provider = runtime.provider
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert trace.get_tracer_provider() is provider
    return exporter


@pytest.fixture
def spans(span_exporter: InMemorySpanExporter) -> Callable[[int], list[ReadableSpan]]:
    span_exporter.clear()

    def of_trace(trace_id: int) -> list[ReadableSpan]:
        return [
            s
            for s in span_exporter.get_finished_spans()
            if s.context is not None and s.context.trace_id == trace_id
        ]

    return of_trace


def invocation(event: Event, route: str = "r") -> Invocation:
    return Invocation(
        kind=ActionKind.SIGNAL_WITH_START,
        route=route,
        event=event,
        workflow_id="wf-1",
        request_id=str(uuid.uuid4()),
        workflow_type="W",
        task_queue="q",
        args=(event.to_payload(),),
    )


def traced_event(**extensions: Any) -> Event:
    return Event(
        id=uuid.uuid4().hex,
        source="test://producer",
        type="test.traced",
        data={"entity": uuid.uuid4().hex[:8]},
        extensions={"traceparent": TRACEPARENT, **extensions},
    )


def parse_traceparent(value: str) -> tuple[int, int]:
    version, trace_id, span_id, flags = value.split("-")
    assert version == "00" and flags == "01"
    return int(trace_id, 16), int(span_id, 16)


# --- pure logic ------------------------------------------------------------------------------------


def test_context_from_event_reads_traceparent_and_ignores_bad_values() -> None:
    ctx = tracing.context_from_event(traced_event(tracestate="vendor=1"))
    assert ctx is not None
    span_ctx = trace.get_current_span(ctx).get_span_context()
    assert (span_ctx.trace_id, span_ctx.span_id, span_ctx.is_remote) == (
        TRACE_ID,
        PARENT_SPAN_ID,
        True,
    )
    assert span_ctx.trace_state.get("vendor") == "1"
    assert tracing.context_from_event(Event(id="1", source="s", type="t")) is None
    for bad in ("garbage", "00-" + "0" * 32 + "-" + "0" * 16 + "-01", 42):
        assert tracing.context_from_event(traced_event(traceparent=bad)) is None


def test_headers_are_what_temporals_tracing_interceptor_reads() -> None:
    ctx = tracing.context_from_event(traced_event())
    headers = tracing.temporal_headers(ctx)
    assert list(headers) == [tracing.HEADER_KEY]
    # The worker side of temporalio.contrib.opentelemetry decodes them with this method.
    read = TracingInterceptor()._context_from_headers(headers)
    assert read is not None
    span_ctx = trace.get_current_span(read).get_span_context()
    assert (span_ctx.trace_id, span_ctx.span_id) == (TRACE_ID, PARENT_SPAN_ID)
    assert tracing.temporal_headers(trace.set_span_in_context(trace.INVALID_SPAN)) == {}


def test_route_span_is_a_child_of_the_event_and_what_the_hook_sends(
    spans: Callable[[int], list[ReadableSpan]],
) -> None:
    inv = invocation(traced_event(), route="orders")
    hook = tracing.header_hook()
    with tracing.route_span(inv) as span:
        headers = hook(inv)
        sent = tracing.event_trace_context()
    assert not isinstance(headers, Awaitable)
    (recorded,) = spans(TRACE_ID)
    assert recorded.name == "loom route orders"
    assert recorded.kind is SpanKind.CLIENT
    assert recorded.parent is not None and recorded.parent.span_id == PARENT_SPAN_ID
    assert recorded.attributes is not None
    assert recorded.attributes["cloudevents.event_id"] == inv.event.id
    assert recorded.attributes["temporalWorkflowID"] == "wf-1"
    own = span.get_span_context().span_id
    assert parse_traceparent(sent["traceparent"]) == (TRACE_ID, own)
    read = TracingInterceptor()._context_from_headers(headers)
    assert read is not None
    assert trace.get_current_span(read).get_span_context().span_id == own
    # Outside the span nothing leaks into the next call.
    assert hook(inv) == {}


def test_route_span_without_traceparent_starts_a_new_trace_and_records_errors(
    span_exporter: InMemorySpanExporter,
) -> None:
    span_exporter.clear()
    inv = invocation(Event(id="1", source="s", type="t"))
    with pytest.raises(RuntimeError), tracing.route_span(inv):
        raise RuntimeError("boom")
    (recorded,) = span_exporter.get_finished_spans()
    assert recorded.parent is None
    assert recorded.status.status_code is trace.StatusCode.ERROR


def test_without_an_sdk_the_incoming_context_passes_through() -> None:
    inv = invocation(traced_event())
    noop = trace.NoOpTracerProvider().get_tracer("x")
    with tracing.route_span(inv, otel_tracer=noop):
        assert parse_traceparent(tracing.event_trace_context()["traceparent"]) == (
            TRACE_ID,
            PARENT_SPAN_ID,
        )


@pytest.fixture
def otel_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No OTEL_* variable from outside."""
    import os

    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_setup_builds_an_sdk_provider_from_settings(otel_env: pytest.MonkeyPatch) -> None:
    assert tracing.setup(TracingSettings()) is None
    runtime = tracing.setup(
        TracingSettings(exporter="memory", service_name="svc"), set_global=False
    )
    assert runtime is not None
    assert isinstance(runtime.exporter, InMemorySpanExporter)
    assert runtime.provider.resource.attributes["service.name"] == "svc"
    runtime.provider.get_tracer("t").start_span("x").end()
    assert [s.name for s in runtime.exporter.get_finished_spans()] == ["x"]
    runtime.shutdown()


def test_otlp_without_the_extra_names_the_setting_and_the_extra(
    otel_env: pytest.MonkeyPatch,
) -> None:
    import sys

    from bridge.telemetry.sdk import OTLP_MODULES

    for module in OTLP_MODULES.values():
        otel_env.setitem(sys.modules, module, None)  # as if the otlp extra were not installed
    with pytest.raises(SettingsError, match=r"LOOM_TRACING__EXPORTER.*temporal-loom\[otlp\]"):
        tracing.setup(TracingSettings(exporter="otlp"), set_global=False)


def test_resolve_follows_opentelemetry_variables_and_loom_wins() -> None:
    unset = TracingSettings()
    assert tracing.resolve(unset, {}) == tracing.TracingConfig(
        exporter="none", protocol="grpc", endpoint=None, service_name="temporal-loom",
        sample_ratio=1.0,
    )
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": "orders-loom",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
    }
    # An endpoint alone turns OTLP on; the SDK reads the endpoint, the name and the sampler.
    assert tracing.resolve(unset, otel) == tracing.TracingConfig(
        exporter="otlp", protocol="http/protobuf", endpoint=None, service_name=None,
        sample_ratio=None,
    )
    assert tracing.resolve(unset, {"OTEL_TRACES_EXPORTER": "console"}).exporter == "console"
    loom = TracingSettings(exporter="none", protocol="grpc", endpoint="http://other:4317",
                           service_name="svc", sample_ratio=0.5)
    assert tracing.resolve(loom, {**otel, "OTEL_TRACES_EXPORTER": "otlp"}) == tracing.TracingConfig(
        exporter="none", protocol="grpc", endpoint="http://other:4317", service_name="svc",
        sample_ratio=0.5,
    )
    for variable, value in [("OTEL_TRACES_EXPORTER", "zipkin"),
                            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                            ("OTEL_TRACES_SAMPLER", "sometimes")]:
        with pytest.raises(SettingsError, match=f"^{variable}: "):
            tracing.resolve(unset, {variable: value})


@pytest.mark.parametrize(
    ("protocol", "exporter_module", "endpoint"),
    [
        ("grpc", "opentelemetry.exporter.otlp.proto.grpc.trace_exporter", "collector:4317"),
        ("http/protobuf", "opentelemetry.exporter.otlp.proto.http.trace_exporter",
         "http://collector:4318/v1/traces"),
    ],
)
def test_otlp_exporter_of_the_protocol_from_opentelemetry_variables(
    otel_env: pytest.MonkeyPatch, protocol: str, exporter_module: str, endpoint: str
) -> None:
    # The exporters are the otlp extra's; scripts/min-versions installs the runtime alone.
    pytest.importorskip(exporter_module)
    port = "4317" if protocol == "grpc" else "4318"
    otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://collector:{port}")
    otel_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    otel_env.setenv("OTEL_SERVICE_NAME", "orders-loom")
    otel_env.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    otel_env.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    runtime = tracing.setup(TracingSettings(), set_global=False)
    assert runtime is not None
    try:
        assert type(runtime.exporter).__module__ == exporter_module
        assert runtime.exporter._endpoint == endpoint  # type: ignore[attr-defined]
        assert runtime.provider.resource.attributes["service.name"] == "orders-loom"
        assert runtime.provider.sampler.get_description() == "TraceIdRatioBased{0.25}"
    finally:
        runtime.shutdown()


# --- end to end: producer -> loom -> workflow -> emitted event ----------------------------------


@pytest.fixture
async def loom_producer(loom_kafka_bootstrap: str) -> AsyncIterator[LoomProducer]:
    async with LoomProducer(KafkaSettings(bootstrap=loom_kafka_bootstrap)) as producer:
        yield producer


async def read_events(bootstrap: str, topic: str, count: int) -> list[Event]:
    return [decode(r) for r in await read_records(bootstrap, topic, count=count, timeout=20)]


@pytest.mark.kafka
@pytest.mark.temporal
async def test_one_trace_spans_producer_loom_workflow_and_the_emitted_event(
    temporal_client: Client,
    task_queue: str,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    loom_producer: LoomProducer,
    spans: Callable[[int], list[ReadableSpan]],
) -> None:
    inbound, outbound, dlq = await new_topic(), await new_topic(), await new_topic()
    entity = uuid.uuid4().hex[:8]
    router = Router(
        [
            Route(
                "traced",
                match=Match(type_prefix="test."),
                data=Traced,
                action=SignalWithStart(
                    workflow=TracedWorkflow,
                    task_queue=task_queue,
                    workflow_id="traced-{data.entity}",
                ),
            )
        ]
    )
    settings = loom_settings(loom_kafka_bootstrap, [inbound], dlq)
    # A second event for the running workflow, from another trace.
    other_trace = 0x1234567890ABCDEF1234567890ABCDEF
    first = traced_event()
    first = Event(
        id=first.id,
        source=first.source,
        type=first.type,
        data={"entity": entity},
        extensions=first.extensions,
    )
    second = Event(
        id=uuid.uuid4().hex,
        source="test://producer",
        type="test.traced",
        data={"entity": entity},
        extensions={"traceparent": f"00-{other_trace:032x}-{PARENT_SPAN_ID:016x}-01"},
    )
    stop = Event(
        id=uuid.uuid4().hex, source="test://producer", type="test.stop", data={"entity": entity}
    )
    producer = await make_producer()
    for event in (first, second, stop):
        key, value, headers = encode(event)
        await producer.send_and_wait(inbound, value=value, key=key, headers=headers)

    worker = loom_worker(
        temporal_client,
        task_queue=task_queue,
        workflows=[TracedWorkflow],
        # The publish activity's default trace_context hook is tracing.event_trace_context.
        activities=loom_activities(loom_producer, EmitSettings(default_topic=outbound)),
        interceptors=tracing.worker_interceptors(),
    )
    async with worker, running(Loom(router, temporal_client, settings)):
        await workflow_started(temporal_client, f"traced-{entity}")
        handle = temporal_client.get_workflow_handle(f"traced-{entity}")
        assert await asyncio.wait_for(handle.result(), 30) == 2
    emitted = await read_events(loom_kafka_bootstrap, outbound, 2)

    by_name = {s.name: s for s in spans(TRACE_ID)}
    route = by_name["loom route traced"]
    assert route.parent is not None and route.parent.span_id == PARENT_SPAN_ID
    assert route.context is not None
    # The workflow run is a child of the loom's span: same trace, parent = the route span.
    run = by_name["RunWorkflow:TracedWorkflow"]
    assert run.parent is not None and run.parent.span_id == route.context.span_id
    assert {"StartActivity:loom.publish", "RunActivity:loom.publish"} <= set(by_name)
    run_activity_ids = {
        s.context.span_id
        for s in spans(TRACE_ID)
        if s.name == "RunActivity:loom.publish" and s.context is not None
    }
    # Each emitted event carries a traceparent of the publish activity's span, same trace.
    for event in emitted:
        trace_id, span_id = parse_traceparent(event.extensions["traceparent"])
        assert trace_id == TRACE_ID
        assert span_id in run_activity_ids
    # The second event started no run: its trace reaches the workflow as a span link.
    (other_route,) = [s for s in spans(other_trace) if s.name == "loom route traced"]
    assert other_route.context is not None
    linked = [
        s
        for s in spans(TRACE_ID)
        if s.name == f"HandleSignal:{EVENT_SIGNAL}"
        and any(link.context.span_id == other_route.context.span_id for link in s.links)
    ]
    assert len(linked) == 1
