"""Fixtures of the fault suite and the table it prints at the end of the run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from kit import LoomProcess, StartLoom
from recorder import InboxRecorderWorkflow
from temporalio.client import Client
from temporalio.worker import Worker

from bridge.dev import free_port
from bridge.settings import LoomSettings
from bridge.testing import loom_worker
from faults.harness import RESULTS, Row, Sidecars
from faults.workload import FaultRecorder


@pytest.fixture(scope="session")
def fault_results(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Row], None]:
    """``record(row)``: adds a row to the table (kept as JSON under the pytest tmp dir)."""
    if RESULTS.path is None:
        RESULTS.path = tmp_path_factory.getbasetemp() / "faults-results.json"
    return RESULTS.add


@pytest.fixture
async def recorder_worker(temporal_client: Client, task_queue: str) -> AsyncIterator[Worker]:
    """A worker for :class:`FaultRecorder` (and the inbox recorder of the coalesced routes)
    on the session server and the test's task queue."""
    async with loom_worker(
        temporal_client,
        task_queue=task_queue,
        workflows=[FaultRecorder, InboxRecorderWorkflow],
        max_concurrent_workflow_tasks=100,
    ) as worker:
        yield worker


@pytest.fixture
def sidecars(start_loom: StartLoom, task_queue: str) -> Sidecars:
    """Start ``loom run`` with a scenario's settings, the test's task queue and a free HTTP
    port of its own (a restarted sidecar gets a new one); all are stopped after the test."""

    async def start(settings: LoomSettings, name: str) -> LoomProcess:
        env = {"LOOM_HTTP_PORT": str(free_port()), "LOOM_FAULTS_TASK_QUEUE": task_queue}
        return await start_loom("run", settings=settings, env=env, name=name)

    return start
