"""Taking one record: track its offset, decode, route, submit; dead-letter what cannot go on.

No record stops the line. Whatever a record holds and whatever raises while it is taken
(decode, match, validate, template, resolve), the record goes to the dead-letter topic:
:class:`~bridge.exceptions.BadInputError` with its own reason, anything unexpected as
:class:`~bridge.exceptions.InternalError` (reason ``internal``, the exception and where it
was raised). A record the dead-letter topic refuses for good, summary included, is left
unfinished: its offset is not committed (Kafka redelivers it after a restart) and the loop
goes on. The only exception that leaves :meth:`Intake.take` on purpose is
:class:`UnmatchedStopError`, the ``fail`` policy for unmatched events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition

from bridge.actions import Invocation, Outcome, UnmatchedPolicy
from bridge.events import Event
from bridge.exceptions import (
    BadInputError,
    DecodeError,
    InternalError,
    LoomError,
    UnmatchedEventError,
    error_reason,
)
from bridge.kafka.binding import decode
from bridge.kafka.deadletters import DeadLetterWriter
from bridge.kafka.record import Record
from bridge.routing import Router
from bridge.sidecar.dispatch import Dispatcher
from bridge.sidecar.metrics import Metrics
from bridge.sidecar.offsets import OffsetTracker, Ticket

__all__ = ["Intake", "Job", "Pending", "UnmatchedStopError", "UnreadableRecordError"]

log = logging.getLogger("loom")


class UnmatchedStopError(LoomError):
    """An event matched no route and the unmatched policy is ``fail``."""

    reason = "unmatched-fail"


class UnreadableRecordError(DecodeError):
    """aiokafka could not parse the record (read raw instead): it goes to the dead-letter
    topic with its coordinates, and its headers in ``loom-dlq-raw-headers``."""

    reason = "unreadable"


@dataclass(slots=True)
class Pending:
    """One consumed record whose invocations are not all finished."""

    ticket: Ticket[TopicPartition]
    remaining: int


@dataclass(slots=True)
class Job:
    """One invocation of one record, the unit the dispatcher runs."""

    record: Record
    invocation: Invocation
    pending: Pending


def _decode(record: Record) -> Event:
    if record.unreadable is not None:
        raise UnreadableRecordError(record.unreadable)
    return decode(record)


class Intake:
    """Takes records into the dispatcher, and dead-letters those that cannot go there.

    Args:
        router: The route table (and its unmatched policy).
        tracker: Offsets taken and finished.
        dispatcher: Where a record's invocations run.
        deadletters: The dead-letter writer (it retries transient errors itself).
        metrics: The loom's metrics.
        finished: ``finished(tp, record)`` is True for a record finished before a crash or a
            rebalance (:class:`~bridge.sidecar.redo.Redo`): it is marked done, not taken again.
    """

    def __init__(
        self,
        router: Router,
        tracker: OffsetTracker[TopicPartition],
        dispatcher: Dispatcher[str, Job, tuple[Outcome, Any]],
        deadletters: DeadLetterWriter,
        metrics: Metrics,
        finished: Callable[[TopicPartition, Record], bool] | None = None,
    ) -> None:
        self.router = router
        self.tracker = tracker
        self.dispatcher = dispatcher
        self.deadletters = deadletters
        self.metrics = metrics
        self._finished = finished

    async def take(self, tp: TopicPartition, record: Record) -> None:
        """Track ``record`` and submit its invocations, or dead-letter it."""
        ticket = self.tracker.track(tp, record.offset)
        if self._finished is not None and self._finished(tp, record):
            self.tracker.done(ticket)
            return
        event: Event | None = None
        try:
            event = _decode(record)
            invocations = self.router.resolve(event, topic=record.topic)
        except BadInputError as exc:
            if await self.deadletter(record, exc, getattr(exc, "route", None), event=event):
                self.tracker.done(ticket)
            return
        except Exception as exc:  # a bug here or in a route's code: never stop the line
            if await self.deadletter(record, InternalError.wrap(exc), None):
                self.tracker.done(ticket)
            return
        self.metrics.recording.received(record, event, invocations)
        if not invocations:
            if await self._unmatched(record, event):
                self.tracker.done(ticket)
            return
        pending = Pending(ticket, len(invocations))
        for inv in invocations:
            await self.dispatcher.submit(inv.workflow_id, Job(record, inv, pending))

    async def _unmatched(self, record: Record, event: Event) -> bool:
        policy = self.router.unmatched
        self.metrics.unmatched.labels(policy.value).inc()
        if policy is UnmatchedPolicy.SKIP:
            return True
        exc = UnmatchedEventError(
            f"no route matches type={event.type!r} source={event.source!r}"
            f" subject={event.subject!r}"
        )
        if policy is UnmatchedPolicy.FAIL:
            raise UnmatchedStopError(str(exc))
        return await self.deadletter(record, exc, None, event=event)

    def finish(self, job: Job, outcome: Outcome | None = None) -> None:
        """One invocation of a record is done (Temporal answered ``outcome``, or it was
        dead-lettered); the record is, once all of them are."""
        if outcome is not None:
            self.metrics.recording.done(job.invocation, outcome)
        job.pending.remaining -= 1
        if job.pending.remaining == 0:
            self.tracker.done(job.pending.ticket)

    async def deadletter(
        self, record: Record, exc: BaseException, route: str | None,
        inv: Invocation | None = None, *, event: Event | None = None,
    ) -> bool:
        """Write ``record`` to the dead-letter topic; False when that cannot be done (the
        record then stays unfinished: not committed, redelivered after a restart). ``inv``
        or ``event``: what the record was, for the map's recording."""
        reason = error_reason(exc)
        log.error(
            "dead-lettered %s[%d]@%d route=%s reason=%s: %s",
            record.topic, record.partition, record.offset, route, reason, exc,
        )
        try:
            await self.deadletters.write(record, exc, route)
        except Exception as err:  # refused for good, or a bug: the loop must go on
            self.metrics.deadletter_failed.inc()
            log.error(  # noqa: TRY400 (a refusal is not a bug: no traceback)
                "%s[%d]@%d could not be dead-lettered and stays uncommitted (its partition's "
                "commit waits for it until a restart redelivers it): %s: %s",
                record.topic, record.partition, record.offset, type(err).__name__, err,
            )
            return False
        self.metrics.deadlettered.labels(reason).inc()
        self.metrics.recording.dead_lettered(
            record, inv.event if inv is not None else event, route, reason,
            inv.workflow_id if inv is not None else None,
        )
        return True
