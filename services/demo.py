"""What ``loom dev`` runs by default: the reference order saga as one demo.

The sidecar consumes the routes' topics, the worker runs ``OrderSaga``, the three
participants answer its commands, and the shop publishes sample orders whose data decides how
each saga ends (completed, compensated, or cancelled by the shop while it runs), so the run
can check every outcome. The table's reason column says what each saga undid.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from bridge.dev import DevApp, DevItem, DevService
from bridge.settings import LoomSettings
from routes import TOPICS
from services import all_services
from services.shop import expected_status, publish_orders, sample_orders
from workflows.activities import COMMAND_TOPICS
from workflows.models import OrderPlaced, OrderResult
from workflows.worker import run_worker
from workflows.workflows import STEPS

__all__ = ["app"]

_UNDOS = frozenset(step.undo for step in STEPS if step.undo is not None)


async def _worker(
    settings: LoomSettings, client: Client, stop: asyncio.Event, ready: Callable[[], None]
) -> None:
    await run_worker(settings, client=client, stop=stop, ready=ready)


def _services(settings: LoomSettings) -> Sequence[DevService]:
    return all_services(settings.kafka.client_options())


def _sample(count: int) -> list[DevItem]:
    return [
        DevItem(f"order-{order.order_id}", expected_status(order), order)
        for order in sample_orders(count)
    ]


async def _publish(
    settings: LoomSettings,
    items: Sequence[DevItem],
    interval: float,
    sent: Callable[[DevItem], None],
) -> None:
    by_order = {id(item.payload): item for item in items}

    def on_sent(order: OrderPlaced) -> None:
        sent(by_order[id(order)])

    orders = [item.payload for item in items]
    await publish_orders(
        settings.kafka.client_options(), orders, interval=interval, on_sent=on_sent
    )


async def _outcome(client: Client, item: DevItem) -> tuple[str, str | None] | None:
    handle = client.get_workflow_handle(item.workflow_id, result_type=OrderResult)
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return None  # not started yet: order.placed still on its way
        raise
    if description.status is WorkflowExecutionStatus.RUNNING:
        return "running", None
    if description.status is WorkflowExecutionStatus.COMPLETED:
        result = await handle.result()
        undone = [s.type for s in result.journal if s.direction == "sent" and s.type in _UNDOS]
        if result.status == "completed" or not undone:
            return result.status, result.reason
        return result.status, f"{result.reason}; undone: {', '.join(undone)}"
    status = description.status.name.lower() if description.status is not None else "unknown"
    return "failed", status


app = DevApp(
    title="temporal-loom dev: order saga",
    routes="routes",
    topics=TOPICS,
    extra_topics=tuple(COMMAND_TOPICS.values()),
    worker=_worker,
    services=_services,
    sample=_sample,
    publish=_publish,
    outcome=_outcome,
    noun="order",
)
