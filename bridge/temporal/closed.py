"""An event for a workflow whose run has closed: a redelivery, or a late event?

Under ``REJECT_DUPLICATE`` the server refuses an event for a closed workflow id the same way
whether the closed run saw it (Kafka redelivered it after a crash) or not (it came late: a
shipment update after the order closed). Only the workflow knows, so the loom asks it:
Temporal answers a query on a closed run by replaying its history on a worker, and
``LoomWorkflow`` answers ``loom_seen_digests`` with the digests of the identities its inbox
remembers.

- seen: a redelivery, counted as a duplicate;
- not seen, or no answer (no worker polling, not a ``LoomWorkflow``, the query failed): a
  late event, which follows the route's ``if_closed`` policy: dead-lettered with reason
  ``workflow-closed`` and the run's status, or skipped (counted).

Replay costs about 1 ms per history event and, with no worker polling, a query waits for its
whole deadline: the query gets a timeout of its own (a timeout is asked again, up to
``QUERY_ATTEMPTS`` times, since a busy worker times out too), and since a closed run never
changes, what it answered is kept (:class:`ClosedRuns`, bounded) for its other redelivered
events: after a crash, one replay per closed workflow instead of one per event. Errors of
the cluster (server unavailable, namespace) are raised, for the caller to retry the call.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowQueryFailedError, WorkflowQueryRejectedError
from temporalio.service import RPCError, RPCStatusCode

from bridge._ids import identity_digest
from bridge.actions import ClosedWorkflowPolicy, Invocation, Outcome
from bridge.events import EVENT_SEEN_DIGESTS_QUERY
from bridge.exceptions import WorkflowClosedError
from bridge.temporal.errors import is_namespace_problem

__all__ = [
    "DEFAULT_CLOSED_QUERY_TIMEOUT",
    "QUERY_ATTEMPTS",
    "ClosedRun",
    "ClosedRuns",
    "closed_workflow_outcome",
]

#: How long the loom waits for a closed workflow to say what it saw.
DEFAULT_CLOSED_QUERY_TIMEOUT = timedelta(seconds=10)

#: Queries of one closed run that timed out before its event counts as late.
QUERY_ATTEMPTS = 3

# Timed out: asked again (up to QUERY_ATTEMPTS), then no answer.
_TIMED_OUT = frozenset({RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED})
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


@dataclass(frozen=True)
class ClosedRun:
    """What a closed run answered: its status and the identities it saw (digests)."""

    status: str
    seen: frozenset[str]


class ClosedRuns:
    """Answers of closed runs by run id, the oldest forgotten first past ``max_identities``
    remembered in all (a run counts its identities, at least one)."""

    def __init__(self, max_identities: int = 200_000) -> None:
        self.max_identities = max_identities
        self._runs: OrderedDict[str, ClosedRun] = OrderedDict()
        self._size = 0

    def get(self, run_id: str) -> ClosedRun | None:
        return self._runs.get(run_id)

    def put(self, run_id: str, run: ClosedRun) -> None:
        if run_id in self._runs:
            return
        self._runs[run_id] = run
        self._size += max(1, len(run.seen))
        while self._size > self.max_identities and len(self._runs) > 1:
            _, old = self._runs.popitem(last=False)
            self._size -= max(1, len(old.seen))


async def closed_workflow_outcome(
    client: Client,
    inv: Invocation,
    run_id: str,
    *,
    runs: ClosedRuns | None = None,
    query_timeout: timedelta = DEFAULT_CLOSED_QUERY_TIMEOUT,
    rpc_timeout: timedelta | None = None,
) -> tuple[Outcome, Any]:
    """What to do with ``inv``, refused because the run ``run_id`` of its workflow is closed.

    Args:
        client: The client to describe and query the run with.
        inv: The refused invocation.
        run_id: The closed run (from the refusal's details).
        runs: Answers of closed runs kept from earlier calls (and added to).
        query_timeout: Deadline of the query.
        rpc_timeout: Deadline of the describe call.

    Returns:
        ``(DUPLICATE, run_id)`` when the run saw the event (or is not closed after all),
        ``(LATE, run_id)`` for a late event under ``if_closed=skip``.

    Raises:
        WorkflowClosedError: A late event under ``if_closed=dead-letter``.
        RPCError: The cluster failed (unavailable, namespace...): retry the call.
    """
    known = runs.get(run_id) if runs is not None else None
    answer = "not seen"
    if known is not None:
        status = known.status
    else:
        handle = client.get_workflow_handle(inv.workflow_id, run_id=run_id)
        description = await handle.describe(rpc_timeout=rpc_timeout)
        if description.status is None or description.status.name == "RUNNING":
            return Outcome.DUPLICATE, run_id  # joined rather than refused: nothing is late
        status = description.status.name
        for attempt in range(1, QUERY_ATTEMPTS + 1):
            try:
                digests = await handle.query(
                    EVENT_SEEN_DIGESTS_QUERY, result_type=list[str], rpc_timeout=query_timeout
                )
            except (WorkflowQueryFailedError, WorkflowQueryRejectedError) as err:
                answer = f"no answer: {err}"
            except RPCError as err:
                if err.status not in _NO_ANSWER or is_namespace_problem(err):
                    raise
                answer = f"no answer: {err.status.name}: {err.message}"
                if err.status in _TIMED_OUT and attempt < QUERY_ATTEMPTS:
                    # A busy worker (a restart's redeliveries all ask at once), or one that
                    # just left: the server says "no poller" once none polled for 20 s.
                    continue
            else:
                known = ClosedRun(status, frozenset(digests))
                if runs is not None:
                    runs.put(run_id, known)
            break
    if known is not None and identity_digest(inv.event.key) in known.seen:
        return Outcome.DUPLICATE, run_id
    if inv.if_closed is ClosedWorkflowPolicy.SKIP:
        return Outcome.LATE, run_id
    raise WorkflowClosedError(
        f"route {inv.route!r}: workflow {inv.workflow_id!r} (run {run_id}) is closed "
        f"({status}); event {inv.event.id!r} from {inv.event.source!r} is late ({answer})",
        {"workflow-status": status, "workflow-run-id": run_id},
    )
