"""The continue-as-new matrix's workflows, importing the loom's workflow side inside ``workflow.unsafe.imports_passed_through()``, as the tutorial does.

The same code as :mod:`flows.toplevel` but for the import block between the two markers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from temporalio import workflow

# --- the imports (the only lines that differ between flows.toplevel and flows.passed) ---
with workflow.unsafe.imports_passed_through():
    from bridge.workflow import EntityWorkflow, Inbox, InboxState, LoomWorkflow, handles
    from flows.models import CarriedIds, CarriedModel, Item, Kind, Ledger, apply
# --- end of the imports ---

#: The workflow types are named after this module (``toplevel.Room``, ``passed.Room``...).
STYLE = __name__.rpartition(".")[2]
#: Signals per run after which the inbox continues as new: many runs for a short stream.
SIGNALS_PER_RUN = 1
#: Events each workflow gets (the workflows that finish end after this many).
EVENTS = 24


class LocalItem(BaseModel):
    """An item, as a model of the workflow's own module."""

    room: str
    seq: int
    at: datetime
    kind: Kind


class LocalLedger(BaseModel):
    """A nested state model in the workflow's own module (the same fields as ``Ledger``)."""

    name: str = ""
    items: list[LocalItem] = []
    last_at: datetime | None = None
    last_kind: Kind | None = None
    large: int = 0


@workflow.defn(name=f"{STYLE}.Room")
class Room(EntityWorkflow[Ledger]):
    """An entity whose state model lives in another module (started with a state)."""

    def make_inbox(self) -> Inbox:
        return Inbox(max_signals_per_run=SIGNALS_PER_RUN)

    @handles("cas.item")
    def item(self, item: Item) -> None:
        apply(self.state, item)


@workflow.defn(name=f"{STYLE}.LocalRoom")
class LocalRoom(EntityWorkflow[LocalLedger]):
    """An entity whose state model lives in this module (started without a state)."""

    def make_inbox(self) -> Inbox:
        return Inbox(max_signals_per_run=SIGNALS_PER_RUN)

    @handles("cas.item")
    def item(self, item: LocalItem) -> None:
        state = self.state
        state.items.append(item)
        state.last_at = item.at
        state.last_kind = item.kind
        state.large += item.kind is Kind.LARGE


@workflow.defn(name=f"{STYLE}.Pending")
class Pending(LoomWorkflow):
    """Carries only an ``InboxState``: leaves every event queued, continuing as new, until all
    came, then takes them in one go (the pending events cross every run)."""

    def make_inbox(self) -> Inbox:
        return Inbox(max_signals_per_run=SIGNALS_PER_RUN)

    @workflow.run
    async def run(self, carried: InboxState | None = None) -> dict[str, Any]:
        if carried is not None:
            self.inbox.restore(carried)
        while True:
            await workflow.wait_condition(
                lambda: len(self.inbox) >= EVENTS or self.inbox.should_continue_as_new()
            )
            if len(self.inbox) >= EVENTS:
                taken = [self.inbox.take() for _ in range(len(self.inbox))]
                return {"taken": [e.id for e in taken if e is not None], "runs": self.inbox.runs}
            await self.inbox.continue_as_new_if_needed(lambda inbox: inbox)


@workflow.defn(name=f"{STYLE}.DataclassCarrier")
class DataclassCarrier(LoomWorkflow):
    """Carries its inbox in a user dataclass."""

    def make_inbox(self) -> Inbox:
        return Inbox(max_signals_per_run=SIGNALS_PER_RUN)

    @workflow.run
    async def run(self, carried: CarriedIds | None = None) -> dict[str, Any]:
        taken = carried.taken if carried is not None else []
        if carried is not None:
            self.inbox.restore(carried.inbox)
        while len(taken) < EVENTS:
            event = await self.inbox.next()
            assert event is not None
            taken.append(event.id)
            await self.inbox.continue_as_new_if_needed(
                lambda inbox: CarriedIds(inbox=inbox, taken=taken)
            )
        return {"taken": taken, "runs": self.inbox.runs}


@workflow.defn(name=f"{STYLE}.ModelCarrier")
class ModelCarrier(LoomWorkflow):
    """Carries its inbox in a user pydantic model, with a nested model beside it."""

    def make_inbox(self) -> Inbox:
        return Inbox(max_signals_per_run=SIGNALS_PER_RUN)

    @workflow.run
    async def run(self, carried: CarriedModel | None = None) -> dict[str, Any]:
        state = carried if carried is not None else CarriedModel()
        self.inbox.restore(state.inbox)
        while len(state.taken) < EVENTS:
            event = await self.inbox.next()
            assert event is not None
            state.taken.append(event.id)
            state.last = Item.model_validate(event.data)
            await self.inbox.continue_as_new_if_needed(
                lambda inbox: state.model_copy(update={"inbox": inbox})
            )
        assert state.last is not None
        return {"taken": state.taken, "runs": self.inbox.runs, "last": state.last.seq}


#: The workflows of this module, for the worker.
WORKFLOWS = [Room, LocalRoom, Pending, DataclassCarrier, ModelCarrier]
