"""What a route does in Temporal: declarations (user-facing) and resolved invocations.

A route carries one *action declaration* (``SignalWithStart``, ``StartWorkflow``, ``Signal``,
``UpdateWithStart``, ``Cancel``). For each matching event the router resolves it into an ``Invocation``:
a plain value with everything the Temporal call needs (ids, names, arguments, policies,
the deterministic request id). The executor (``bridge.temporal.calls``) performs invocations.

Values that come from the event are given as *templates* (``"order-{data.order_id}"``,
``"{subject}"``, ``"{source}/{id}"``) or as callables ``(event, data) -> value`` where
``data`` is the route's validated pydantic model instance (or the raw data without a model).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from bridge.events import EVENT_SIGNAL, EVENT_UPDATE, Event

#: A value computed from the event: a template string or ``(event, data) -> value``.
Template = str | Callable[[Event, Any], Any]
#: Arguments computed from the event: ``(event, data) -> sequence of arguments``.
ArgsFn = Callable[[Event, Any], Sequence[Any]]
#: A workflow given by type name, by its ``@workflow.defn`` class or by its run method.
WorkflowRef = str | type | Callable[..., Any]
#: A signal or update given by name or by the decorated handler method.
HandlerRef = str | Callable[..., Any]


class ActionKind(enum.StrEnum):
    """The Temporal call an action makes."""

    SIGNAL_WITH_START = "signal-with-start"
    START = "start"
    SIGNAL = "signal"
    UPDATE_WITH_START = "update-with-start"
    CANCEL = "cancel"


class MissingWorkflowPolicy(enum.StrEnum):
    """What a signal-only or cancel route does when its workflow is missing or closed.

    Attributes:
        DEAD_LETTER: Dead-letter the event (reason ``workflow-not-found``, or
            ``workflow-closed`` for a cancel of a closed workflow).
        SKIP: Commit it and count it (``loom_events_routed_total{outcome="skipped"}``).
    """

    DEAD_LETTER = "dead-letter"
    SKIP = "skip"


class ClosedWorkflowPolicy(enum.StrEnum):
    """What a route that starts workflows does with a *late* event for a closed workflow.

    Under ``REJECT_DUPLICATE`` the server refuses an event for a workflow id whose run has
    closed. The loom asks the closed run (the ``loom_seen`` query of ``LoomWorkflow``): an
    event it saw is a redelivery (counted as a duplicate); one it did not see, or that it
    cannot answer for (no worker, not a ``LoomWorkflow``), is late and follows this policy.

    Attributes:
        DEAD_LETTER: Dead-letter it with reason ``workflow-closed`` and the workflow's status
            in the ``loom-dlq-workflow-status`` header (the default: nobody would see it).
        SKIP: Commit it and count it (``loom_events_routed_total{outcome="late"}``).
    """

    DEAD_LETTER = "dead-letter"
    SKIP = "skip"


class UnmatchedPolicy(enum.StrEnum):
    """What the sidecar does with an event that no route applies to.

    Attributes:
        DEAD_LETTER: Write the original record to the dead-letter topic with reason
            ``unmatched`` (the default: nothing is silently dropped).
        SKIP: Commit the record without doing anything and count it in a metric (for topics
            shared with events the loom is not meant to handle).
        FAIL: Stop the sidecar (strict deployments where an unmatched event means the route
            table and the producers disagree).
    """

    DEAD_LETTER = "dead-letter"
    SKIP = "skip"
    FAIL = "fail"


@dataclass(frozen=True, kw_only=True)
class _WorkflowAction:
    workflow_id: Template
    memo: Mapping[str, Template] = field(default_factory=dict)
    search_attributes: Mapping[str, Template] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class SignalWithStart(_WorkflowAction):
    """Signal the workflow, starting it first if it is not running (the default action).

    Defaults refuse a second run for a closed id (``REJECT_DUPLICATE``): an event for a
    finished workflow never starts a new run. A redelivery (the closed run saw it) counts as a
    duplicate; a late event follows ``if_closed``.
    """

    workflow: WorkflowRef
    task_queue: str
    signal: HandlerRef = EVENT_SIGNAL
    args: ArgsFn | None = None  # default: (event.to_payload(),)
    start_args: ArgsFn | None = None  # default: ()
    id_reuse_policy: WorkflowIDReusePolicy = WorkflowIDReusePolicy.REJECT_DUPLICATE
    id_conflict_policy: WorkflowIDConflictPolicy = WorkflowIDConflictPolicy.USE_EXISTING
    if_closed: ClosedWorkflowPolicy = ClosedWorkflowPolicy.DEAD_LETTER


@dataclass(frozen=True, kw_only=True)
class StartWorkflow(_WorkflowAction):
    """Start one workflow per event; a second start for the same id is a duplicate (no-op)."""

    workflow: WorkflowRef
    task_queue: str
    args: ArgsFn | None = None  # default: (event.to_payload(),)
    id_reuse_policy: WorkflowIDReusePolicy = WorkflowIDReusePolicy.REJECT_DUPLICATE
    id_conflict_policy: WorkflowIDConflictPolicy = WorkflowIDConflictPolicy.FAIL


@dataclass(frozen=True, kw_only=True)
class Signal:
    """Signal an existing workflow; never starts one."""

    workflow_id: Template
    signal: HandlerRef = EVENT_SIGNAL
    args: ArgsFn | None = None  # default: (event.to_payload(),)
    if_missing: MissingWorkflowPolicy = MissingWorkflowPolicy.DEAD_LETTER


@dataclass(frozen=True, kw_only=True)
class UpdateWithStart(_WorkflowAction):
    """Send an update, starting the workflow if needed, and wait for the update's result.

    With ``reply_topic``, the result is published back to Kafka as a CloudEvent of type
    ``reply_type`` (default ``<event type>.reply``) correlated to the request. The default
    ``ALLOW_DUPLICATE`` starts a new run for a new request once the earlier run closed; under
    ``REJECT_DUPLICATE`` such a request is late and follows ``if_closed``.
    """

    workflow: WorkflowRef
    task_queue: str
    update: HandlerRef = EVENT_UPDATE
    args: ArgsFn | None = None  # default: (event.to_payload(),)
    start_args: ArgsFn | None = None  # default: ()
    reply_topic: str | None = None
    reply_type: str | None = None
    id_reuse_policy: WorkflowIDReusePolicy = WorkflowIDReusePolicy.ALLOW_DUPLICATE
    id_conflict_policy: WorkflowIDConflictPolicy = WorkflowIDConflictPolicy.USE_EXISTING
    if_closed: ClosedWorkflowPolicy = ClosedWorkflowPolicy.DEAD_LETTER


@dataclass(frozen=True, kw_only=True)
class Cancel:
    """Request cancellation of the workflow the id names (Inngest's ``cancelOn``); never starts one.

    Temporal delivers the request to the running workflow as a cancellation it can handle
    (``asyncio.CancelledError`` at its current ``await``; ``workflow.cancellation_reason()``
    gives ``reason``), for example by running its compensations. A redelivered cancel is
    harmless: the request id is deterministic and the server makes a second request a no-op.

    Args:
        workflow_id: Template or callable naming the workflow to cancel.
        reason: Template, constant or callable: the reason the workflow sees; default
            ``"<type> from <source> (id <id>)"``.
        if_missing: A workflow that does not exist, or closed before any cancel reached it,
            is skipped and counted (the default: cancelling a finished workflow is a no-op)
            or dead-lettered. A closed workflow that was asked to cancel already counts as a
            duplicate.
    """

    workflow_id: Template
    reason: Template | None = None
    if_missing: MissingWorkflowPolicy = MissingWorkflowPolicy.SKIP


Action = SignalWithStart | StartWorkflow | Signal | UpdateWithStart | Cancel


@dataclass(frozen=True, kw_only=True)
class Invocation:
    """One resolved Temporal call for one event and one route."""

    kind: ActionKind
    route: str
    event: Event
    workflow_id: str
    workflow_type: str | None = None  # None for signal-only
    task_queue: str | None = None
    name: str | None = None  # signal or update name; None for start-only
    args: Sequence[Any] = ()  # signal/update arguments (or workflow input for start-only)
    start_args: Sequence[Any] = ()  # workflow input for *-with-start
    request_id: str  # deterministic: uuid5 of route + source + id
    update_id: str | None = None  # deterministic for update-with-start
    id_reuse_policy: WorkflowIDReusePolicy = WorkflowIDReusePolicy.REJECT_DUPLICATE
    id_conflict_policy: WorkflowIDConflictPolicy = WorkflowIDConflictPolicy.USE_EXISTING
    memo: Mapping[str, Any] = field(default_factory=dict)
    search_attributes: Mapping[str, Any] = field(default_factory=dict)
    # May ride in one call with the next invocations of its workflow id (its route coalesces).
    coalesce: bool = False
    # A coalesced call: the invocations it carries, in partition order (empty: one event).
    batch: tuple[Invocation, ...] = ()
    if_missing: MissingWorkflowPolicy = MissingWorkflowPolicy.DEAD_LETTER
    if_closed: ClosedWorkflowPolicy = ClosedWorkflowPolicy.DEAD_LETTER
    reply_topic: str | None = None
    reply_type: str | None = None
    reason: str | None = None  # cancel: the reason the workflow sees


class Outcome(enum.StrEnum):
    """How Temporal answered an invocation that did not fail."""

    DELIVERED = "delivered"  # signal / start / update accepted
    DUPLICATE = "duplicate"  # already started, a closed run that saw the event, or a cancel
    # of a closed run already asked to cancel: done
    SKIPPED = "skipped"  # signal-only or cancel to a missing (or closed) workflow under SKIP
    LATE = "late"  # a late event for a closed workflow under if_closed=skip
