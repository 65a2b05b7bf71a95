"""The documentation site builds with ``mkdocs build --strict`` and its generated reference pages
(settings, the CLI, metrics) are those the code gives today: a setting, a command or a metric
added without regenerating them fails here."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import typer

import bridge.events
import bridge.kafka.deadletters
from bridge.cli.app import app

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_reference", ROOT / "scripts" / "docs_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generator = _load_generator()


def test_the_site_builds_strict(tmp_path: Path) -> None:
    """What CI and the publishing workflow run: a broken link, a missing page or reference, or
    any warning fails the build."""
    site = tmp_path / "site"
    # Never --quiet: it hides warnings from --strict, and a broken link would pass.
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=170, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # The API reference came from the docstrings, the changelog from CHANGELOG.md.
    api = (site / "reference" / "api" / "workflow" / "index.html").read_text()
    assert 'id="bridge.workflow.EntityWorkflow"' in api
    # Sphinx roles in the docstrings (:func:`x`) read as code (scripts/griffe_roles.py).
    for page in (site / "reference" / "api").rglob("*.html"):
        assert not re.search(r":(mod|func|class|meth|attr|data):", page.read_text()), page
    assert "Keep a Changelog" in (site / "operations" / "upgrading" / "index.html").read_text()
    # Nothing the reader's browser would fetch from elsewhere at build time: no web fonts.
    assert "fonts.googleapis.com" not in (site / "index.html").read_text()


def test_the_architecture_page_keeps_its_path() -> None:
    # Other docs, tests and engineers refer to docs/architecture.md.
    assert (DOCS / "architecture.md").read_text().startswith("# Architecture")
    assert "architecture.md" in (ROOT / "mkdocs.yml").read_text()


def test_the_generated_reference_pages_are_current() -> None:
    # Regenerate with: python scripts/docs_reference.py
    assert generator.stale_pages() == []


def test_a_setting_added_without_docs_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    import bridge.settings

    rows = bridge.settings.settings_reference()
    monkeypatch.setattr(
        bridge.settings, "settings_reference", lambda: [*rows, ("LOOM_NEW_THING", "int", "`1`")]
    )
    assert generator.stale_pages() == [DOCS / "reference" / "settings.md"]


@pytest.fixture
def extra_command() -> Iterator[None]:
    @app.command("extra-thing")
    def extra_thing() -> None:
        """A command nobody documented."""

    try:
        yield
    finally:
        app.registered_commands.pop()


def test_a_command_added_without_docs_fails(extra_command: None) -> None:
    assert generator.stale_pages() == [DOCS / "reference" / "cli.md"]


def test_every_command_and_option_is_on_the_cli_page() -> None:
    page = (DOCS / "reference" / "cli.md").read_text()
    root = typer.main.get_command(app)
    ctx = root.make_context("loom", [], resilient_parsing=True)
    for path, command, _ in generator._commands(root, ctx, "loom"):
        assert f"### `{path}`" in page
        for param in command.params:
            for opt in (o for o in param.opts if o.startswith("-")):  # arguments have no dash
                assert re.search(rf"`[^`|]*{re.escape(opt)}\b", page), (path, opt)


def test_every_metric_is_on_the_metrics_page() -> None:
    from prometheus_client.metrics import MetricWrapperBase

    from bridge.sidecar.metrics import Metrics

    page = (DOCS / "reference" / "metrics.md").read_text()
    metrics = [m for m in vars(Metrics()).values() if isinstance(m, MetricWrapperBase)]
    assert len(metrics) > 10
    for metric in metrics:
        assert f"`{metric._name}" in page, metric._name


def test_every_extension_and_header_is_on_the_cloudevents_page() -> None:
    page = (DOCS / "reference" / "cloudevents.md").read_text()
    extensions = [bridge.events.PARTITION_KEY, bridge.events.CORRELATION, bridge.events.CAUSATION,
                  bridge.events.TRACEPARENT, bridge.events.TRACESTATE]
    names = [v for k, v in vars(bridge.events).items() if k.isupper() and isinstance(v, str)
             and v.startswith("loom_")]
    prefix = bridge.kafka.deadletters.PREFIX
    headers = [v for k, v in vars(bridge.kafka.deadletters).items()
               if k.isupper() and isinstance(v, str) and v.startswith(prefix) and v != prefix]
    # What errors add as headers (LoomError.details): the keys the code writes.
    details = set(re.findall(r'"(workflow-[a-z-]+)": ', "".join(
        p.read_text() for p in (ROOT / "bridge" / "temporal").glob("*.py"))))
    assert len(headers) >= 10 and details
    for name in [*extensions, *names, *headers, *(prefix + d for d in details)]:
        assert f"`{name}`" in page, name


def test_every_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in DOCS.rglob("*.md"):
        assert page.relative_to(DOCS).as_posix() in nav, page


def test_the_publishing_workflow_builds_as_the_tests_do() -> None:
    workflow = (ROOT / ".github" / "workflows" / "docs.yml").read_text()
    assert "mkdocs build --strict" in workflow
    assert "scripts/docs_reference.py --check" in workflow
    assert 'tags: ["v*"]' in workflow
