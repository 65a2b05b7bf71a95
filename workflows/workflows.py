"""The order saga: choreographed participants, orchestrated by one Temporal workflow.

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
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from bridge.events import Event
    from bridge.workflow import LoomWorkflow, emit, event_data
    from bridge.workflow.saga import Compensations
    from workflows.models import (
        CommandData,
        OrderPlaced,
        OrderRef,
        OrderResult,
        OrderSagaInput,
        SagaStatus,
        StepRecord,
    )

__all__ = ["STEPS", "OrderSaga", "SagaStep"]


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


@workflow.defn
class OrderSaga(LoomWorkflow):
    """Reserve inventory, charge payment, ship; compensate in reverse order on failure."""

    def __init__(self) -> None:
        self._order_id = ""
        self._status: SagaStatus = "running"
        self._reason: str | None = None
        self._journal: list[StepRecord] = []
        self._compensation_errors: list[str] = []

    @workflow.run
    async def run(self, input: OrderSagaInput) -> OrderResult:
        """Run the saga for the order named in ``input``."""
        self._order_id = input.order_id
        step_timeout = timedelta(seconds=input.step_timeout_s)
        placed = await self.inbox.wait_for_event("order.placed", timeout=step_timeout)
        if placed is None:
            # Started by something else than order.placed: nothing was done, nothing to undo.
            return await self._finish("compensated", "no order.placed received")
        self._record("received", placed.type)
        order = event_data(placed, OrderPlaced)
        command = CommandData.of(order)

        compensations = Compensations()
        undo_timeout = timedelta(seconds=input.compensation_timeout_s)
        for step in STEPS:
            await emit(step.command, command)
            self._record("sent", step.command)
            reply = await self._reply(step, step_timeout)
            if reply is not None and reply.type == step.succeeded:
                if step.undo is not None:
                    compensations.add(self._undo, step, command, undo_timeout)
                continue
            if reply is None:
                reason = f"no reply to {step.command} within {input.step_timeout_s:g}s"
                # The step may still happen after the timeout: undo it as well.
                if step.undo is not None:
                    compensations.add(self._undo, step, command, undo_timeout)
            else:
                reason = event_data(reply, OrderRef).reason or reply.type
            errors = await compensations.compensate()
            self._compensation_errors = [str(err) for err in errors]
            return await self._finish("compensated", reason)
        return await self._finish("completed", None)

    async def _reply(self, step: SagaStep, timeout: timedelta) -> Event | None:
        wanted = (step.succeeded, step.refused)
        reply = await self.inbox.wait_for_event(where=lambda e: e.type in wanted, timeout=timeout)
        if reply is None:
            self._record("timeout", step.command)
        else:
            self._record("received", reply.type)
        return reply

    async def _undo(self, step: SagaStep, command: CommandData, timeout: timedelta) -> None:
        assert step.undo is not None and step.undone is not None
        await emit(step.undo, command)
        self._record("sent", step.undo)
        done = await self.inbox.wait_for_event(step.undone, timeout=timeout)
        if done is None:
            self._record("timeout", step.undo)
            raise ApplicationError(f"{step.undo} not confirmed within {timeout}")
        self._record("received", done.type)

    async def _finish(self, status: SagaStatus, reason: str | None) -> OrderResult:
        self._status, self._reason = status, reason
        result = self.snapshot()
        outcome = f"order.{status}"
        await emit(outcome, result)
        self._record("sent", outcome)
        return self.snapshot()

    def _record(self, direction: Literal["sent", "received", "timeout"], type: str) -> None:
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
