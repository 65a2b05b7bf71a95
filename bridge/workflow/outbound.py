"""Outbound, inside workflow code: ``emit`` a CloudEvent, ``request`` one and await its reply.

Outbound events go through the ``loom.publish`` activity (:mod:`bridge.worker.activities`)
with a CloudEvent id fixed by the workflow: the run's emitted-event sequence through
:func:`bridge._ids.emitted_event_id`, so a retried activity publishes the same id and
consumers can deduplicate (guarantee 7). State lives on workflow instances (never in module
globals): replays rebuild it identically.
"""

# No ``from __future__ import annotations`` here: the types below cross Temporal's data
# converter inside the sandbox, where pydantic cannot look this module up in sys.modules
# when a workflow module imported it through imports_passed_through(). Real annotations
# need no lookup (issue 22).

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, TypeVar
from weakref import WeakKeyDictionary

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

from bridge._ids import emitted_event_id
from bridge.events import (
    CAUSATION_ID,
    CORRELATION,
    CORRELATION_ID,
    PARTITION_KEY,
    Event,
    link_value,
)
from bridge.workflow.inbox import Inbox
from bridge.workflow.loom import LoomWorkflow

__all__ = [
    "PUBLISH_ACTIVITY",
    "ContentMode",
    "PublishRequest",
    "PublishResult",
    "RequestTimeoutError",
    "build_event",
    "emit",
    "event_data",
    "request",
]

#: Name of the publish activity (``bridge.worker.activities.PublishActivities.publish``).
PUBLISH_ACTIVITY = "loom.publish"

DEFAULT_PUBLISH_TIMEOUT = timedelta(seconds=30)
DEFAULT_PUBLISH_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
)

ContentMode = Literal["binary", "structured"]
ModelT = TypeVar("ModelT", bound=BaseModel)


# --- wire types of the publish activity (shared with bridge.worker.activities) ----------------------


@dataclass
class PublishRequest:
    """Input of the ``loom.publish`` activity.

    Attributes:
        event: The CloudEvent in payload form (``Event.to_payload()``).
        topic: Target topic; None lets the activity pick it from its topic map.
        mode: CloudEvents Kafka content mode; None lets the activity's settings choose.
    """

    event: dict[str, Any]
    topic: str | None = None
    mode: ContentMode | None = None


@dataclass
class PublishResult:
    """Where the broker stored the event."""

    id: str
    topic: str
    partition: int
    offset: int


class RequestTimeoutError(ApplicationError):
    """No reply arrived for a ``request()`` in time (fails the workflow unless caught)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, type="LoomRequestTimeout")


# --- emit --------------------------------------------------------------------------------------

# Fallback for workflow classes whose instances take no attributes (``__slots__``).
_sequences: WeakKeyDictionary[Any, int] = WeakKeyDictionary()
_SEQ_ATTR = "_loom_emit_sequence"


def _next_sequence() -> int:
    # Kept per workflow instance: a replay builds a new instance, so ids replay identically.
    instance = workflow.instance()
    try:
        seq: int = getattr(instance, _SEQ_ATTR, 0)
        setattr(instance, _SEQ_ATTR, seq + 1)
    except AttributeError:
        seq = _sequences.get(instance, 0)
        _sequences[instance] = seq + 1
    return seq


def _event_id(seq: int) -> str:
    info = workflow.info()
    return emitted_event_id(info.workflow_id, info.run_id, seq)


def _current_event() -> Event | None:
    instance = workflow.instance()
    if isinstance(instance, LoomWorkflow):
        return instance.inbox.current
    return None


def _json_data(data: Any) -> Any:
    if isinstance(data, BaseModel):
        return data.model_dump(mode="json")
    return data


def build_event(
    type: str,
    data: Any = None,
    *,
    subject: str | None = None,
    source: str | None = None,
    key: str | None = None,
    extensions: Mapping[str, Any] | None = None,
    correlate: bool = False,
    cause: Event | None = None,
) -> Event:
    """Build the CloudEvent ``emit`` would publish (consumes one id of the run's sequence).

    The event carries the CloudEvents correlation extension: ``correlationid`` is the
    cause's (when it has one fit for linking), else the workflow id; ``causationid`` is the
    cause's id. The cause is ``cause``, else the event the workflow's inbox handed out last.
    ``extensions`` given explicitly win.
    """
    info = workflow.info()
    ext: dict[str, Any] = dict(extensions or {})
    ext[PARTITION_KEY] = key if key is not None else info.workflow_id
    if cause is None:
        cause = _current_event()
    ext.setdefault(
        CORRELATION_ID, (cause.correlation if cause is not None else None) or info.workflow_id
    )
    if cause is not None:
        ext.setdefault(CAUSATION_ID, cause.id)
    if correlate:
        # Deprecated, still written for one minor release: the reply address of older sidecars.
        ext[CORRELATION] = info.workflow_id
    # Tracing hook: a ``traceparent``/``tracestate`` given in ``extensions`` is kept as is;
    # otherwise the publish activity may add one from its own span (see bridge.worker.activities).
    payload_data = _json_data(data)
    if payload_data is None:
        content_type = None
    elif isinstance(payload_data, bytes | bytearray):
        content_type = "application/octet-stream"
    else:
        content_type = "application/json"
    return Event(
        id=_event_id(_next_sequence()),
        source=source or f"loom://{info.namespace}/{info.workflow_type}",
        type=type,
        data=payload_data,
        datacontenttype=content_type,
        subject=subject if subject is not None else info.workflow_id,
        time=workflow.now(),
        extensions=ext,
    )


async def emit(
    type: str,
    data: Any = None,
    *,
    topic: str | None = None,
    subject: str | None = None,
    source: str | None = None,
    key: str | None = None,
    extensions: Mapping[str, Any] | None = None,
    correlate: bool = False,
    cause: Event | None = None,
    mode: ContentMode | None = None,
    start_to_close_timeout: timedelta = DEFAULT_PUBLISH_TIMEOUT,
    retry_policy: RetryPolicy = DEFAULT_PUBLISH_RETRY,
) -> Event:
    """Publish a CloudEvent to Kafka from workflow code and wait for the broker's ack.

    The event id is deterministic (workflow id, run id, per-run sequence), so activity retries
    publish the same id.

    Args:
        type: CloudEvent ``type``.
        data: JSON-able value, ``bytes`` or a pydantic model (dumped in JSON mode).
        topic: Target topic; default: the activity's topic map by event type.
        subject: Default: the workflow id.
        source: Default: ``loom://<namespace>/<workflow type>``.
        key: Kafka key (``partitionkey`` extension); default: the workflow id.
        extensions: Extra extension attributes (e.g. ``traceparent``).
        correlate: Make the event a request whose replies are routed back here: also writes
            the deprecated ``loomcorrelation`` = workflow id (read by older sidecars).
        cause: The event this one answers (``causationid``, and its ``correlationid`` is
            carried on); default: the event the workflow's inbox handed out last.
        mode: ``"binary"`` or ``"structured"`` CloudEvents Kafka content mode; by default the
            publish activity's (``LOOM_EMIT__MODE``, binary unless configured).
        start_to_close_timeout: Per-attempt timeout of the publish activity.
        retry_policy: Retry policy of the publish activity (default: unlimited, backoff).

    Returns:
        The event as published.
    """
    event = build_event(
        type,
        data,
        subject=subject,
        source=source,
        key=key,
        extensions=extensions,
        correlate=correlate,
        cause=cause,
    )
    await workflow.execute_activity(
        PUBLISH_ACTIVITY,
        PublishRequest(event=event.to_payload(), topic=topic, mode=mode),
        result_type=PublishResult,
        start_to_close_timeout=start_to_close_timeout,
        retry_policy=retry_policy,
    )
    return event


async def request(
    type: str,
    data: Any = None,
    *,
    reply_type: str,
    timeout: timedelta | float,
    inbox: Inbox | None = None,
    topic: str | None = None,
    **emit_kwargs: Any,
) -> Event:
    """Emit a command correlated to this workflow and wait for its reply.

    The command carries ``correlationid`` (and the deprecated ``loomcorrelation``) naming this
    workflow's flow: the router signals unrouted replies back here. A reply matches when its
    type matches ``reply_type`` and its ``causationid`` (or deprecated ``loomcausation``) is
    the command's id; a reply without either matches on its correlation alone.

    Args:
        type: Command event type.
        data: Command data.
        reply_type: Expected reply type (exact or glob such as ``payment.*``).
        timeout: How long to wait for the reply.
        inbox: The workflow's inbox; default: ``self.inbox`` of a ``LoomWorkflow``.
        topic: Command topic (default: the activity's topic map).
        **emit_kwargs: Further arguments of :func:`emit`.

    Raises:
        RequestTimeoutError: No reply arrived within ``timeout``.
    """
    box = inbox if inbox is not None else _instance_inbox()
    command = await emit(type, data, topic=topic, correlate=True, **emit_kwargs)
    workflow_id = workflow.info().workflow_id

    correlations = {workflow_id, link_value(command.extensions.get(CORRELATION_ID))} - {None}

    def is_reply(event: Event) -> bool:
        causation = event.causation
        if causation is not None:
            return causation == command.id
        ext = event.extensions
        return bool(
            {link_value(ext.get(CORRELATION_ID)), link_value(ext.get(CORRELATION))} & correlations
        )

    reply = await box.wait_for_event(reply_type, where=is_reply, timeout=timeout)
    if reply is None:
        raise RequestTimeoutError(
            f"no {reply_type!r} reply to {type!r} (id {command.id}) within {timeout}"
        )
    return reply


def _instance_inbox() -> Inbox:
    instance = workflow.instance()
    if isinstance(instance, LoomWorkflow):
        return instance.inbox
    raise TypeError("request() needs inbox=... unless the workflow subclasses LoomWorkflow")


def event_data(event: Event, model: type[ModelT]) -> ModelT:
    """Validate ``event.data`` into ``model`` (JSON bytes are parsed as JSON)."""
    if isinstance(event.data, bytes | bytearray):
        return model.model_validate_json(event.data)
    return model.model_validate(event.data)
