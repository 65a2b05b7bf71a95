"""The pseudo-route of reply events: a reply carrying ``loomcorrelation`` is signalled into
the workflow that emitted its command (``emit(..., correlate=True)`` / ``request``) when no
route applies to it. ``bridge.routing`` uses and re-exports it."""

from __future__ import annotations

from bridge._ids import request_id
from bridge.actions import ActionKind, Invocation, MissingWorkflowPolicy
from bridge.events import CORRELATION, EVENT_SIGNAL, Event
from bridge.matching import as_text

__all__ = ["REPLY_ROUTE", "reply_invocation"]

#: Route name of reply events signalled through the ``loomcorrelation`` extension.
REPLY_ROUTE = "loom.reply"


def reply_invocation(event: Event) -> Invocation | None:
    """The signal of a reply event into the workflow named by its ``loomcorrelation``.

    A reply whose workflow is missing or closed is dead-lettered, never skipped: the workflow
    awaited it, so losing it silently would hide a bug or a timeout on the workflow side.

    Returns:
        ``None`` when the event carries no (or an empty) ``loomcorrelation``.
    """
    target = event.extensions.get(CORRELATION)
    if target is None or target == "":
        return None
    return Invocation(
        kind=ActionKind.SIGNAL,
        route=REPLY_ROUTE,
        event=event,
        workflow_id=as_text(target),
        name=EVENT_SIGNAL,
        args=(event.to_payload(),),
        request_id=request_id(REPLY_ROUTE, event),
        if_missing=MissingWorkflowPolicy.DEAD_LETTER,
    )
