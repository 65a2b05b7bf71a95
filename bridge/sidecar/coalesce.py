"""Which routed calls share one Temporal call, and the call they make together.

The events queued behind one workflow id, which is when order makes them wait, ride in one
call when they can share it: the same route action kind (signal-with-start or signal),
workflow id, workflow type, task queue, signal, start arguments and policies, and a route
that coalesces (:attr:`bridge.routing.Route.coalesce`, safe by construction). The call is
the ``loom_events`` signal carrying their payloads in partition order, with a request id
built from its events (:func:`bridge._ids.batch_request_id`). The dispatcher
(:class:`~bridge.sidecar.dispatch.Coalescing`) takes them when the id's turn comes, up to
``dispatch.batch_max_events`` events and ``dispatch.batch_max_bytes`` bytes of payload, and
splits a call refused for good so that each event is tried, and dead-lettered, alone.

Sizes are estimated from the Kafka record, which is at hand, instead of encoding each event
once more: the payload an event adds to a call (its value and headers), and the memory a
held record takes (``max_buffered_bytes``), its bytes plus a measured overhead of objects.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bridge._ids import batch_request_id
from bridge.actions import Invocation, Outcome
from bridge.events import EVENTS_SIGNAL
from bridge.exceptions import error_reason
from bridge.kafka.record import Record
from bridge.settings import DispatchSettings
from bridge.sidecar.dispatch import Coalescing
from bridge.sidecar.intake import Job
from bridge.sidecar.metrics import Metrics

__all__ = [
    "HELD_RECORD_OVERHEAD",
    "coalesced_invocation",
    "coalescing",
    "held_bytes",
    "joins",
    "payload_bytes",
]

log = logging.getLogger("loom")

#: Memory a held record takes beyond its own bytes: the record, its decoded event, the
#: validated data, the invocation and its payload, the job, the offset ticket.
HELD_RECORD_OVERHEAD = 4096
# JSON punctuation and attribute names around an event's payload in a coalesced call.
_PAYLOAD_OVERHEAD = 64


def _record_bytes(record: Record) -> int:
    return (
        len(record.value or b"")
        + len(record.key or b"")
        + sum(len(name) + len(value) for name, value in record.headers)
    )


def payload_bytes(job: Job) -> int:
    """Bytes the job's event adds to a coalesced call (estimated from its record)."""
    return _record_bytes(job.record) + _PAYLOAD_OVERHEAD


def held_bytes(job: Job) -> int:
    """Memory the job holds while it waits or runs (estimated; for ``max_buffered_bytes``)."""
    return 2 * _record_bytes(job.record) + HELD_RECORD_OVERHEAD


def _call_shape(inv: Invocation) -> tuple[Any, ...]:
    return (
        inv.kind, inv.workflow_id, inv.workflow_type, inv.task_queue, inv.name,
        inv.id_reuse_policy, inv.id_conflict_policy, inv.if_missing, inv.if_closed,
    )


def joins(head: Job, item: Job) -> bool:
    """Whether ``item`` may ride in the call of ``head`` (queued before it, same key)."""
    a, b = head.invocation, item.invocation
    return (
        a.coalesce
        and b.coalesce
        and _call_shape(a) == _call_shape(b)
        and a.start_args == b.start_args
        and a.memo == b.memo
        and a.search_attributes == b.search_attributes
    )


def coalesced_invocation(invocations: Sequence[Invocation]) -> Invocation:
    """The one call of several invocations that :func:`joins` accepted, in their order."""
    head, last = invocations[0], invocations[-1]
    return dataclasses.replace(
        head,
        name=EVENTS_SIGNAL,
        # A coalescing route signals the default arguments: the event's payload.
        args=([inv.args[0] for inv in invocations],),
        request_id=batch_request_id(head.request_id, last.request_id, len(invocations)),
        batch=tuple(invocations),
    )


def coalescing(
    settings: DispatchSettings,
    handler: Callable[[str, list[Job]], Awaitable[tuple[Outcome, Any]]],
    metrics: Metrics,
) -> Coalescing[str, Job, tuple[Outcome, Any]]:
    """The dispatcher's rule for the loom: its bounds, and a log line and a metric per split."""

    def on_split(jobs: list[Job], error: BaseException) -> None:
        reason = error_reason(error)
        metrics.batch_splits.labels(reason).inc()
        log.warning(
            "a call carrying %d events for workflow %s was refused (%s): they go one by one: %s",
            len(jobs), jobs[0].invocation.workflow_id, reason, error,
        )

    return Coalescing(
        handler=handler,
        joins=joins,
        size=payload_bytes,
        max_items=settings.batch_max_events,
        max_bytes=settings.batch_max_bytes,
        on_split=on_split,
    )
