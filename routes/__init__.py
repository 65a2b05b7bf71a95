"""Routes of the reference application (``LOOM_ROUTES=routes``).

``order.placed`` starts the order saga by signal-with-start, keyed by the order id; the
participants' replies are signalled into the running saga of their order::

    orders     order.placed           -> signal-with-start OrderSaga  order-{order_id}
    inventory  inventory.*  (replies) -> signal                       order-{order_id}
    payments   payment.*    (replies) -> signal                       order-{order_id}
    shipping   shipment.*   (replies) -> signal                       order-{order_id}

Participants publish plain business facts (``payment.charged`` with an ``order_id``); they
need not know about Temporal. Commands go to separate ``*.commands`` topics that the sidecar
does not consume, so the reply routes only ever see replies.
"""

from __future__ import annotations

from pydantic import BaseModel

from bridge.actions import Signal, SignalWithStart
from bridge.events import Event
from bridge.routing import Match, Route, Router
from workflows import TASK_QUEUE
from workflows.activities import COMMAND_TOPICS
from workflows.models import CommandData, OrderPlaced, OrderRef, OrderResult, OrderSagaInput
from workflows.workflows import STEPS, OrderSaga

__all__ = ["SAGA_ID", "TOPICS", "emit_topics", "emits", "router"]

#: Topics the sidecar consumes for these routes (``LOOM_KAFKA__TOPICS``).
TOPICS = ("orders", "payments", "inventory", "shipping")
#: Workflow id of an order's saga.
SAGA_ID = "order-{data.order_id}"


def _saga_input(event: Event, order: OrderPlaced) -> tuple[OrderSagaInput]:
    return (OrderSagaInput(order_id=order.order_id),)


def _reply_route(name: str, prefix: str, source: str) -> Route:
    return Route(
        name,
        Match(type_prefix=prefix, source=source),
        # A reply for a saga that already ended (e.g. after its step timed out) is
        # dead-lettered: someone must look at a payment charged after the order gave up.
        Signal(workflow_id=SAGA_ID),
        data=OrderRef,
    )


router = Router([
    Route(
        "order-placed",
        Match(type="order.placed"),
        SignalWithStart(
            workflow=OrderSaga,
            task_queue=TASK_QUEUE,
            workflow_id=SAGA_ID,
            start_args=_saga_input,
            memo={"customer": "{data.customer}", "amount": "{data.amount}"},
        ),
        data=OrderPlaced,
    ),
    _reply_route("inventory-replies", "inventory.", "services/inventory"),
    _reply_route("payment-replies", "payment.", "services/payment"),
    _reply_route("shipping-replies", "shipment.", "services/shipping"),
])

#: What the saga emits, for ``loom routes --asyncapi``: its commands and undo commands to the
#: participants, and its outcome.
emits: dict[str, type[BaseModel] | None] = {
    **{step.command: CommandData for step in STEPS},
    **{step.undo: CommandData for step in STEPS if step.undo is not None},
    "order.completed": OrderResult,
    "order.compensated": OrderResult,
}
#: Where those go (the worker's publish activity uses the same map).
emit_topics = COMMAND_TOPICS
