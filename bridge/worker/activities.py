"""The publish activity: ``emit()`` in workflow code lands here and goes out to Kafka.

Register it on a worker with one call and close the shared producer with the worker::

    async with LoomProducer(settings.kafka) as producer:
        async with Worker(
            client,
            task_queue=TASK_QUEUE,
            workflows=[...],
            activities=[*my_activities, *loom_activities(producer, settings.emit)],
        ):
            ...

The event id is fixed by the workflow, so a retried attempt publishes the same CloudEvent id
(guarantee 7); the activity returns only after the broker acknowledged the record.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from aiokafka.errors import KafkaError, KafkaTimeoutError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from bridge.events import TRACEPARENT, TRACESTATE, Event
from bridge.kafka.binding import encode
from bridge.kafka.clients import LoomProducer
from bridge.settings import EmitSettings
from bridge.telemetry.tracing import event_trace_context
from bridge.workflow.outbound import PUBLISH_ACTIVITY, ContentMode, PublishRequest, PublishResult

__all__ = ["Encoder", "PublishActivities", "loom_activities"]

#: ``(event, mode) -> (key, value, headers)``: the CloudEvents Kafka binding.
Encoder = Callable[[Event, ContentMode], tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]
#: Returns trace context extensions (``traceparent``, ``tracestate``) of the current span.
TraceContext = Callable[[], Mapping[str, str]]




class PublishActivities:
    """The ``loom.publish`` activity bound to a shared producer.

    Args:
        producer: The process's shared producer.
        settings: Topic map and default topic.
        encoder: CloudEvents Kafka binding (default: ``bridge.kafka.binding.encode``).
        trace_context: Hook for tracing: returns ``traceparent``/``tracestate`` of the
            current span; added to events that do not carry them already. Default:
            ``bridge.telemetry.tracing.event_trace_context`` (the activity's span when the worker
            traces with Temporal's ``TracingInterceptor``, nothing otherwise).
    """

    def __init__(
        self,
        producer: LoomProducer,
        settings: EmitSettings | None = None,
        *,
        encoder: Encoder | None = None,
        trace_context: TraceContext | None = None,
    ) -> None:
        self.producer = producer
        self.settings = settings or EmitSettings()
        self.encoder = encoder or encode
        self.trace_context: TraceContext = trace_context or event_trace_context

    @activity.defn(name=PUBLISH_ACTIVITY)
    async def publish(self, request: PublishRequest) -> PublishResult:
        """Encode the event and send it; return once the broker acknowledged it."""
        event = self._with_trace_context(Event.from_payload(request.event))
        topic = request.topic or self.settings.topic_for(event.type)
        if topic is None:
            raise ApplicationError(
                f"no topic for event type {event.type!r}: pass topic= to emit() or add it "
                "to LOOM_EMIT__TOPIC_MAP / LOOM_EMIT__DEFAULT_TOPIC",
                type="LoomNoTopic",
                non_retryable=True,
            )
        try:
            key, value, headers = self.encoder(event, request.mode or self.settings.mode)
        except ValueError as err:
            raise ApplicationError(
                f"event {event.type!r} (id {event.id}) cannot be encoded: {err}",
                type="LoomEncodeError",
                non_retryable=True,
            ) from err
        try:
            metadata = await self.producer.send(topic, value, key=key, headers=headers)
        except KafkaError as err:
            # aiokafka marks KafkaTimeoutError (a batch not drained in time) not retriable,
            # though it is a broker hiccup: retried like the others, so emit() never fails
            # a workflow for it.
            if err.retriable or isinstance(err, KafkaTimeoutError):
                raise ApplicationError(
                    f"publishing {event.type!r} (id {event.id}) to {topic!r}: {err!r}",
                    type=type(err).__name__,
                ) from err
            # e.g. record too large, authorization: retrying would fail the same way.
            raise ApplicationError(
                f"publishing {event.type!r} (id {event.id}) to {topic!r} failed: {err!r}",
                type=type(err).__name__,
                non_retryable=True,
            ) from err
        return PublishResult(
            id=event.id, topic=metadata.topic, partition=metadata.partition, offset=metadata.offset
        )

    def _with_trace_context(self, event: Event) -> Event:
        if TRACEPARENT in event.extensions:
            return event
        context = {
            k: v for k, v in self.trace_context().items() if k in (TRACEPARENT, TRACESTATE) and v
        }
        if not context:
            return event
        return replace(event, extensions={**event.extensions, **context})


def loom_activities(
    producer: LoomProducer,
    settings: EmitSettings | None = None,
    *,
    encoder: Encoder | None = None,
    trace_context: TraceContext | None = None,
) -> list[Callable[..., Any]]:
    """The loom's activities for ``Worker(activities=[...])``: today, ``loom.publish``."""
    publisher = PublishActivities(producer, settings, encoder=encoder, trace_context=trace_context)
    return [publisher.publish]
