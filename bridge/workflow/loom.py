"""``LoomWorkflow``: the signal, update and query handlers that feed a workflow's inbox.

A workflow class that subclasses it receives routed events through its :class:`Inbox`: one
by one (``EVENT_SIGNAL``), or several in one call (``EVENTS_SIGNAL``, a coalesced call: the
events queued behind its workflow id in the sidecar, in partition order), each deduplicated
by its own identity. Routes to such a class coalesce by default (``bridge.routing.Route``),
since :func:`takes_batches` can tell from the class that a batch reaches the inbox.

Imported inside Temporal's workflow sandbox: deterministic, no I/O, no module state.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from bridge.events import (
    EVENT_SEEN_DIGESTS_QUERY,
    EVENT_SEEN_QUERY,
    EVENT_SIGNAL,
    EVENT_UPDATE,
    EVENTS_SIGNAL,
    Event,
)
from bridge.workflow.inbox import Inbox

__all__ = ["LoomWorkflow", "takes_batches"]


class LoomWorkflow:
    """Mixin for workflow classes: an :class:`Inbox` fed by the ``loom_event`` signal.

    Restore the carried state at the start of the run (``self.inbox.restore(input.inbox)``);
    events signalled before that are kept and ordered after the carried ones. Override
    :meth:`make_inbox` to change the inbox's limits, and :meth:`on_update` to answer the
    updates of update-with-start routes (each applied once, across continue-as-new too).
    Coalesced calls (``loom_events``) feed the same inbox, event by event, in order.
    The ``loom_seen`` and ``loom_seen_digests`` queries tell whether an event reached this
    workflow (a redelivery) or not (a late event for a closed workflow).
    """

    def make_inbox(self) -> Inbox:
        """Build the inbox (called once per run, on first use)."""
        return Inbox()

    @property
    def inbox(self) -> Inbox:
        """The run's inbox."""
        # Created lazily: signal handlers may run before the subclass's __init__ body is done
        # with, and subclasses need not call super().__init__().
        box: Inbox | None = self.__dict__.get("_loom_inbox")
        if box is None:
            box = self.make_inbox()
            self.__dict__["_loom_inbox"] = box
        return box

    @workflow.signal(name=EVENT_SIGNAL)
    def loom_event(self, payload: dict[str, Any]) -> None:
        """Signal handler of routed events."""
        self.inbox.handle(payload)

    @workflow.signal(name=EVENTS_SIGNAL)
    def loom_events(self, payloads: list[dict[str, Any]]) -> None:
        """Signal handler of coalesced calls: several routed events, in partition order."""
        self.inbox.handle_batch(payloads)

    @workflow.update(name=EVENT_UPDATE)
    async def loom_event_update(self, payload: dict[str, Any]) -> Any:
        """Update handler of update-with-start routes: :meth:`on_update`, once per update."""
        return await self.inbox.apply_update(payload, self.on_update)

    def on_update(self, event: Event) -> Any:
        """Answer a routed update (override; may be async). The result is the reply."""
        raise ApplicationError(
            f"{type(self).__name__} does not answer updates: override on_update",
            type="LoomNoUpdateHandler",
            non_retryable=True,
        )

    @workflow.query(name=EVENT_SEEN_QUERY)
    def loom_seen(self, source: str, id: str) -> bool:
        """Whether the event ``source`` + ``id`` reached this workflow (within the memory)."""
        return self.inbox.has_seen(source, id)

    @workflow.query(name=EVENT_SEEN_DIGESTS_QUERY)
    def loom_seen_digests(self) -> list[str]:
        """Digests of the identities this workflow remembers (the sidecar's closed-run check)."""
        return self.inbox.seen_digests()


def takes_batches(cls: type) -> bool:
    """Whether coalesced calls to the workflow class ``cls`` reach its inbox as its events
    would one by one: it subclasses :class:`LoomWorkflow` and keeps LoomWorkflow's own
    handlers of ``loom_event`` and ``loom_events`` (an override may do something else with
    an event, which a batch would skip)."""
    return (
        isinstance(cls, type)
        and issubclass(cls, LoomWorkflow)
        and getattr(cls, "loom_event", None) is LoomWorkflow.loom_event
        and getattr(cls, "loom_events", None) is LoomWorkflow.loom_events
    )
