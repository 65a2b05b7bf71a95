"""The reference application's workflows: the order saga (a loop) and a customer's credit
(an entity).

**The order saga** is a sequential process, so it is written as a loop over the inbox
(``LoomWorkflow``): do a step, wait for its reply with a timeout, decide, go on or undo.

``order.placed`` (routed by signal-with-start, workflow id ``order-<order_id>``) starts the
saga. For each step it emits a command to Kafka with ``emit()`` and waits, with a durable
timeout, for the participant's reply, which the loom signals back into the saga's inbox:

    inventory.reserve -> inventory.reserved | inventory.rejected
    payment.charge    -> payment.charged    | payment.declined
    shipment.ship     -> shipment.shipped   | shipment.failed

Each successful step pushes its undo (``inventory.release``, ``payment.refund``) on the
compensation stack; a refusal or a timeout runs the stack newest first, each undo waiting for
its confirmation. The saga ends ``completed`` or ``compensated`` and says so on Kafka
(``order.completed`` / ``order.compensated``).

**Cancellation.** ``order.cancelled`` (the ``Cancel`` route) requests the saga's cancellation;
Temporal delivers it at the saga's current ``await`` (``workflow.cancellation_reason()`` is
the route's reason). Until its outcome is decided, the saga then undoes what it did, the step
in flight included (its command may be out), and ends ``cancelled``: it *returns* an
``OrderResult`` with that status, so Temporal records the workflow COMPLETED, not CANCELED
(re-raising would lose the result: the journal and the compensation errors) and announces it
with ``order.cancellation-confirmed``. A cancel that lands while compensating, or once the
outcome is decided, changes nothing: the saga finishes what it was doing.

**A customer's credit** (``CustomerCredit``) is an entity: no sequence, only facts that move
a state, whatever their order between orders. The payment service's facts
(``payment.charged|refunded|declined``) reach it too (routed by customer), one handler each.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, TypeVar

from temporalio import workflow
from temporalio.exceptions import ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from bridge.events import Event
    from bridge.workflow import EntityWorkflow, LoomWorkflow, emit, event_data, handles
    from bridge.workflow.saga import Compensations
    from workflows.models import (
        CommandData,
        CustomerCreditState,
        OrderPlaced,
        OrderRef,
        OrderResult,
        OrderSagaInput,
        PaymentFact,
        SagaStatus,
        StepRecord,
    )

__all__ = ["OUTCOME_EVENTS", "STEPS", "CustomerCredit", "OrderSaga", "SagaStep"]


@dataclass(frozen=True)
class SagaStep:
    """One step of the saga: a command, its two possible replies, and its undo.

    Attributes:
        command: Event type of the command.
        succeeded: Reply type when the participant did it.
        refused: Reply type when the participant refused.
        undo: Command undoing the step, or None when there is nothing to undo.
        undone: Reply type confirming the undo.
    """

    command: str
    succeeded: str
    refused: str
    undo: str | None = None
    undone: str | None = None


STEPS = (
    SagaStep(
        "inventory.reserve",
        "inventory.reserved",
        "inventory.rejected",
        undo="inventory.release",
        undone="inventory.released",
    ),
    SagaStep(
        "payment.charge",
        "payment.charged",
        "payment.declined",
        undo="payment.refund",
        undone="payment.refunded",
    ),
    SagaStep("shipment.ship", "shipment.shipped", "shipment.failed"),
)


#: The event the saga announces its outcome with, by status.
OUTCOME_EVENTS: dict[SagaStatus, str] = {
    "completed": "order.completed",
    "compensated": "order.compensated",
    "cancelled": "order.cancellation-confirmed",
}

T = TypeVar("T")


@workflow.defn
class OrderSaga(LoomWorkflow):
    """Reserve inventory, charge payment, ship; compensate in reverse order on failure or
    on a cancel request."""

    def __init__(self) -> None:
        self._order_id = ""
        self._status: SagaStatus = "running"
        self._reason: str | None = None
        self._journal: list[StepRecord] = []
        self._compensation_errors: list[str] = []
        self._compensations = Compensations()
        self._undo_timeout = timedelta(seconds=30)
        self._command: CommandData | None = None
        self._step: SagaStep | None = None  # the step whose reply is awaited

    @workflow.run
    async def run(self, input: OrderSagaInput) -> OrderResult:
        """Run the saga for the order named in ``input``."""
        self._order_id = input.order_id
        self._undo_timeout = timedelta(seconds=input.compensation_timeout_s)
        try:
            return await self._steps(timedelta(seconds=input.step_timeout_s))
        except BaseException as exc:
            if not _cancel_requested(exc):
                raise
        return await self._cancelled(workflow.cancellation_reason() or "cancelled")

    async def _steps(self, step_timeout: timedelta) -> OrderResult:
        placed = await self.inbox.wait_for_event("order.placed", timeout=step_timeout)
        if placed is None:
            # Started by something else than order.placed: nothing was done, nothing to undo.
            return await self._finish("compensated", "no order.placed received")
        self._record("received", placed.type)
        command = self._command = CommandData.of(event_data(placed, OrderPlaced))
        for step in STEPS:
            self._step = step
            await emit(step.command, command)
            self._record("sent", step.command)
            reply = await self._reply(step, step_timeout)
            self._step = None
            if reply is not None and reply.type == step.succeeded:
                if step.undo is not None:
                    self._compensations.add(self._undo, step, command)
                continue
            if reply is None:
                reason = f"no reply to {step.command} within {step_timeout.total_seconds():g}s"
                # The step may still happen after the timeout: undo it as well.
                if step.undo is not None:
                    self._compensations.add(self._undo, step, command)
            else:
                reason = event_data(reply, OrderRef).reason or reply.type
            await self._compensate()
            return await self._finish("compensated", reason)
        return await self._finish("completed", None)

    async def _cancelled(self, reason: str) -> OrderResult:
        # Cancelled before the outcome was decided (a cancel is delivered once: from here on
        # every await runs normally). The step in flight may still happen: undo it as well.
        step, command = self._step, self._command
        self._record("cancelled", step.command if step is not None else "order.placed")
        if step is not None and step.undo is not None and command is not None:
            self._compensations.add(self._undo, step, command)
        await self._compensate()
        return await self._finish("cancelled", reason)

    async def _reply(self, step: SagaStep, timeout: timedelta) -> Event | None:
        wanted = (step.succeeded, step.refused)
        reply = await self.inbox.wait_for_event(where=lambda e: e.type in wanted, timeout=timeout)
        if reply is None:
            self._record("timeout", step.command)
        else:
            self._record("received", reply.type)
        return reply

    async def _compensate(self) -> None:
        errors = await self._compensations.compensate()
        self._compensation_errors = [str(err) for err in errors]

    async def _undo(self, step: SagaStep, command: CommandData) -> None:
        assert step.undo is not None and step.undone is not None
        undo, undone, timeout = step.undo, step.undone, self._undo_timeout
        # A cancel request that lands while compensating must not cut the compensation short.
        await self._through_cancel(lambda: emit(undo, command), undo)
        self._record("sent", undo)
        done = await self._through_cancel(
            lambda: self.inbox.wait_for_event(undone, timeout=timeout), undo
        )
        if done is None:
            self._record("timeout", undo)
            raise ApplicationError(f"{undo} not confirmed within {timeout}")
        self._record("received", done.type)

    async def _finish(self, status: SagaStatus, reason: str | None) -> OrderResult:
        self._status, self._reason = status, reason
        outcome, result = OUTCOME_EVENTS[status], self.snapshot()
        # Decided: a cancel request that comes now is too late to change the outcome.
        await self._through_cancel(lambda: emit(outcome, result), outcome)
        self._record("sent", outcome)
        return self.snapshot()

    async def _through_cancel(self, make: Callable[[], Awaitable[T]], doing: str) -> T:
        """Await ``make()``; if a cancel request interrupts it, note it and await a fresh one.

        Temporal delivers a cancel request once, so the second await runs to its end. An
        interrupted command may have gone out all the same: the participants' undo commands
        are idempotent, and a second confirmation stays unread in the inbox.
        """
        try:
            return await make()
        except BaseException as exc:
            if not _cancel_requested(exc):
                raise
        self._record("cancelled", doing)
        return await make()

    def _record(
        self, direction: Literal["sent", "received", "timeout", "cancelled"], type: str
    ) -> None:
        self._journal.append(StepRecord(direction=direction, type=type))

    @workflow.query
    def snapshot(self) -> OrderResult:
        """The saga's state so far (status ``running`` until it ends)."""
        return OrderResult(
            order_id=self._order_id,
            status=self._status,
            reason=self._reason,
            journal=list(self._journal),
            compensation_errors=list(self._compensation_errors),
        )


def _cancel_requested(exc: BaseException) -> bool:
    # A cancel request from the server (the order.cancelled route) arrives as a cancellation
    # at the current await; so does an eviction from the worker's cache, without a reason.
    return is_cancelled_exception(exc) and workflow.cancellation_reason() is not None


@workflow.defn
class CustomerCredit(EntityWorkflow[CustomerCreditState]):
    """A customer's running credit: what the payment facts did (workflow id ``credit-<customer>``)."""

    @handles("payment.charged")
    def charged(self, payment: PaymentFact) -> None:
        """A payment was charged: it counts against the customer's credit."""
        self.state.balance += payment.amount
        self.state.charges += 1

    @handles("payment.refunded")
    def refunded(self, payment: PaymentFact) -> None:
        """A payment was refunded: it no longer counts."""
        self.state.balance -= payment.amount
        self.state.refunds += 1

    @handles("payment.declined")
    def declined(self, payment: PaymentFact) -> None:
        """A payment was declined: nothing moved, but it is worth knowing."""
        self.state.declined += 1
