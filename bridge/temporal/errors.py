"""What a Temporal call's failure means for the event: retry, dead-letter, or done already.

:func:`classify_error` maps what the temporalio client raised to the loom's exception classes
(``TransientTemporalError`` is retried, ``PermanentTemporalError`` and its subclasses are
dead-lettered). The gRPC status decides, plus the few answers whose meaning depends on the
call ("already started", "workflow not found"), which the executor reads with the helpers
below.
"""

from __future__ import annotations

import temporalio.api.errordetails.v1 as errordetails_pb
from temporalio.client import WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError, RPCStatusCode

from bridge.exceptions import (
    PermanentTemporalError,
    SignalLimitError,
    TemporalCallError,
    TransientTemporalError,
)

__all__ = ["already_started_run_id", "classify_error", "is_workflow_not_found"]

# Statuses that say "try again later" rather than "this request is wrong". INTERNAL and
# UNKNOWN are included: the server uses them for transient persistence failures, and a
# wrongly retried event stalls its partition visibly, while a wrongly dead-lettered one
# silently leaves the happy path.
_TRANSIENT_STATUSES = frozenset(
    {
        RPCStatusCode.CANCELLED,
        RPCStatusCode.UNKNOWN,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.ABORTED,
        RPCStatusCode.INTERNAL,
        RPCStatusCode.UNAVAILABLE,
        # Credentials expire and get rotated (API keys, mTLS certs), and permissions get
        # fixed: not the event's fault. Dead-lettering would send every event to the
        # dead-letter topic during a misconfiguration; retrying stalls visibly instead.
        RPCStatusCode.UNAUTHENTICATED,
        RPCStatusCode.PERMISSION_DENIED,
    }
)

# The server reports the per-run signal cap only as a message (INVALID_ARGUMENT on 1.32).
_SIGNAL_LIMIT_MESSAGE = "exceeded workflow execution limit for signal events"
# A lazily connecting client raises a plain RuntimeError when it cannot reach the server.
_CONNECT_FAILURE_PREFIX = "Failed client connect"


def classify_error(err: BaseException) -> TemporalCallError | None:
    """Map an error raised by a Temporal client call to the loom's exception class.

    The returned error is not raised; the caller raises it ``from err``. Its message names
    the gRPC status. "Already started" and "not found" are not handled here: their meaning
    depends on the action (see :meth:`TemporalExecutor.execute`).

    Args:
        err: What the temporalio client raised.

    Returns:
        A ``TransientTemporalError``, ``PermanentTemporalError`` or ``SignalLimitError``,
        or None when ``err`` is not a Temporal call failure (a bug: let it propagate).
    """
    if isinstance(err, RPCError):
        status = err.status.name
        if _SIGNAL_LIMIT_MESSAGE in err.message:
            return SignalLimitError(f"{status}: {err.message}")
        if err.status in _TRANSIENT_STATUSES:
            return TransientTemporalError(f"{status}: {err.message}")
        return PermanentTemporalError(f"{status}: {err.message}")
    if isinstance(err, WorkflowUpdateRPCTimeoutOrCancelledError):
        return TransientTemporalError(f"DEADLINE_EXCEEDED: {err}")
    if isinstance(err, WorkflowUpdateFailedError):
        return PermanentTemporalError(f"update failed: {err.cause}")
    if isinstance(err, RuntimeError) and str(err).startswith(_CONNECT_FAILURE_PREFIX):
        return TransientTemporalError(f"UNAVAILABLE: {err}")
    return None


def already_started_run_id(err: RPCError) -> str | None:
    """The existing run's id when ``err`` is "workflow execution already started"."""
    if err.status != RPCStatusCode.ALREADY_EXISTS:
        return None
    details = errordetails_pb.WorkflowExecutionAlreadyStartedFailure()
    for detail in err.grpc_status.details:
        if detail.Unpack(details):
            return details.run_id
    return None


def is_workflow_not_found(err: RPCError) -> bool:
    """NOT_FOUND about the workflow (missing or closed), not about the namespace."""
    if err.status != RPCStatusCode.NOT_FOUND:
        return False
    return not any(
        d.Is(errordetails_pb.NamespaceNotFoundFailure.DESCRIPTOR) for d in err.grpc_status.details
    )
