"""The pseudo-route of reply events: a reply is signalled into the workflow that emitted its
command (``emit(..., correlate=True)`` / ``request``) when no route applies to it.

The workflow is named by the deprecated ``loomcorrelation`` when present (still written by
``request`` for one minor release), else by the CloudEvents ``correlationid`` of an event
that names its cause (``causationid``): a reply answers something. ``bridge.routing`` uses
and re-exports it."""

from __future__ import annotations

from bridge._ids import request_id
from bridge.actions import ActionKind, Invocation, MissingWorkflowPolicy
from bridge.events import CORRELATION, CORRELATION_ID, EVENT_SIGNAL, Event, link_value
from bridge.matching import as_text

__all__ = ["REPLY_ROUTE", "reply_invocation", "reply_target"]

#: Route name of reply events signalled back into the workflow that awaits them.
REPLY_ROUTE = "loom.reply"


def reply_target(event: Event) -> str | None:
    """The workflow id an unrouted reply goes to, or None when ``event`` is no reply.

    A malformed ``correlationid``/``causationid`` (see :func:`bridge.events.link_value`) is
    ignored, as if absent.
    """
    legacy = event.extensions.get(CORRELATION)
    if legacy is not None and legacy != "":
        return as_text(legacy)
    if event.causation is None:
        return None
    return link_value(event.extensions.get(CORRELATION_ID))


def reply_invocation(event: Event) -> Invocation | None:
    """The signal of a reply event into the workflow that awaits it (:func:`reply_target`).

    A reply whose workflow is missing or closed is dead-lettered, never skipped: the workflow
    awaited it, so losing it silently would hide a bug or a timeout on the workflow side.

    Returns:
        ``None`` when the event is no reply.
    """
    target = reply_target(event)
    if target is None:
        return None
    return Invocation(
        kind=ActionKind.SIGNAL,
        route=REPLY_ROUTE,
        event=event,
        workflow_id=target,
        name=EVENT_SIGNAL,
        args=(event.to_payload(),),
        request_id=request_id(REPLY_ROUTE, event),
        if_missing=MissingWorkflowPolicy.DEAD_LETTER,
    )
