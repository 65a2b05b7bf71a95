"""OpenTelemetry tracing across the loom: producer -> loom -> Temporal workflow -> next event.

One W3C trace follows an event through the system:

1. an incoming CloudEvent's ``traceparent``/``tracestate`` extensions (the CloudEvents
   distributed tracing extension) are the parent of the loom's span ``loom route <route>``
   (:func:`route_span`, used by :class:`bridge.sidecar.loop.Loom` around each Temporal call);
2. the raw Temporal calls (signal-with-start, start, signal) skip client interceptors, so
   :func:`header_hook` writes the current span context into the request header in the exact
   form ``temporalio.contrib.opentelemetry`` reads on the worker: header ``_tracer-data``,
   a JSON payload (the SDK's default payload converter, never the client's codec-wrapped one)
   of the W3C text-map carrier. Update-with-start goes through the high-level client, whose
   :func:`client_interceptors` add the same header;
3. on the worker, the ``TracingInterceptor`` (:func:`worker_interceptors`) makes the
   workflow's spans children of that context; the publish activity runs in a
   ``RunActivity:loom.publish`` span of the same trace, and :func:`event_trace_context`
   (the activity's ``trace_context`` hook) writes that span as ``traceparent`` on the
   emitted event.

Temporal's interceptor parents workflow spans on the context of the request that *started*
the run; a later signal's context becomes a span *link* on ``HandleSignal:...``, not the
parent. So one trace spans producer -> loom -> workflow -> emitted events for the event that
starts a workflow; later events to a running workflow are linked to its trace.

The SDK set-up (:func:`setup`, :func:`resolve`: ``LOOM_TRACING__*`` over OpenTelemetry's
``OTEL_*`` variables) lives in :mod:`bridge.telemetry.sdk` and is re-exported here.

Wiring (sidecar and worker)::

    runtime = tracing.setup(settings.tracing)          # SDK provider + exporter, or None
    client = await Client.connect(..., interceptors=tracing.client_interceptors())
    executor = TemporalExecutor(client, header_hook=tracing.header_hook())
    # worker: a client built with client_interceptors() already traces its workers
    # (TracingInterceptor is both kinds); otherwise Worker(..., interceptors=
    # tracing.worker_interceptors()). Publish activity:
    loom_activities(producer, settings, trace_context=tracing.event_trace_context)

Without :func:`setup` (no SDK tracer provider) nothing is recorded, yet context still flows:
the no-op tracer passes the incoming span context through, so the workflow and emitted
events continue the producer's trace for whatever backend the worker reports to.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import opentelemetry.context as otel_context
import temporalio.api.common.v1 as common_pb
from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from temporalio.converter import PayloadConverter

from bridge.actions import Invocation
from bridge.events import TRACEPARENT, TRACESTATE, Event
from bridge.telemetry.sdk import TracingConfig, TracingRuntime, resolve, setup

if TYPE_CHECKING:
    import temporalio.client
    import temporalio.worker

    from bridge.temporal.calls import HeaderHook

__all__ = [
    "HEADER_KEY",
    "TRACER_NAME",
    "TracingConfig",
    "TracingRuntime",
    "client_interceptors",
    "context_from_event",
    "event_trace_context",
    "header_hook",
    "resolve",
    "route_span",
    "setup",
    "temporal_headers",
    "tracer",
    "worker_interceptors",
]


#: Temporal header that ``temporalio.contrib.opentelemetry`` reads and writes.
HEADER_KEY = "_tracer-data"
#: Instrumentation scope of the loom's own spans.
TRACER_NAME = "temporal-loom"

# W3C trace context only for CloudEvents extensions (the distributed tracing extension has
# exactly traceparent and tracestate); Temporal headers carry baggage too, like the SDK.
_EVENT_PROPAGATOR = TraceContextTextMapPropagator()
# The same propagator as TracingInterceptor.text_map_propagator (its default).
_TEMPORAL_PROPAGATOR: TextMapPropagator = CompositePropagator(
    [TraceContextTextMapPropagator(), W3CBaggagePropagator()]
)


def tracer() -> Tracer:
    """The loom's tracer (from the global tracer provider; a no-op one until :func:`setup`)."""
    return trace.get_tracer(TRACER_NAME)


# --- CloudEvents <-> context ----------------------------------------------------------------------


def context_from_event(event: Event) -> Context | None:
    """The span context an event's ``traceparent``/``tracestate`` extensions carry.

    Returns:
        A context whose current span is the remote parent, or None when the event has no
        valid ``traceparent`` (a malformed one is ignored, never an error).
    """
    carrier: dict[str, str] = {}
    for name in (TRACEPARENT, TRACESTATE):
        value = event.extensions.get(name)
        if isinstance(value, str) and value:
            carrier[name] = value
    if TRACEPARENT not in carrier:
        return None
    ctx = _EVENT_PROPAGATOR.extract(carrier, context=Context())
    if not trace.get_current_span(ctx).get_span_context().is_valid:
        return None
    return ctx


def event_trace_context(context: Context | None = None) -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) of the current span, for an outbound CloudEvent.

    This is the publish activity's ``trace_context`` hook
    (``loom_activities(..., trace_context=tracing.event_trace_context)``): inside the activity
    the current span is the worker interceptor's ``RunActivity:loom.publish``.

    Args:
        context: Context to read instead of the current one.

    Returns:
        The extensions to add; empty when there is no valid span.
    """
    carrier: dict[str, str] = {}
    _EVENT_PROPAGATOR.inject(carrier, context=context)
    return {k: v for k, v in carrier.items() if k in (TRACEPARENT, TRACESTATE) and v}


# --- Temporal headers -----------------------------------------------------------------------------


def temporal_headers(context: Context | None = None) -> dict[str, common_pb.Payload]:
    """The Temporal header carrying ``context`` (default: the current one).

    Same format as ``TracingInterceptor._context_to_headers``: ``{"_tracer-data": payload}``
    where the payload is the W3C carrier dict encoded by ``PayloadConverter.default`` (plain
    JSON, independent of the client's data converter). The executor applies the client's
    codec to headers only when the client's ``header_codec_behavior`` is ``CODEC``, in which
    case the worker decodes them the same way.
    """
    carrier: dict[str, str] = {}
    _TEMPORAL_PROPAGATOR.inject(carrier, context=context)
    if not carrier:
        return {}
    return {HEADER_KEY: PayloadConverter.default.to_payloads([carrier])[0]}


def header_hook() -> HeaderHook:
    """The executor's header hook: the current span context as Temporal's tracing header.

    ``TemporalExecutor(client, header_hook=tracing.header_hook())``. The hook runs inside
    :func:`route_span` (the loom's ``_call``), so the workflow's parent is the
    ``loom route <route>`` span, itself a child of the event's ``traceparent``.
    """

    def hook(inv: Invocation) -> Mapping[str, common_pb.Payload]:
        return temporal_headers()

    return hook


def client_interceptors(
    tracer: Tracer | None = None,
) -> list[temporalio.client.Interceptor]:
    """Client interceptors for the high-level client calls (update-with-start, ``loom``'s
    worker client). A client connected with these traces the workers built on it too."""
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor(tracer)]


def worker_interceptors(
    tracer: Tracer | None = None,
) -> list[temporalio.worker.Interceptor]:
    """Worker interceptors that read the tracing header (workflow and activity spans).

    Only for a worker whose client was connected *without* :func:`client_interceptors`:
    a ``TracingInterceptor`` on the client already applies to its workers, and adding it
    twice doubles every span.
    """
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor(tracer)]


# --- the loom's span around one Temporal call --------------------------------------------------


@contextlib.contextmanager
def route_span(inv: Invocation, *, otel_tracer: Tracer | None = None) -> Iterator[Span]:
    """Run the body in span ``loom route <route>``, child of the event's ``traceparent``.

    The span is current in the body, so :func:`header_hook` sends it to Temporal. Without a
    ``traceparent`` the span starts a new trace. A loom error is recorded on the span and
    re-raised. A coalesced call (``inv.batch``) is one span, child of its first event's
    context, linked to the contexts of the others, with ``loom.batch_events``.
    """
    event = inv.event
    parent = context_from_event(event)
    # An explicit empty context: a stray current span must not adopt the event's call.
    ctx = parent if parent is not None else Context()
    attributes: dict[str, str] = {
        "loom.route": inv.route,
        "loom.action": inv.kind.value,
        "temporalWorkflowID": inv.workflow_id,
        "cloudevents.event_id": event.id,
        "cloudevents.event_source": event.source,
        "cloudevents.event_type": event.type,
        "cloudevents.event_spec_version": event.specversion,
    }
    if event.subject is not None:
        attributes["cloudevents.event_subject"] = event.subject
    links: list[Link] = []
    if inv.batch:
        attributes["loom.batch_events"] = str(len(inv.batch))
        for other in inv.batch[1:]:
            linked = context_from_event(other.event)
            if linked is not None:
                links.append(Link(trace.get_current_span(linked).get_span_context()))
    span = (otel_tracer or tracer()).start_span(
        f"loom route {inv.route}", context=ctx, kind=SpanKind.CLIENT, attributes=attributes,
        links=links,
    )
    token = otel_context.attach(trace.set_span_in_context(span, ctx))
    try:
        yield span
    except BaseException as exc:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        otel_context.detach(token)
        span.end()
