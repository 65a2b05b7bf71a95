"""Routes of the reference application (``LOOM_ROUTES=routes``).

``order.placed`` starts the order saga by signal-with-start, keyed by the order id; the
participants' replies are signalled into the running saga of their order; ``order.cancelled``
cancels it (the saga then undoes what it did); the payment facts also move the customer's
credit (an entity workflow, started on the first one). Each route is bound to its topic::

    orders     order.placed           -> signal-with-start OrderSaga       order-{order_id}
    orders     order.cancelled        -> cancel                            order-{order_id}
    inventory  inventory.*  (replies) -> signal                            order-{order_id}
    payments   payment.*    (replies) -> signal                            order-{order_id}
    shipping   shipment.*   (replies) -> signal                            order-{order_id}
    payments   payment.*    (facts)   -> signal-with-start CustomerCredit  credit-{customer}

Participants publish plain business facts (``payment.charged`` with an ``order_id``); they
need not know about Temporal. Commands go to separate ``*.commands`` topics that the sidecar
does not consume, so the reply routes only ever see replies.
"""

from __future__ import annotations

from pydantic import BaseModel

from bridge.actions import Cancel, Signal, SignalWithStart
from bridge.events import Event
from bridge.routing import Match, Route, Router
from bridge.workflow import EntityInput
from workflows import TASK_QUEUE
from workflows.activities import COMMAND_TOPICS
from workflows.models import (
    CommandData,
    CustomerCreditState,
    OrderCancelled,
    OrderPlaced,
    OrderRef,
    OrderResult,
    OrderSagaInput,
    PaymentFact,
)
from workflows.workflows import OUTCOME_EVENTS, STEPS, CustomerCredit, OrderSaga

__all__ = [
    "CREDIT_ID",
    "INVENTORY",
    "ORDERS",
    "PAYMENTS",
    "SAGA_ID",
    "SHIPPING",
    "TOPICS",
    "consumers",
    "emit_topics",
    "emits",
    "emitted_by",
    "router",
]

#: The shop's topic, and the participants' reply topics.
ORDERS, INVENTORY, PAYMENTS, SHIPPING = "orders", "inventory", "payments", "shipping"
#: Topics the sidecar consumes for these routes (``LOOM_KAFKA__TOPICS``).
TOPICS = (ORDERS, PAYMENTS, INVENTORY, SHIPPING)
#: Workflow id of an order's saga.
SAGA_ID = "order-{data.order_id}"
#: Workflow id of a customer's credit.
CREDIT_ID = "credit-{data.customer}"


def _saga_input(event: Event, order: OrderPlaced) -> tuple[OrderSagaInput]:
    return (OrderSagaInput(order_id=order.order_id),)


def _names_a_customer(payment: PaymentFact) -> bool:
    return bool(payment.customer)


def _credit_input(event: Event, payment: PaymentFact) -> tuple[EntityInput[CustomerCreditState]]:
    # Read only when the fact starts the entity (its first payment): the initial state.
    return (EntityInput(state=CustomerCreditState(customer=str(payment.customer))),)


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
    Route(
        "customer-credit",
        # Facts that name no customer (an older payment service) still reach their saga: this
        # route only skips them, and never dead-letters the record for the saga's sake.
        Match(
            type_prefix="payment.", source="services/payment", where=_names_a_customer,
            topic=PAYMENTS,
        ),
        SignalWithStart(
            workflow=CustomerCredit,
            task_queue=TASK_QUEUE,
            workflow_id=CREDIT_ID,
            start_args=_credit_input,
        ),
        data=PaymentFact,
    ),
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
#: Which workflow emits what, for the map (``/map``); without it the map draws every declared
#: emit from every workflow type a route starts.
emitted_by: dict[str, list[str]] = {OrderSaga.__name__: list(emits)}
#: Who reads the emitted topics outside the loom, for the map's last layer (the participants
#: in ``services/``); the outcomes on the default topic have no consumer in the demo.
consumers: dict[str, list[str]] = {
    "inventory.commands": ["services/inventory"],
    "payment.commands": ["services/payment"],
    "shipping.commands": ["services/shipping"],
}
