"""The shop: publishes ``order.placed`` events (the demo's sample orders), and cancels some.

The sample batch cycles through six kinds of orders, so any batch of six or more shows every
path of the saga: two complete, one is declined by payment (inventory released), one is
backordered and cancelled by its customer while its saga waits for the stock (the pending
reservation released), one is out of stock (nothing to undo), one cannot be shipped (payment
refunded, inventory released). The shop publishes the ``order.cancelled`` events after the
whole batch, on the same topic and key as the orders.

``python -m services.shop --orders 12`` publishes a batch to ``LOOM_KAFKA__BOOTSTRAP``.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from bridge.events import PARTITION_KEY, Event
from bridge.kafka.binding import encode
from services.inventory import BACKORDERED, OUT_OF_STOCK
from services.payment import CREDIT_LIMIT
from services.shipping import UNREACHABLE
from workflows.models import OrderCancelled, OrderPlaced, SagaStatus

__all__ = [
    "ORDERS_TOPIC",
    "SOURCE",
    "cancel_event",
    "cancelled_by_customer",
    "expected_status",
    "order_event",
    "publish_orders",
    "sample_orders",
]

#: Topic of ``order.placed`` (one of the sidecar's topics).
ORDERS_TOPIC = "orders"
#: CloudEvent source of the shop's events.
SOURCE = "shop/web"

# (sku, amount, country) of the six kinds of sample orders, in order.
_KINDS: tuple[tuple[str, float, str], ...] = (
    ("TEA-001", 12.5, "NL"),
    ("MUG-042", 30.0, "DE"),
    ("LAPTOP-9", 1899.0, "FR"),  # declined: over the credit limit
    (BACKORDERED, 25.0, "BE"),  # waits for stock: its customer cancels it
    (OUT_OF_STOCK, 99.0, "NL"),  # rejected by inventory
    ("CHAIR-3", 240.0, UNREACHABLE),  # shipping fails: refund, then release
)


def sample_orders(count: int, *, prefix: str | None = None) -> list[OrderPlaced]:
    """``count`` sample orders with ids ``<prefix>-0001``... (a fresh prefix when None)."""
    prefix = prefix or uuid.uuid4().hex[:6]
    orders = []
    for n in range(count):
        sku, amount, country = _KINDS[n % len(_KINDS)]
        orders.append(
            OrderPlaced(
                order_id=f"{prefix}-{n + 1:04d}",
                customer=f"customer-{n % 7 + 1}",
                sku=sku,
                quantity=1 + n % 3,
                amount=amount,
                country=country,
            )
        )
    return orders


def cancelled_by_customer(order: OrderPlaced) -> bool:
    """Whether the shop cancels ``order`` (a backorder: its saga waits for the stock)."""
    return order.sku == BACKORDERED


def expected_status(order: OrderPlaced) -> SagaStatus:
    """How the saga of ``order`` ends with the reference participants."""
    if cancelled_by_customer(order):
        return "cancelled"
    refused = (
        order.sku == OUT_OF_STOCK or order.amount > CREDIT_LIMIT or order.country == UNREACHABLE
    )
    return "compensated" if refused else "completed"


def order_event(order: OrderPlaced) -> Event:
    """The ``order.placed`` CloudEvent of ``order`` (its id is stable for the order)."""
    return Event(
        id=f"order-placed-{order.order_id}",
        source=SOURCE,
        type="order.placed",
        subject=order.order_id,
        time=datetime.now(UTC),
        data=order.model_dump(mode="json"),
        datacontenttype="application/json",
        extensions={PARTITION_KEY: order.order_id},
    )


def cancel_event(order: OrderPlaced, reason: str = "the customer waited too long") -> Event:
    """The ``order.cancelled`` CloudEvent of ``order`` (same key: it follows the order)."""
    return Event(
        id=f"order-cancelled-{order.order_id}",
        source=SOURCE,
        type="order.cancelled",
        subject=order.order_id,
        time=datetime.now(UTC),
        data=OrderCancelled(order_id=order.order_id, reason=reason).model_dump(mode="json"),
        datacontenttype="application/json",
        extensions={PARTITION_KEY: order.order_id},
    )


async def publish_orders(
    kafka_options: Mapping[str, Any],
    orders: Sequence[OrderPlaced],
    *,
    topic: str = ORDERS_TOPIC,
    interval: float = 0.0,
    on_sent: Callable[[OrderPlaced], None] | None = None,
) -> None:
    """Publish ``order.placed`` for each order, then ``order.cancelled`` for those their
    customer cancels, waiting for the broker's acks.

    Args:
        kafka_options: aiokafka connection options.
        orders: The orders.
        topic: Where ``order.placed`` goes.
        interval: Seconds between two orders (lets a demo unfold at human speed).
        on_sent: Called after each acknowledged order.
    """
    producer = AIOKafkaProducer(**kafka_options, enable_idempotence=False)
    await producer.start()
    try:
        for order in orders:
            key, value, headers = encode(order_event(order))
            await producer.send_and_wait(topic, value=value, key=key, headers=headers)
            if on_sent is not None:
                on_sent(order)
            if interval:
                await asyncio.sleep(interval)
        for order in orders:
            if cancelled_by_customer(order):
                key, value, headers = encode(cancel_event(order))
                await producer.send_and_wait(topic, value=value, key=key, headers=headers)
    finally:
        await producer.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m services.shop``: publish a batch of sample orders."""
    from bridge.settings import load_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--orders", type=int, default=12, help="how many orders (default 12)")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between orders")
    args = parser.parse_args(argv)
    kafka = load_settings().kafka
    orders = sample_orders(args.orders)
    asyncio.run(publish_orders(kafka.client_options(), orders, interval=args.interval))
    for order in orders:
        print(f"order.placed {order.order_id}: expect {expected_status(order)}")


if __name__ == "__main__":
    main()
