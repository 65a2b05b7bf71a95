"""A new user's first minutes: the built wheel alone in a fresh venv, as ``pip install`` gives it.

The wheel is built from this checkout (``pip wheel --no-deps``) and installed with its
dependencies from the package index into a new venv, with no extra: nothing of the development
environment is visible there. Then what the user meets first: the wheel ships ``bridge`` alone,
their unrelated pytest run still passes, ``loom --version``, settings written the usual way,
a bad setting, and ``loom dev`` without the embedded servers.

Needs the package index (the venv installs the wheel's dependencies). About a minute with a
warm pip cache; ``scripts/wheel-check`` runs this file alone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.dev import free_port

# The fixture's steps carry their own timeouts (building, then installing from the index): the
# suite's 180 s per test would cut a slow index short.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class FreshVenv:
    wheel: Path
    bin: Path
    home: Path  # a working directory outside the checkout

    def run(
        self, *argv: str, cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        clean = {
            k: v for k, v in os.environ.items()
            if not k.startswith(("LOOM_", "TEMPORAL_", "OTEL_", "PYTHON", "VIRTUAL_ENV", "PIP_REQUIRE"))
        }
        clean.update({"PATH": f"{self.bin}:/usr/bin:/bin", "COLUMNS": "200", **(env or {})})
        return subprocess.run(
            argv, cwd=cwd or self.home, env=clean, capture_output=True, text=True,
            timeout=timeout, check=False,
        )


def _step(argv: list[str], what: str, timeout: float) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        pytest.fail(f"{what} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> FreshVenv:
    work = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools leaves build/ in the source tree, and a stale build/lib
    # would put modules deleted since into the wheel.
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"))
    _step([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(work / "dist"),
           str(source)], "building the wheel", 300)
    (wheel,) = (work / "dist").glob("temporal_loom-*.whl")
    # The venv module of the base interpreter: nothing of this venv's packages is visible.
    _step([sys.executable, "-m", "venv", str(work / "venv")], "creating a venv", 120)
    python = work / "venv" / "bin" / "python"
    _step([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           str(wheel)], "installing the wheel", 600)
    # pytest alone (the user's own test tool), not the testing extra.
    _step([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "pytest"], "installing pytest", 300)
    home = work / "home"
    home.mkdir()
    return FreshVenv(wheel, python.parent, home)


def test_the_wheel_ships_bridge_alone(fresh: FreshVenv) -> None:
    names = zipfile.ZipFile(fresh.wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"bridge"}
    assert "bridge/py.typed" in names
    result = fresh.run("python", "-c", "import importlib.util as u; "
                       "print([m for m in ('routes', 'workflows', 'services') if u.find_spec(m)])")
    assert result.stdout.strip() == "[]", result.stderr


def test_an_unrelated_one_line_test_passes(fresh: FreshVenv) -> None:
    (fresh.home / "test_one.py").write_text("def test_one():\n    assert 1 + 1 == 2\n")
    result = fresh.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--trace-config",
                       "test_one.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert "bridge/testing.py" in result.stdout  # the loom plugin was loaded, and harmless


def test_loom_version(fresh: FreshVenv) -> None:
    result = fresh.run("loom", "--version")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"temporal-loom \d+\.\d+\.\d+\S*\n", result.stdout), result.stdout


def test_topics_as_a_comma_list(fresh: FreshVenv) -> None:
    nobody = f"127.0.0.1:{free_port()}"  # nothing listens: the check reports, exit 1
    result = fresh.run("loom", "check", "--timeout", "2", env={
        "LOOM_KAFKA__TOPICS": "a,b", "LOOM_KAFKA__BOOTSTRAP": nobody,
        "LOOM_TEMPORAL__ADDRESS": nobody, "LOOM_TEMPORAL__CONNECT_TIMEOUT_S": "1",
    })
    assert result.returncode == 1, result.stdout + result.stderr
    assert "['a', 'b']" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_a_bad_setting_is_one_line_naming_it(fresh: FreshVenv) -> None:
    for variable, value in [("LOOM_HTTP_PORT", "http"), ("LOOM_KAFKA__PRODUCER", "acks=all")]:
        result = fresh.run("loom", "run", env={variable: value})
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stdout == ""
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert variable in result.stderr


def test_loom_dev_without_the_embedded_extra_says_what_to_install(fresh: FreshVenv) -> None:
    # From the checkout, where the reference application is importable.
    result = fresh.run("loom", "dev", "--bounded", "--no-ui", cwd=ROOT)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "pip install 'temporal-loom[embedded]'" in " ".join(result.stdout.split())
