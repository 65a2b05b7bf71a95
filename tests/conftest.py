"""Fixtures of the tests' kit (the servers themselves come from the ``loom`` pytest plugin)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import pytest
from kit import LoomProcess, StartLoom

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
