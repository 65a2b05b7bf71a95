"""What a Temporal call's failure means for the event: retry, dead-letter, or done already.

:func:`classify_error` maps what the temporalio client raised to the loom's exception classes
(``TransientTemporalError`` and its subclasses are retried, ``PermanentTemporalError`` and its
subclasses are dead-lettered). The gRPC status decides, plus the details that name the
namespace, plus the few answers whose meaning depends on the call ("already started",
"workflow not found"), which the executor reads with the helpers below.

A payload codec's failure reaches the caller as the codec's own exception (a KMS outage looks
like any ``ConnectionError``): :class:`CodecGuard` wraps the codec so that it raises
``PayloadCodecError`` instead, which is retried.
"""

from __future__ import annotations

from collections.abc import Sequence

import temporalio.api.common.v1 as common_pb
import temporalio.api.errordetails.v1 as errordetails_pb
from temporalio.client import WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.converter import PayloadCodec, SerializationContext, WithSerializationContext
from temporalio.service import RPCError, RPCStatusCode

from bridge.exceptions import (
    LoomError,
    NamespaceUnavailableError,
    PayloadCodecError,
    PermanentTemporalError,
    SignalLimitError,
    TemporalCallError,
    TransientTemporalError,
)

__all__ = [
    "CodecGuard",
    "already_started_run_id",
    "classify_error",
    "is_namespace_problem",
    "is_workflow_not_found",
]

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
        # Every FAILED_PRECONDITION a call of the loom meets is a state of the cluster or of
        # the workflow that passes: namespace not active in this cluster (failover), workflow
        # task in a failed state (until a fixed worker is deployed), no poller on the task
        # queue. None is about the event.
        RPCStatusCode.FAILED_PRECONDITION,
    }
)

# Details that say "the namespace", not "this workflow" or "this request".
_NAMESPACE_DETAILS = (
    errordetails_pb.NamespaceNotFoundFailure.DESCRIPTOR,
    errordetails_pb.NamespaceNotActiveFailure.DESCRIPTOR,
    errordetails_pb.NamespaceUnavailableFailure.DESCRIPTOR,
    errordetails_pb.NamespaceInvalidStateFailure.DESCRIPTOR,
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
        A ``TransientTemporalError`` (``NamespaceUnavailableError``, ``SignalLimitError``)
        or a ``PermanentTemporalError``, or None when ``err`` is not a Temporal call failure
        (a bug: let it propagate).
    """
    if isinstance(err, RPCError):
        status = err.status.name
        if _SIGNAL_LIMIT_MESSAGE in err.message:
            return SignalLimitError(f"{status}: {err.message}")
        if is_namespace_problem(err):
            return NamespaceUnavailableError(f"{status}: {err.message}")
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


def is_namespace_problem(err: RPCError) -> bool:
    """The error is about the namespace (missing, not active here, unavailable, bad state)."""
    return any(d.Is(desc) for d in err.grpc_status.details for desc in _NAMESPACE_DETAILS)


def is_workflow_not_found(err: RPCError) -> bool:
    """NOT_FOUND about the workflow (missing or closed), not about the namespace."""
    return err.status == RPCStatusCode.NOT_FOUND and not is_namespace_problem(err)


class CodecGuard(PayloadCodec, WithSerializationContext):
    """A payload codec whose failures say what they are: ``PayloadCodecError`` (retried).

    The temporalio client lets a codec's exception through unchanged, so without this a KMS
    outage would look like any bug and dead-letter every event. A codec that means to refuse
    one payload for good raises a ``LoomError`` (e.g. ``BadInputError``): that goes through.

    Args:
        codec: The configured codec.
    """

    def __init__(self, codec: PayloadCodec) -> None:
        self.codec = codec

    async def encode(self, payloads: Sequence[common_pb.Payload]) -> list[common_pb.Payload]:
        try:
            return await self.codec.encode(payloads)
        except LoomError:
            raise
        except Exception as exc:
            raise self._failed("encode", exc) from exc

    async def decode(self, payloads: Sequence[common_pb.Payload]) -> list[common_pb.Payload]:
        try:
            return await self.codec.decode(payloads)
        except LoomError:
            raise
        except Exception as exc:
            raise self._failed("decode", exc) from exc

    def with_context(self, context: SerializationContext) -> CodecGuard:
        if not isinstance(self.codec, WithSerializationContext):
            return self
        inner = self.codec.with_context(context)
        return self if inner is self.codec else CodecGuard(inner)

    def _failed(self, what: str, exc: Exception) -> PayloadCodecError:
        return PayloadCodecError(
            f"payload codec {type(self.codec).__qualname__} failed to {what}: "
            f"{type(exc).__name__}: {exc}"
        )
