"""The loom's exceptions: one root, a class-level ``retriable`` flag, setup vs runtime errors.

The dispatcher decides between retry and dead-letter from the class (``retriable``), never from
string matching. Each runtime error carries a short ``reason`` slug that ends up in the
``loom-error-reason`` dead-letter header and in the ``reason`` label of metrics.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType


class LoomError(Exception):
    """Root of every error the loom raises.

    Attributes:
        retriable: Retry the item (with backoff) instead of dead-lettering it.
        reason: Short slug: the ``loom-dlq-reason`` header and the ``reason`` metric label.
        retry_for: For a retriable error, how many seconds (counted from the first of a run
            of failures with this error) it is retried before it is dead-lettered after all;
            None retries it for as long as it lasts.
        details: Facts for the dead-letter headers, each as ``loom-dlq-<name>``.
        route: The route concerned, when one is (the dead letter's ``loom-dlq-route``).
    """

    retriable: bool = False
    reason: str = "error"
    retry_for: float | None = None
    details: Mapping[str, str] = MappingProxyType({})
    route: str | None = None


class SetupError(LoomError):
    """A configuration or declaration is wrong; raised at start-up, never at the first event."""

    reason = "setup"


class RouteDefinitionError(SetupError):
    """A route is declared wrongly (bad template, missing workflow, conflicting options)."""

    reason = "route-definition"


class SettingsError(SetupError):
    """A setting is missing or invalid; the message names the setting."""

    reason = "settings"


class EmbeddedServerError(SetupError):
    """An embedded server (Temporal dev server, Kafka-compatible broker) could not start."""

    reason = "embedded-server"


# --- runtime: bad input (never retried, dead-lettered) -------------------------------------


class BadInputError(LoomError):
    """The record can never be processed as it is: it goes to the dead-letter topic."""

    reason = "bad-input"


class DecodeError(BadInputError):
    """The Kafka record is not a valid CloudEvent (bytes, headers, attributes)."""

    reason = "decode"


class DataValidationError(BadInputError):
    """The event's ``data`` does not validate against the route's pydantic model."""

    reason = "data-validation"


class UnmatchedEventError(BadInputError):
    """No route matches the event and the unmatched policy is dead-letter."""

    reason = "unmatched"


class TemplateError(BadInputError):
    """A workflow-id (or other) template names a field that the event does not have."""

    reason = "template"


class PayloadTooLargeError(BadInputError):
    """The payload exceeds Temporal's blob size limit (2 MB by default)."""

    reason = "payload-too-large"


class InternalError(LoomError):
    """An unexpected exception while a record was taken (a bug in the loom, or in a route's own
    code): the record is dead-lettered with the exception and where it was raised, and the
    line goes on. Never retried: the same record would raise the same way."""

    reason = "internal"

    @classmethod
    def wrap(cls, exc: BaseException) -> InternalError:
        """The error for ``exc``: its type and message (the traceback's last line), and the
        place it was raised (the traceback's last frame)."""
        text = str(exc)
        message = f"{type(exc).__qualname__}: {text}" if text else type(exc).__qualname__
        frames = traceback.extract_tb(exc.__traceback__)
        if frames:
            last = frames[-1]
            message += f" (at {Path(last.filename).name}:{last.lineno} in {last.name})"
        error = cls(message)
        error.__cause__ = exc
        return error


# --- runtime: Temporal outcomes ------------------------------------------------------------


class TemporalCallError(LoomError):
    """A Temporal call failed."""

    reason = "temporal"


class TransientTemporalError(TemporalCallError):
    """Unavailable, deadline exceeded, resource exhausted...: retried with backoff, never skipped."""

    retriable = True
    reason = "temporal-transient"


class NamespaceUnavailableError(TransientTemporalError):
    """The namespace is missing, not active in this cluster (failover) or not serving.

    Never a reason to dead-letter: every event would go. At start-up a missing namespace is
    a settings error instead (``bridge.temporal.client.check_namespace``).
    """

    reason = "namespace-unavailable"


class PayloadCodecError(TransientTemporalError):
    """The payload codec failed (e.g. its key service is down); nothing reached Temporal."""

    reason = "codec"


class SignalLimitError(TransientTemporalError):
    """The workflow run refused a signal: the per-run signal cap was reached.

    The cap is per run, so it clears once the run continues as new: retried for
    ``retry_for`` seconds, then dead-lettered with this reason.
    """

    reason = "signal-limit"


class PermanentTemporalError(TemporalCallError):
    """Invalid argument, not found...: dead-lettered with its reason."""

    reason = "temporal-permanent"


class WorkflowNotFoundError(PermanentTemporalError):
    """A signal-only route targeted a workflow that does not exist or is closed."""

    reason = "workflow-not-found"


class WorkflowClosedError(PermanentTemporalError):
    """A late event: its workflow closed without seeing it (or cannot say), and the route's
    ``if_closed`` policy is dead-letter. ``details`` name the workflow's status and run."""

    reason = "workflow-closed"

    def __init__(self, message: str, details: Mapping[str, str]) -> None:
        super().__init__(message)
        self.details = MappingProxyType(dict(details))


class BatchRefusedError(PermanentTemporalError):
    """A coalesced call was refused with an answer that is per event (its workflow's run
    closed: each event is a redelivery or late on its own). Never dead-lettered as such: the
    dispatcher splits the call and sends its events one by one."""

    reason = "batch-refused"


# --- runtime: Kafka outcomes of a Temporal call ---------------------------------------------


class ReplyPublishError(LoomError):
    """The reply of an applied update could not be published yet (timeout, broker away).

    Retried with the whole call: the update id makes the update a no-op that returns its
    stored result, so the reply is published once it can be, never dead-lettered.
    """

    retriable = True
    reason = "reply-publish"


class ReplyRefusedError(LoomError):
    """The broker refused the reply for good (too large, not authorized): the request is
    dead-lettered; re-driving it later returns the stored result and publishes again."""

    reason = "reply-refused"


def error_reason(exc: BaseException) -> str:
    """Short slug for an error (``LoomError.reason``, else ``unexpected``)."""
    reason = getattr(exc, "reason", None)
    return reason if isinstance(reason, str) else "unexpected"
