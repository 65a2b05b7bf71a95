"""What workflow code imports: entities, the inbox, ``LoomWorkflow``, ``emit``, ``request``, sagas.

**The sandbox rule.** Everything in this package runs inside Temporal's workflow sandbox:
deterministic, no I/O, no threads, no clocks but ``workflow.now()``, no module state. It may
import only the standard library, ``temporalio`` (``workflow``, ``common``, ``exceptions``),
``pydantic``, and the loom's sandbox-safe modules (:mod:`bridge.events`, :mod:`bridge._ids`,
this package). ``tests/test_sandbox.py`` imports it inside the sandbox and fails if it pulls
in aiokafka or anything that does I/O. Workflow modules may import it inside
``workflow.unsafe.imports_passed_through()`` (it holds no state of its own).

- entities (:mod:`bridge.workflow.entity`, :mod:`bridge.workflow.handlers`):
  ``EntityWorkflow[State]`` runs the inbox's loop for you, hands each event to the method
  marked ``@handles(type)`` and carries the state across continue-as-new;
- inbound (:mod:`bridge.workflow.inbox`): routed events arrive as signals, one by one or
  several in one coalesced call; the ``Inbox`` drops repeats by CloudEvent identity and
  carries its memory and unprocessed events across continue-as-new (guarantee 2a), bounded
  in bytes (:mod:`bridge.workflow.memory`: identity digests); ``LoomWorkflow``
  (:mod:`bridge.workflow.loom`) feeds it, answers routed updates once each and the
  ``loom_seen`` query;
- outbound (:mod:`bridge.workflow.outbound`): ``emit`` publishes through the ``loom.publish``
  activity with deterministic ids (guarantee 7), ``request`` awaits the reply;
- sagas (:mod:`bridge.workflow.saga`): ``Compensations``.
"""

from __future__ import annotations

from bridge._ids import emitted_event_id
from bridge.events import CAUSATION, CAUSATION_ID, CORRELATION, CORRELATION_ID, EVENT_SIGNAL, Event
from bridge.workflow.entity import (
    EntityInput,
    EntityStats,
    EntityWorkflow,
    EventPolicy,
    EventRef,
    InvalidEventDataError,
    InvalidStateError,
    UnhandledEventError,
)
from bridge.workflow.handlers import EntityHandler, handles
from bridge.workflow.inbox import (
    DEFAULT_CARRY_LIMIT,
    DEFAULT_MAX_CARRIED_BYTES,
    DEFAULT_MAX_SIGNALS_PER_RUN,
    DEFAULT_SEEN_LIMIT,
    DEFAULT_UPDATE_RESULTS_LIMIT,
    EventMatcher,
    Inbox,
    InboxState,
)
from bridge.workflow.loom import LoomWorkflow
from bridge.workflow.outbound import (
    PUBLISH_ACTIVITY,
    ContentMode,
    PublishRequest,
    PublishResult,
    RequestTimeoutError,
    build_event,
    emit,
    event_data,
    request,
)
from bridge.workflow.saga import Compensation, Compensations

__all__ = [
    "CAUSATION",
    "CAUSATION_ID",
    "CORRELATION",
    "CORRELATION_ID",
    "DEFAULT_CARRY_LIMIT",
    "DEFAULT_MAX_CARRIED_BYTES",
    "DEFAULT_MAX_SIGNALS_PER_RUN",
    "DEFAULT_SEEN_LIMIT",
    "DEFAULT_UPDATE_RESULTS_LIMIT",
    "EVENT_SIGNAL",
    "PUBLISH_ACTIVITY",
    "Compensation",
    "Compensations",
    "ContentMode",
    "EntityHandler",
    "EntityInput",
    "EntityStats",
    "EntityWorkflow",
    "Event",
    "EventMatcher",
    "EventPolicy",
    "EventRef",
    "Inbox",
    "InboxState",
    "InvalidEventDataError",
    "InvalidStateError",
    "LoomWorkflow",
    "PublishRequest",
    "PublishResult",
    "RequestTimeoutError",
    "UnhandledEventError",
    "build_event",
    "emit",
    "emitted_event_id",
    "event_data",
    "handles",
    "request",
]
