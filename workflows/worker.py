"""The reference application's worker: ``OrderSaga``, ``CustomerCredit`` and the publish activity.

Run it with ``loom worker --entry workflows.worker:main`` or ``python -m workflows.worker``;
configured by the ``LOOM_`` environment (``LOOM_TEMPORAL__ADDRESS``, ``LOOM_KAFKA__BOOTSTRAP``,
...). The worker itself is the library's (``bridge.worker.run``): this module only says which
workflows, which task queue, and where the saga's commands go. SIGINT/SIGTERM stop it
gracefully: the worker finishes its running tasks, then the producer flushes and closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from temporalio.client import Client

from bridge.settings import LoomSettings, load_settings
from bridge.worker.run import run_worker as run_loom_worker
from bridge.worker.run import serve_worker
from workflows import TASK_QUEUE
from workflows.activities import publish_settings
from workflows.workflows import CustomerCredit, OrderSaga

__all__ = ["WORKFLOWS", "main", "run_worker"]

#: The reference application's workflows: the saga (a loop) and the customer's credit (an entity).
WORKFLOWS = [OrderSaga, CustomerCredit]


async def run_worker(
    settings: LoomSettings,
    *,
    client: Client | None = None,
    stop: asyncio.Event | None = None,
    ready: Callable[[], None] | None = None,
    task_queue: str = TASK_QUEUE,
) -> None:
    """Run the reference worker until ``stop`` is set (forever without it).

    Args:
        settings: Temporal and Kafka settings (the publish producer uses ``settings.kafka``).
        client: A connected client; when omitted, one is connected from ``settings.temporal``
            (TLS, API key, payload codec, tracing) by ``bridge.temporal.client.connect_temporal``.
        stop: Set it to stop the worker gracefully.
        ready: Called once the worker polls its task queue.
        task_queue: The task queue the routes start sagas on.
    """
    await run_loom_worker(
        settings, WORKFLOWS, task_queue=task_queue, stop=stop, ready=ready, client=client,
        emit=publish_settings(settings),
    )


def main(settings: LoomSettings | None = None) -> int:
    """Entry point of ``loom worker --entry``: run until SIGINT/SIGTERM; the exit code.

    Args:
        settings: Settings from ``loom worker`` (its flags applied); read from the ``LOOM_``
            environment when None.
    """
    if settings is None:
        settings = load_settings()
        logging.basicConfig(
            level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    return serve_worker(settings, WORKFLOWS, task_queue=TASK_QUEUE, emit=publish_settings(settings))


if __name__ == "__main__":
    raise SystemExit(main())
