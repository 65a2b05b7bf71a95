"""The ``Cancel`` action's call: request a workflow's cancellation, and read what it did.

``RequestCancelWorkflowExecution`` goes raw through ``client.workflow_service`` with the
invocation's deterministic request id and its reason (the workflow reads it with
``workflow.cancellation_reason()``). What the server answers (measured on the dev server 1.32):

- a running workflow: OK, and the workflow sees the cancellation at its current ``await``;
- the same request again, or another one once a cancel was requested: OK, a no-op (one
  ``WorkflowExecutionCancelRequested`` event in the history);
- a closed workflow (completed, failed, cancelled...): OK, a no-op;
- no such workflow id: NOT_FOUND.

OK does not say which, so the workflow is described after the request. Running: the cancel
was delivered. Closed, with ``cancel_requested`` in its extended info (kept on closed runs):
the run had been asked to cancel, by this event before (a redelivery) or by another: a
duplicate. Closed without it: the cancel came after the workflow ended and follows
``if_missing`` like a missing workflow: skipped and counted, or dead-lettered
(``WorkflowClosedError``, reason ``workflow-closed``, the status in
``loom-dlq-workflow-status``). A run that this very request cancelled and that closed before
the description counts as a duplicate rather than as delivered: either way the event had its
effect.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import temporalio.api.common.v1 as common_pb
import temporalio.api.workflowservice.v1 as wsv1
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from bridge.actions import Invocation, MissingWorkflowPolicy, Outcome
from bridge.exceptions import WorkflowClosedError, WorkflowNotFoundError
from bridge.temporal.errors import is_workflow_not_found

__all__ = ["cancel_workflow"]

_OPEN = frozenset({0, int(WorkflowExecutionStatus.RUNNING)})  # 0: unspecified


async def cancel_workflow(
    client: Client,
    inv: Invocation,
    *,
    rpc_timeout: timedelta | None = None,
    rpc_retry: bool = False,
) -> tuple[Outcome, Any]:
    """Request the cancellation of ``inv.workflow_id`` and say what it did.

    Returns:
        ``(DELIVERED, run_id)`` for a running workflow, ``(DUPLICATE, run_id)`` for a closed
        one that had been asked to cancel, ``(SKIPPED, run_id or None)`` for a closed or
        missing one under ``if_missing=skip``.

    Raises:
        WorkflowNotFoundError: No such workflow, under ``if_missing=dead-letter``.
        WorkflowClosedError: Closed before any cancel reached it, under
            ``if_missing=dead-letter``.
        RPCError: Anything else (the caller classifies it: retry or dead-letter).
    """
    execution = common_pb.WorkflowExecution(workflow_id=inv.workflow_id)
    request = wsv1.RequestCancelWorkflowExecutionRequest(
        namespace=client.namespace,
        workflow_execution=execution,
        identity=client.identity,
        request_id=inv.request_id,
        reason=inv.reason or "",
    )
    describe = wsv1.DescribeWorkflowExecutionRequest(
        namespace=client.namespace, execution=execution
    )
    service = client.workflow_service
    try:
        await service.request_cancel_workflow_execution(
            request, retry=rpc_retry, timeout=rpc_timeout
        )
        described = await service.describe_workflow_execution(
            describe, retry=rpc_retry, timeout=rpc_timeout
        )
    except RPCError as err:
        if not is_workflow_not_found(err):
            raise
        if inv.if_missing is MissingWorkflowPolicy.SKIP:
            return Outcome.SKIPPED, None
        raise WorkflowNotFoundError(
            f"{err.status.name}: cancel of workflow {inv.workflow_id!r} "
            f"(route {inv.route!r}): {err.message}"
        ) from err
    info = described.workflow_execution_info
    run_id = info.execution.run_id
    if int(info.status) in _OPEN:
        return Outcome.DELIVERED, run_id
    if described.workflow_extended_info.cancel_requested:
        return Outcome.DUPLICATE, run_id
    if inv.if_missing is MissingWorkflowPolicy.SKIP:
        return Outcome.SKIPPED, run_id
    status = WorkflowExecutionStatus(int(info.status)).name
    raise WorkflowClosedError(
        f"route {inv.route!r}: workflow {inv.workflow_id!r} (run {run_id}) closed ({status}) "
        f"before event {inv.event.id!r} from {inv.event.source!r} asked to cancel it",
        {"workflow-status": status, "workflow-run-id": run_id},
    )
