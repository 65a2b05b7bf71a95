"""Fixtures of the tests' kit (the servers themselves come from the ``loom`` pytest plugin),
and the fault suite's table at the end of a run, with or without pytest-xdist's workers."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from faults.harness import FULL, RESULTS, Row
from kit import LoomProcess, StartLoom

# pytest-xdist's workers set COLUMNS=80 for their own output; the loom's console reads it once,
# at import, and would wrap the tables that the CLI tests read, as no other run does.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.pop("COLUMNS", None)

from bridge.settings import LoomSettings


@pytest.fixture
async def start_loom(tmp_path: Path) -> AsyncIterator[StartLoom]:
    """Start ``loom <args>`` subprocesses in ``tmp_path``; all are closed after the test."""
    started: list[LoomProcess] = []

    async def start(
        *args: str,
        settings: LoomSettings | None = None,
        env: Mapping[str, str] | None = None,
        python_path: Sequence[Path] = (),
        name: str = "loom",
    ) -> LoomProcess:
        proc = await LoomProcess.start(
            *args, cwd=tmp_path, settings=settings, env=env, python_path=python_path, name=name
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        await proc.close()


# --- the fault suite's table ----------------------------------------------------------------------
# Its rows are collected where the scenarios run: in this process, or in an xdist worker that
# hands them to the controller when it finishes (``workeroutput``). This module is the tests'
# root conftest, so the controller, which collects nothing, loads it too.


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None and RESULTS.rows:
        workeroutput["fault_rows"] = json.dumps([asdict(r) for r in RESULTS.rows])


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    rows = getattr(node, "workeroutput", {}).get("fault_rows")
    if rows:
        RESULTS.rows.extend(Row(**row) for row in json.loads(rows))


def _scenario_order(row: Row) -> tuple[int, str]:
    number, _, rest = row.scenario.partition(".")
    digits = "".join(c for c in number if c.isdigit())
    return (int(digits) if digits else 0, number + rest)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS.rows:
        return
    size = "full size (LOOM_FAULTS_FULL=1)" if FULL else "reduced size"
    terminalreporter.write_sep("=", f"fault suite, {size}")
    RESULTS.rows.sort(key=_scenario_order)
    table = RESULTS.markdown()
    terminalreporter.write_line(table)
    if RESULTS.path is not None:
        terminalreporter.write_line(f"(rows as JSON: {RESULTS.path})")
    out = os.environ.get("LOOM_FAULTS_REPORT")
    if out:
        Path(out).write_text(f"Fault suite, {size}\n\n{table}\n")
