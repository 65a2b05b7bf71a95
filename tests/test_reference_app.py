"""The reference application: routes, the order saga's compensations, the bounded demo."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from kit import eventually
from rich.console import Console
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus

from bridge.actions import ActionKind
from bridge.cli.asyncapi import asyncapi_document
from bridge.cli.dev import run_dev
from bridge.events import EVENT_SIGNAL, Event
from bridge.settings import LoomSettings
from bridge.temporal.calls import TemporalExecutor
from bridge.testing import loom_worker
from bridge.workflow import (
    PUBLISH_ACTIVITY,
    EntityInput,
    EntityWorkflow,
    PublishRequest,
    PublishResult,
)
from routes import TOPICS, router
from services import demo
from services.payment import PaymentService
from services.shop import (
    cancel_event,
    cancelled_by_customer,
    expected_status,
    order_event,
    sample_orders,
)
from workflows.models import (
    CommandData,
    CustomerCreditState,
    OrderPlaced,
    OrderResult,
    OrderSagaInput,
)
from workflows.workflows import CustomerCredit, OrderSaga

# --- pure logic --------------------------------------------------------------------------------


def test_sample_orders_cover_every_path_of_the_saga() -> None:
    orders = sample_orders(6, prefix="t")
    assert [o.order_id for o in orders] == [f"t-000{n}" for n in range(1, 7)]
    assert [expected_status(o) for o in orders] == [
        "completed", "completed", "compensated", "cancelled", "compensated", "compensated",
    ]
    assert [cancelled_by_customer(o) for o in orders] == [False, False, False, True, False, False]


def test_routes_start_the_saga_and_signal_replies_into_it() -> None:
    order = sample_orders(1, prefix="r")[0]
    [start] = router.resolve(order_event(order))
    assert start.kind is ActionKind.SIGNAL_WITH_START
    assert (start.workflow_id, start.workflow_type) == ("order-r-0001", "OrderSaga")
    assert start.start_args == (OrderSagaInput(order_id="r-0001"),)
    assert start.memo == {"customer": order.customer, "amount": order.amount}
    reply = Event(
        id="1", source="services/payment", type="payment.charged", data={"order_id": "r-0001"}
    )
    [signal] = router.resolve(reply)
    assert (signal.kind, signal.workflow_id, signal.route) == (
        ActionKind.SIGNAL, "order-r-0001", "payment-replies",
    )
    # Commands the saga emits never come back through the routes.
    assert router.resolve(Event(id="2", source="loom://x", type="payment.charge")) == []
    # The shop's cancel cancels the saga, with the customer's reason.
    [cancel] = router.resolve(cancel_event(order, "changed my mind"), topic="orders")
    assert (cancel.kind, cancel.workflow_id, cancel.reason) == (
        ActionKind.CANCEL, "order-r-0001", "changed my mind",
    )
    # Each route is bound to its topic: a reply on the orders topic is no reply.
    assert router.resolve(reply, topic="orders") == []
    assert router.resolve(reply, topic="payments") == [signal]
    assert router.unconsumed(TOPICS) == []


def test_the_contract_addresses_each_consumed_channel_to_its_topic() -> None:
    doc = asyncapi_document(router, LoomSettings.model_validate({"kafka": {"topics": TOPICS}}))
    assert {name: channel["address"] for name, channel in doc["channels"].items()} == {
        "order_placed__orders": "orders",
        "order_cancelled__orders": "orders",
        "inventory_star__inventory": "inventory",
        "payment_star__payments": "payments",
        "shipment_star__shipping": "shipping",
    }


def payment_fact(order: OrderPlaced, answer: str) -> Event:
    """The payment service's reply to a command about ``order`` (as it publishes it)."""
    command_type = "payment.refund" if answer == "payment.refunded" else "payment.charge"
    command = Event(id=f"cmd-{order.order_id}-{answer}", source="loom://test", type=command_type)
    service = PaymentService({})
    return service.reply_event(command, CommandData.of(order), service.handle(command, CommandData.of(order)))


def test_payment_facts_also_move_the_customers_credit() -> None:
    order = sample_orders(1, prefix="c")[0]
    saga, credit = router.resolve(payment_fact(order, "payment.charged"))
    assert (saga.route, saga.workflow_id) == ("payment-replies", f"order-{order.order_id}")
    assert (credit.route, credit.kind, credit.workflow_id) == (
        "customer-credit", ActionKind.SIGNAL_WITH_START, f"credit-{order.customer}",
    )
    assert (credit.workflow_type, credit.task_queue) == ("CustomerCredit", "loom-orders")
    assert credit.start_args == (EntityInput(state=CustomerCreditState(customer=order.customer)),)
    # A fact that names no customer still reaches its saga; the credit route skips it.
    anonymous = Event(id="3", source="services/payment", type="payment.charged",
                      data={"order_id": order.order_id})
    assert [i.route for i in router.resolve(anonymous)] == ["payment-replies"]


@pytest.mark.temporal
async def test_the_customers_credit_follows_the_payment_facts_routed_to_it(
    temporal_client: Client, task_queue: str
) -> None:
    customer = f"customer-{uuid.uuid4().hex[:8]}"
    orders = [
        OrderPlaced(order_id=f"{customer}-{n}", customer=customer, sku="S", amount=amount)
        for n, amount in enumerate((12.5, 30.0, 1899.0))
    ]
    facts = [
        payment_fact(orders[0], "payment.charged"),
        payment_fact(orders[1], "payment.charged"),
        payment_fact(orders[2], "payment.declined"),  # over the credit limit
        payment_fact(orders[1], "payment.refunded"),
    ]
    facts.insert(2, facts[1])  # a redelivery
    executor = TemporalExecutor(temporal_client)
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[CustomerCredit]):
        for fact in facts:  # what the sidecar does: every route's call, in order
            for invocation in router.resolve(fact):
                if invocation.route == "customer-credit":
                    await executor.execute(dataclasses.replace(invocation, task_queue=task_queue))
        handle = temporal_client.get_workflow_handle(f"credit-{customer}")
        stats = await eventually(lambda: handle.query(EntityWorkflow.entity_stats), timeout=30,
                                 until=lambda s: s.handled == 4, what="the four facts handled")
        state = await handle.query(CustomerCredit.current_state)
    assert stats.handled == 4 and stats.ignored == 0
    assert state == CustomerCreditState(
        customer=customer, balance=12.5, charges=2, refunds=1, declined=1
    )


# --- the saga against a fake publish activity ----------------------------------------------------


def participants(client: Client, answers: Mapping[str, str]) -> Callable[..., Any]:
    """A ``loom.publish`` stand-in answering each command by signalling the reply back."""

    @activity.defn(name=PUBLISH_ACTIVITY)
    async def publish(request: PublishRequest) -> PublishResult:
        command = Event.from_payload(request.event)
        answer = answers.get(command.type)
        if answer is not None:
            reply = Event(
                id=f"reply-{command.id}",
                source="test://participant",
                type=answer,
                data={"order_id": command.data["order_id"], "reason": f"{answer} (test)"},
            )
            workflow_id = activity.info().workflow_id
            assert workflow_id is not None
            handle = client.get_workflow_handle(workflow_id)
            await handle.signal(EVENT_SIGNAL, reply.to_payload())
        return PublishResult(id=command.id, topic="test", partition=0, offset=0)

    return publish


async def run_saga(
    client: Client, task_queue: str, answers: Mapping[str, str], step_timeout_s: float = 10
) -> OrderResult:
    order = OrderPlaced(
        order_id=uuid.uuid4().hex[:8], customer="c", sku="S", amount=10, country="NL"
    )
    async with loom_worker(
        client, task_queue=task_queue, workflows=[OrderSaga],
        activities=[participants(client, answers)],
    ):
        handle = await client.start_workflow(
            OrderSaga.run,
            OrderSagaInput(order_id=order.order_id, step_timeout_s=step_timeout_s),
            id=f"order-{order.order_id}",
            task_queue=task_queue,
            start_signal=EVENT_SIGNAL,
            start_signal_args=[order_event(order).to_payload()],
        )
        return await asyncio.wait_for(handle.result(), 30)


def sent(result: OrderResult) -> list[str]:
    return [step.type for step in result.journal if step.direction == "sent"]


ALL_OK = {
    "inventory.reserve": "inventory.reserved",
    "payment.charge": "payment.charged",
    "shipment.ship": "shipment.shipped",
    "payment.refund": "payment.refunded",
    "inventory.release": "inventory.released",
}


@pytest.mark.temporal
async def test_failed_shipment_refunds_then_releases(
    temporal_client: Client, task_queue: str
) -> None:
    answers = {**ALL_OK, "shipment.ship": "shipment.failed"}
    result = await run_saga(temporal_client, task_queue, answers)
    assert result.status == "compensated"
    assert result.reason == "shipment.failed (test)"
    assert sent(result) == [
        "inventory.reserve", "payment.charge", "shipment.ship",
        "payment.refund", "inventory.release",  # newest first
        "order.compensated",
    ]
    assert result.compensation_errors == []


@pytest.mark.temporal
async def test_a_step_timeout_undoes_the_uncertain_step_too(
    temporal_client: Client, task_queue: str
) -> None:
    answers = {k: v for k, v in ALL_OK.items() if k != "payment.charge"}
    result = await run_saga(temporal_client, task_queue, answers, step_timeout_s=1)
    assert result.status == "compensated"
    assert result.reason == "no reply to payment.charge within 1s"
    assert sent(result) == [
        "inventory.reserve", "payment.charge", "payment.refund", "inventory.release",
        "order.compensated",
    ]
    assert [(s.direction, s.type) for s in result.journal if s.direction == "timeout"] == [
        ("timeout", "payment.charge"),
    ]


async def cancel_saga_while(
    client: Client, task_queue: str, answers: Mapping[str, str], waiting_for: str,
    compensation_timeout_s: float = 30,
) -> OrderResult:
    """Run a saga whose participants do not answer ``waiting_for``; cancel it there."""
    order = OrderPlaced(
        order_id=uuid.uuid4().hex[:8], customer="c", sku="S", amount=10, country="NL"
    )
    async with loom_worker(
        client, task_queue=task_queue, workflows=[OrderSaga],
        activities=[participants(client, answers)],
    ):
        handle = await client.start_workflow(
            OrderSaga.run,
            OrderSagaInput(order_id=order.order_id, step_timeout_s=30,
                           compensation_timeout_s=compensation_timeout_s),
            id=f"order-{order.order_id}",
            task_queue=task_queue,
            start_signal=EVENT_SIGNAL,
            start_signal_args=[order_event(order).to_payload()],
        )
        await eventually(lambda: handle.query(OrderSaga.snapshot), timeout=30,
                         until=lambda s: waiting_for in sent(s),
                         what=f"the saga sent {waiting_for} (the command nobody answers)")
        await handle.cancel(reason="changed my mind")
        result = await asyncio.wait_for(handle.result(), 30)
        assert (await handle.describe()).status is WorkflowExecutionStatus.COMPLETED
        return result


@pytest.mark.temporal
async def test_a_cancel_while_shipping_refunds_then_releases(
    temporal_client: Client, task_queue: str
) -> None:
    answers = {k: v for k, v in ALL_OK.items() if k != "shipment.ship"}
    result = await cancel_saga_while(temporal_client, task_queue, answers, "shipment.ship")
    assert (result.status, result.reason) == ("cancelled", "changed my mind")
    assert sent(result) == [
        "inventory.reserve", "payment.charge", "shipment.ship",
        "payment.refund", "inventory.release",  # shipping has no undo: the rest, newest first
        "order.cancellation-confirmed",
    ]
    assert ("cancelled", "shipment.ship") in [(s.direction, s.type) for s in result.journal]
    assert result.compensation_errors == []


@pytest.mark.temporal
async def test_a_cancel_undoes_the_step_in_flight_too(
    temporal_client: Client, task_queue: str
) -> None:
    # Payment never answers: the charge may still happen, so the cancel refunds it as well.
    answers = {k: v for k, v in ALL_OK.items() if k != "payment.charge"}
    result = await cancel_saga_while(temporal_client, task_queue, answers, "payment.charge")
    assert result.status == "cancelled"
    assert sent(result) == [
        "inventory.reserve", "payment.charge", "payment.refund", "inventory.release",
        "order.cancellation-confirmed",
    ]


@pytest.mark.temporal
async def test_a_cancel_while_compensating_does_not_cut_the_compensation_short(
    temporal_client: Client, task_queue: str
) -> None:
    # Shipping fails; the refund is never confirmed and the cancel lands while the saga waits
    # for it: the saga goes on undoing, and its outcome stays the one it had decided.
    answers = {k: v for k, v in ALL_OK.items() if k != "payment.refund"}
    answers["shipment.ship"] = "shipment.failed"
    result = await cancel_saga_while(
        temporal_client, task_queue, answers, "payment.refund", compensation_timeout_s=3
    )
    assert (result.status, result.reason) == ("compensated", "shipment.failed (test)")
    journal = [(s.direction, s.type) for s in result.journal]
    assert journal[journal.index(("sent", "payment.refund")):] == [
        ("sent", "payment.refund"),
        ("cancelled", "payment.refund"),  # the wait was cut: waited for again, in full
        ("timeout", "payment.refund"),
        ("sent", "inventory.release"),  # the next undo still ran
        ("received", "inventory.released"),
        ("sent", "order.compensated"),
    ]
    assert result.compensation_errors == ["payment.refund not confirmed within 0:00:03"]


@pytest.mark.temporal
async def test_a_cancel_that_comes_with_the_order_still_ends_cancelled(
    temporal_client: Client, task_queue: str
) -> None:
    # The cancel request reaches the server before any worker ran the saga: its first workflow
    # task holds the start, the order and the cancel together (the demo's race, made certain).
    order = OrderPlaced(
        order_id=uuid.uuid4().hex[:8], customer="c", sku="S", amount=10, country="NL"
    )
    handle = await temporal_client.start_workflow(
        OrderSaga.run,
        OrderSagaInput(order_id=order.order_id, step_timeout_s=30),
        id=f"order-{order.order_id}",
        task_queue=task_queue,
        start_signal=EVENT_SIGNAL,
        start_signal_args=[order_event(order).to_payload()],
    )
    await handle.cancel(reason="changed my mind")
    async with loom_worker(
        temporal_client, task_queue=task_queue, workflows=[OrderSaga],
        activities=[participants(temporal_client, ALL_OK)],
    ):
        result = await asyncio.wait_for(handle.result(), 30)
    assert (result.status, result.reason) == ("cancelled", "changed my mind")
    assert result.compensation_errors == []
    # The saga started its first step and met the cancel there: that step may have gone out,
    # so it is undone as well (the demo's table shows "undone: inventory.release" either way).
    assert [(s.direction, s.type) for s in result.journal] == [
        ("received", "order.placed"),
        ("cancelled", "inventory.reserve"),
        ("sent", "inventory.release"),
        ("received", "inventory.released"),
        ("sent", "order.cancellation-confirmed"),
    ]


# --- the whole application ------------------------------------------------------------------------


@pytest.mark.kafka
@pytest.mark.temporal
@pytest.mark.slow
async def test_bounded_demo_finishes_every_order_as_designed() -> None:
    console = Console(file=io.StringIO(), record=True, width=200)
    code = await run_dev(demo.app, count=6, bounded=True, ui=False, console=console, timeout=60)
    text = console.export_text()
    assert code == 0, text
    assert "cancelled 1, compensated 3, completed 2, unfinished 0" in text
    assert "dead-lettered 0" in text
    # Every step of every saga went through the sidecar: 6 order.placed and 1 order.cancelled,
    # 5 inventory replies (the backorder is held), 4 payment replies, 3 shipping replies,
    # 1 + 2 + 1 compensation confirmations (the cancelled order's pending reservation released);
    # and the 5 payment facts (4 replies, 1 refund) once more, to their customers' credit.
    assert "events routed 28" in text
    # The table says what the cancelled saga undid.
    assert "the customer waited too long; undone: inventory.release" in text
