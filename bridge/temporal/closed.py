"""An event for a workflow whose run has closed: a redelivery, or a late event?

Under ``REJECT_DUPLICATE`` the server refuses an event for a closed workflow id the same way
whether the closed run saw it (Kafka redelivered it after a crash) or not (it came late: a
shipment update after the order closed). Only the workflow knows, so the loom asks it:
Temporal answers a query on a closed run by replaying its history on a worker, and
``LoomWorkflow`` answers ``loom_seen(source, id)`` from its inbox.

- seen: a redelivery, counted as a duplicate;
- not seen, or no answer (no worker polling, not a ``LoomWorkflow``, the query failed): a
  late event, which follows the route's ``if_closed`` policy: dead-lettered with reason
  ``workflow-closed`` and the run's status, or skipped (counted).

Replay costs about 1 ms per history event and, with no worker polling, a query waits for its
whole deadline: the query gets a short timeout of its own. Errors of the cluster (server
unavailable, namespace) are raised, for the caller to retry the whole call.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowQueryFailedError, WorkflowQueryRejectedError
from temporalio.service import RPCError, RPCStatusCode

from bridge.actions import ClosedWorkflowPolicy, Invocation, Outcome
from bridge.events import EVENT_SEEN_QUERY
from bridge.exceptions import WorkflowClosedError
from bridge.temporal.errors import is_namespace_problem

__all__ = ["DEFAULT_CLOSED_QUERY_TIMEOUT", "closed_workflow_outcome"]

#: How long the loom waits for a closed workflow to say whether it saw an event.
DEFAULT_CLOSED_QUERY_TIMEOUT = timedelta(seconds=10)

# A query that could not be answered for this run: the event counts as late.
# CANCELLED / DEADLINE_EXCEEDED: no worker took it in time; FAILED_PRECONDITION: no poller
# recently, or the run closed before its first workflow task; NOT_FOUND: the run is gone.
_NO_ANSWER = frozenset(
    {
        RPCStatusCode.CANCELLED,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.FAILED_PRECONDITION,
        RPCStatusCode.NOT_FOUND,
    }
)


async def closed_workflow_outcome(
    client: Client,
    inv: Invocation,
    run_id: str,
    *,
    query_timeout: timedelta = DEFAULT_CLOSED_QUERY_TIMEOUT,
    rpc_timeout: timedelta | None = None,
) -> tuple[Outcome, Any]:
    """What to do with ``inv``, refused because the run ``run_id`` of its workflow is closed.

    Returns:
        ``(DUPLICATE, run_id)`` when the run saw the event (or is not closed after all),
        ``(LATE, run_id)`` for a late event under ``if_closed=skip``.

    Raises:
        WorkflowClosedError: A late event under ``if_closed=dead-letter``.
        RPCError: The cluster failed (unavailable, namespace...): retry the call.
    """
    handle = client.get_workflow_handle(inv.workflow_id, run_id=run_id)
    description = await handle.describe(rpc_timeout=rpc_timeout)
    status = description.status
    if status is None or status.name == "RUNNING":
        return Outcome.DUPLICATE, run_id  # joined rather than refused: nothing is late
    answer: str
    try:
        seen = await handle.query(
            EVENT_SEEN_QUERY,
            args=[inv.event.source, inv.event.id],
            result_type=bool,
            rpc_timeout=query_timeout,
        )
    except (WorkflowQueryFailedError, WorkflowQueryRejectedError) as err:
        answer = f"no answer: {err}"
    except RPCError as err:
        if err.status not in _NO_ANSWER or is_namespace_problem(err):
            raise
        answer = f"no answer: {err.status.name}: {err.message}"
    else:
        if seen is True:
            return Outcome.DUPLICATE, run_id
        answer = "not seen"
    if inv.if_closed is ClosedWorkflowPolicy.SKIP:
        return Outcome.LATE, run_id
    raise WorkflowClosedError(
        f"route {inv.route!r}: workflow {inv.workflow_id!r} (run {run_id}) is closed "
        f"({status.name}); event {inv.event.id!r} from {inv.event.source!r} is late "
        f"({EVENT_SEEN_QUERY}: {answer})",
        {"workflow-status": status.name, "workflow-run-id": run_id},
    )
