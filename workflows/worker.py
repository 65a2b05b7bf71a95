"""The reference application's worker: ``OrderSaga`` and the publish activity.

Run it with ``loom worker`` or ``python -m workflows.worker``; configured by the ``LOOM_``
environment (``LOOM_TEMPORAL__ADDRESS``, ``LOOM_KAFKA__BOOTSTRAP``, ...). SIGINT/SIGTERM stop
it gracefully: the worker finishes its running tasks, then the producer flushes and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

from temporalio.client import Client
from temporalio.worker import Worker

from bridge.kafka.clients import LoomProducer
from bridge.settings import LoomSettings, load_settings
from bridge.temporal.client import connect_temporal
from workflows import TASK_QUEUE
from workflows.activities import activities
from workflows.workflows import OrderSaga

__all__ = ["main", "run_worker"]

log = logging.getLogger("loom.worker")


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
    if client is None:
        client = await connect_temporal(settings)
    producer = LoomProducer(settings.kafka)
    async with producer:
        worker = Worker(
            client,
            task_queue=task_queue,
            workflows=[OrderSaga],
            activities=activities(producer, settings),
        )
        async with worker:
            log.info("worker polling task queue %r on %s", task_queue, settings.temporal.address)
            if ready is not None:
                ready()
            await (stop or asyncio.Event()).wait()


async def _main(settings: LoomSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await run_worker(settings, stop=stop)


def main(settings: LoomSettings | None = None) -> int:
    """Entry point of ``loom worker``: run until SIGINT/SIGTERM; returns the exit code.

    Args:
        settings: Settings from ``loom worker`` (its flags applied); read from the ``LOOM_``
            environment when None.
    """
    if settings is None:
        settings = load_settings()
        logging.basicConfig(
            level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    asyncio.run(_main(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
