"""``python -m services``: run the inventory, payment and shipping services until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from bridge.settings import load_settings
from services import all_services


async def _run() -> None:
    settings = load_settings()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    services = all_services(settings.kafka.client_options())
    await asyncio.gather(*(service.run(stop) for service in services))


def main() -> None:
    """Run the participants with the ``LOOM_KAFKA__*`` connection settings."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    asyncio.run(_run())


if __name__ == "__main__":
    main()
