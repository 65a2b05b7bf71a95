"""The entity workflows of ``tests/test_entity.py``: the device of issue 17, the account,
the counters of the policy and failure tests, the trail and the notebook.

They live here, not in the test module, because Temporal's sandbox re-imports a workflow's
module on every run, and pytest rewrites the asserts of a test module when it is imported.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import workflow

from bridge.events import Event
from bridge.workflow import (
    EntityInput,
    EntityWorkflow,
    EventPolicy,
    Inbox,
    InboxState,
    emit,
    handles,
    request,
)

# --- the device ------------------------------------------------------------------------------


class Reading(BaseModel):
    seq: int
    value: int


class DeviceState(BaseModel):
    readings: int = 0
    total: int = 0
    last_seq: int = -1
    gaps: int = 0  # readings whose seq did not follow the previous one


@workflow.defn
class Device(EntityWorkflow[DeviceState]):
    """A device's running totals, moved by its readings (issue 17's example)."""

    @handles("device.reading")
    def reading(self, reading: Reading) -> None:
        state = self.state
        state.gaps += reading.seq != state.last_seq + 1
        state.readings += 1
        state.total += reading.value
        state.last_seq = reading.seq


# Test harness only: a small per-run signal limit, so that a stream crosses many runs, and a
# record of the seqs each run took (carried nowhere: kept in the run's memo when it
# continues-as-new, answered by a query in the run still open).
@workflow.defn
class SmallRunsDevice(Device):
    signals_per_run = 2_000

    def make_inbox(self) -> Inbox:
        return Inbox(max_signals_per_run=self.signals_per_run)

    async def dispatch(self, event: Event) -> None:
        await super().dispatch(event)
        self.__dict__.setdefault("taken", []).append(event.data["seq"])

    def next_input(self, inbox: InboxState) -> EntityInput[DeviceState]:
        workflow.upsert_memo({"taken": self.__dict__.get("taken", [])})
        return super().next_input(inbox)

    @workflow.query
    def taken(self) -> list[int]:
        return list(self.__dict__.get("taken", []))


@workflow.defn
class TinyRunsDevice(SmallRunsDevice):
    """The same device, continuing-as-new every 60 signals: the default run's short stream."""

    signals_per_run = 60


# --- sync and async handlers, glob handlers, finishing ---------------------------------------


class Order(BaseModel):
    order_id: str
    amount: int


class AccountState(BaseModel):
    balance: int = 0
    orders: list[str] = []
    notes: list[str] = []
    closing: str | None = None


@workflow.defn
class Account(EntityWorkflow[AccountState]):
    """Charges orders by request/reply, emits what it did, keeps notes, closes on confirmation."""

    @handles("order.placed")
    async def placed(self, order: Order) -> None:
        reply = await request(
            "payment.charge", order, reply_type="payment.*", timeout=timedelta(seconds=30)
        )
        if reply.type == "payment.charged":
            self.state.balance += order.amount
            self.state.orders.append(order.order_id)
            await emit("order.accepted", order)

    @handles("note.*")
    def note(self, data: Any, event: Event) -> None:
        self.state.notes.append(f"{event.type}:{data}")

    @handles("account.close")
    async def close(self, data: Any) -> None:
        self.state.closing = "waiting"
        confirmed = await self.inbox.wait_for_event("account.confirmed", timeout=30)
        self.state.closing = "confirmed" if confirmed is not None else "timed out"
        self.finish({"balance": self.state.balance, "orders": self.state.orders})


# --- the unhandled-type policy and invalid data ----------------------------------------------


class Tick(BaseModel):
    n: int


class CountState(BaseModel):
    count: int = 0
    total: int = 0


class Counter(EntityWorkflow[CountState]):
    @handles("tick")
    def tick(self, tick: Tick) -> None:
        self.state.count += 1
        self.state.total += tick.n


@workflow.defn
class LenientCounter(Counter):
    unhandled = EventPolicy.IGNORE
    invalid = EventPolicy.IGNORE


@workflow.defn
class StrictCounter(Counter):
    unhandled = EventPolicy.FAIL


@workflow.defn(name="StrictCounter")
class FixedStrictCounter(StrictCounter):
    @handles("tock")
    def tock(self, data: Any) -> None:
        pass


# --- several events in one signal (a coalesced call) -----------------------------------------


class Trail(BaseModel):
    ns: list[int] = []


@workflow.defn
class BatchFedTrail(EntityWorkflow[Trail]):
    """Records the ticks in the order taken; coalesced calls (``loom_events``, several events
    in one signal, in partition order) reach it as they reach any ``LoomWorkflow``."""

    @handles("tick")
    def tick(self, tick: Tick) -> None:
        self.state.ns.append(tick.n)

    def make_inbox(self) -> Inbox:
        return Inbox(max_signals_per_run=2)  # a coalesced call counts as one signal


# --- a handler that raises, and a worker restart ---------------------------------------------


POISON = 13


@workflow.defn(name="FlakyCounter")
class BuggyCounter(Counter):
    """Applies the tick, then trips over the poison: the workflow task fails."""

    @handles("tick")
    def tick(self, tick: Tick) -> None:
        super().tick(tick)
        if tick.n == POISON:
            raise RuntimeError(f"bug: cannot take {tick.n}")

    def make_inbox(self) -> Inbox:
        return Inbox(max_signals_per_run=10)


@workflow.defn(name="FlakyCounter")
class FixedCounter(Counter):
    def make_inbox(self) -> Inbox:
        return Inbox(max_signals_per_run=10)


# --- the state counts in the inbox's byte budget ---------------------------------------------


class Note(BaseModel):
    text: str


class Notebook(BaseModel):
    notes: list[str] = []


@workflow.defn
class NotebookEntity(EntityWorkflow[Notebook]):
    """Keeps every note: a state that grows by each event, toward the inbox's byte budget."""

    @handles("note")
    def note(self, note: Note) -> None:
        self.state.notes.append(note.text)

    def make_inbox(self) -> Inbox:
        # Neither Temporal's suggestion nor the signal count comes near: only bytes can end a run.
        return Inbox(seen_limit=100, max_signals_per_run=1_000_000, max_carried_bytes=20_000)

