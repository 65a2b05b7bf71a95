"""The pytest plugin (``bridge.testing``) never breaks anyone's pytest run.

Installing temporal-loom registers the plugin for every pytest run in that environment. Without
the testing extra (no pytest-asyncio), it must still load: an unrelated test passes, and a test
that asks for one of its fixtures fails with the install hint, not with a plugin load error.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_pytest(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest in a child where pytest-asyncio cannot be imported, as if it were not installed.

    A package of the same name first on the path raises ModuleNotFoundError when imported
    (pytest's assertion rewriter imports plugin modules itself, so hiding it from the import
    system alone is not enough); its own plugin is not loaded (``-p no:asyncio``).
    """
    shadow = directory / "shadow" / "pytest_asyncio"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'pytest_asyncio'\", name='pytest_asyncio')\n"
    )
    (directory / "pytest.ini").write_text("[pytest]\n")  # not the project's configuration
    path = [str(shadow.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:asyncio", "-p", "no:cacheprovider", *args],
        cwd=directory, capture_output=True, text=True, timeout=120, check=False, env=env,
    )


def test_without_the_testing_extra_an_unrelated_test_passes(tmp_path: Path) -> None:
    (tmp_path / "test_one.py").write_text("def test_one():\n    assert 1 + 1 == 2\n")
    result = run_pytest(tmp_path, "-q", "--trace-config", "test_one.py")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "1 passed" in output
    assert "bridge/testing.py" in output  # the plugin was loaded, not skipped


def test_without_the_testing_extra_a_fixture_says_what_to_install(tmp_path: Path) -> None:
    (tmp_path / "test_wants.py").write_text(
        "def test_wants(temporal_client):\n    pass\n\n"
        "def test_queue(task_queue):\n    assert task_queue.startswith('loom-tq-')\n"
    )
    result = run_pytest(tmp_path, "-q", "test_wants.py")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "1 passed, 1 error" in output  # the test asking for the fixture errs at set-up
    assert "pip install 'temporal-loom[testing]'" in output
    assert "Error while loading plugin" not in output
