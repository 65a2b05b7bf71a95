"""Routes of the reference application (``LOOM_ROUTES=routes``).

``order.placed`` starts the order saga by signal-with-start, keyed by the order id; the
participants' replies are signalled into the running saga of their order; ``order.cancelled``
cancels it (the saga then undoes what it did). Each route is bound to its topic::

    orders     order.placed           -> signal-with-start OrderSaga  order-{order_id}
    orders     order.cancelled        -> cancel                       order-{order_id}
    inventory  inventory.*  (replies) -> signal                       order-{order_id}
    payments   payment.*    (replies) -> signal                       order-{order_id}
    shipping   shipment.*   (replies) -> signal                       order-{order_id}

Participants publish plain business facts (``payment.charged`` with an ``order_id``); they
need not know about Temporal. Commands go to separate ``*.commands`` topics that the sidecar
does not consume, so the reply routes only ever see replies.
"""

from __future__ import annotations

from pydantic import BaseModel

from bridge.actions import Cancel, Signal, SignalWithStart
from bridge.events import Event
from bridge.routing import Match, Route, Router
from workflows import TASK_QUEUE
from workflows.activities import COMMAND_TOPICS
from workflows.models import (
    CommandData,
    OrderCancelled,
    OrderPlaced,
    OrderRef,
    OrderResult,
    OrderSagaInput,
)
from workflows.workflows import OUTCOME_EVENTS, STEPS, OrderSaga

__all__ = [
    "INVENTORY",
    "ORDERS",
    "PAYMENTS",
    "SAGA_ID",
    "SHIPPING",
    "TOPICS",
    "emit_topics",
    "emits",
    "router",
]

#: The shop's topic, and the participants' reply topics.
ORDERS, INVENTORY, PAYMENTS, SHIPPING = "orders", "inventory", "payments", "shipping"
#: Topics the sidecar consumes for these routes (``LOOM_KAFKA__TOPICS``).
TOPICS = (ORDERS, PAYMENTS, INVENTORY, SHIPPING)
#: Workflow id of an order's saga.
SAGA_ID = "order-{data.order_id}"


def _saga_input(event: Event, order: OrderPlaced) -> tuple[OrderSagaInput]:
    return (OrderSagaInput(order_id=order.order_id),)


def _reply_route(name: str, prefix: str, source: str, topic: str) -> Route:
    return Route(
        name,
        Match(type_prefix=prefix, source=source, topic=topic),
        # A reply for a saga that already ended (e.g. after its step timed out) is
        # dead-lettered: someone must look at a payment charged after the order gave up.
        Signal(workflow_id=SAGA_ID),
        data=OrderRef,
    )


router = Router([
    Route(
        "order-placed",
        Match(type="order.placed", topic=ORDERS),
        SignalWithStart(
            workflow=OrderSaga,
            task_queue=TASK_QUEUE,
            workflow_id=SAGA_ID,
            start_args=_saga_input,
            memo={"customer": "{data.customer}", "amount": "{data.amount}"},
        ),
        data=OrderPlaced,
    ),
    Route(
        "order-cancelled",
        Match(type="order.cancelled", topic=ORDERS),
        # A cancel for a saga that already ended (or never started) is skipped and counted.
        Cancel(workflow_id=SAGA_ID, reason="{data.reason}"),
        data=OrderCancelled,
    ),
    _reply_route("inventory-replies", "inventory.", "services/inventory", INVENTORY),
    _reply_route("payment-replies", "payment.", "services/payment", PAYMENTS),
    _reply_route("shipping-replies", "shipment.", "services/shipping", SHIPPING),
])

#: What the saga emits, for ``loom routes --asyncapi``: its commands and undo commands to the
#: participants, and its outcome.
emits: dict[str, type[BaseModel] | None] = {
    **{step.command: CommandData for step in STEPS},
    **{step.undo: CommandData for step in STEPS if step.undo is not None},
    **dict.fromkeys(OUTCOME_EVENTS.values(), OrderResult),
}
#: Where those go (the worker's publish activity uses the same map).
emit_topics = COMMAND_TOPICS
