"""Ask the sidecar's real HTTP server which paths it serves, instead of copying its literals.

Deployment files (Kubernetes probes, Prometheus scrape configs, compose healthchecks) name
paths of the loom's HTTP port. A test starts a real ``HealthServer`` on a free port with a
health it controls and a fresh registry, and asks it about those paths.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from bridge.sidecar.http import HealthServer
from bridge.sidecar.metrics import Health, Metrics

#: Not started yet (the loom does not exist): neither live nor ready.
STARTING: Health | None = None
#: The loop runs, nothing is connected yet: live, not ready.
RUNNING = Health(running=True)
#: Running, in its consumer group and connected to both sides: live and ready (owning a
#: partition is not part of readiness).
READY = Health(running=True, kafka_connected=True, group_joined=True, temporal_connected=True)


@dataclass
class ServedPaths:
    """A running HealthServer whose health the test sets."""

    server: HealthServer
    health: Health | None = STARTING

    def get_sync(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.server.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    async def get(self, path: str, health: Health | None) -> tuple[int, str]:
        """GET ``path`` while the sidecar's health is ``health``: (status, body)."""
        self.health = health
        return await asyncio.to_thread(self.get_sync, path)

    async def status(self, path: str, health: Health | None) -> int:
        return (await self.get(path, health))[0]


@asynccontextmanager
async def served_paths() -> AsyncIterator[ServedPaths]:
    """A HealthServer on a free port, with the loom's metrics on a fresh registry."""
    registry = CollectorRegistry()
    Metrics(registry)
    holder: list[ServedPaths] = []
    server = HealthServer(lambda: holder[0].health, registry, port=0)
    holder.append(ServedPaths(server))
    await server.start()
    try:
        yield holder[0]
    finally:
        await server.stop()


async def assert_liveness_path(served: ServedPaths, path: str) -> None:
    """``path`` follows liveness: 503 before the loom runs, 200 once it runs (ready or not)."""
    assert await served.status(path, STARTING) == 503, path
    assert await served.status(path, RUNNING) == 200, path
    assert await served.status(path, READY) == 200, path


async def assert_readiness_path(served: ServedPaths, path: str) -> None:
    """``path`` follows readiness: 503 until connected to both sides, then 200."""
    assert await served.status(path, STARTING) == 503, path
    assert await served.status(path, RUNNING) == 503, path
    assert await served.status(path, READY) == 200, path


async def assert_metrics_path(served: ServedPaths, path: str) -> None:
    """``path`` serves the Prometheus exposition of the loom's metrics, whatever the health."""
    status, body = await served.get(path, STARTING)
    assert status == 200, path
    families = {family.name for family in text_string_to_metric_families(body)}
    assert "loom_events_consumed" in families, (path, body[:200])
