"""Fixtures of the fault suite and the table it prints at the end of the run."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from faults.harness import FULL, RESULTS, Row
from faults.workload import FaultRecorder


@pytest.fixture(scope="session")
def fault_results(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Row], None]:
    """``record(row)``: adds a row to the table (kept as JSON under the pytest tmp dir)."""
    if RESULTS.path is None:
        RESULTS.path = tmp_path_factory.getbasetemp() / "faults-results.json"
    return RESULTS.add


@pytest.fixture
async def recorder_worker(temporal_client: Client, task_queue: str) -> AsyncIterator[Worker]:
    """A worker for :class:`FaultRecorder` on the session server and the test's task queue."""
    async with Worker(
        temporal_client,
        task_queue=task_queue,
        workflows=[FaultRecorder],
        max_concurrent_workflow_tasks=100,
    ) as worker:
        yield worker


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS.rows:
        return
    size = "full size (LOOM_FAULTS_FULL=1)" if FULL else "reduced size"
    terminalreporter.write_sep("=", f"fault suite, {size}")
    table = RESULTS.markdown()
    terminalreporter.write_line(table)
    if RESULTS.path is not None:
        terminalreporter.write_line(f"(rows as JSON: {RESULTS.path})")
    out = os.environ.get("LOOM_FAULTS_REPORT")
    if out:
        Path(out).write_text(f"Fault suite, {size}\n\n{table}\n")
