"""The public surface of ``bridge`` is pinned (like temporalio's test_client_exports)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import bridge


def test_public_names_are_pinned() -> None:
    assert bridge.__all__ == [
        "BadInputError", "Cancel", "DataValidationError", "DecodeError", "DevApp", "EVENT_SIGNAL",
        "EVENT_UPDATE", "EmbeddedKafka", "EmbeddedTemporal", "Event", "Loom", "LoomError",
        "LoomSettings", "Match", "MissingWorkflowPolicy", "PermanentTemporalError", "Record",
        "Route", "RouteDefinitionError", "Router", "SettingsError", "SetupError", "Sidecar",
        "Signal", "SignalWithStart", "StartWorkflow", "TemporalExecutor",
        "TransientTemporalError", "UnmatchedPolicy", "UpdateWithStart", "decode", "encode",
        "load_settings",
    ]


def test_every_public_name_resolves() -> None:
    for name in bridge.__all__:
        assert getattr(bridge, name) is not None


def test_type_checkers_see_the_same_names_from_the_same_modules() -> None:
    tree = ast.parse(Path(bridge.__file__).read_text())
    block = next(
        node for node in tree.body
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
    )
    seen = {
        alias.name: node.module
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert seen == bridge._EXPORTS


def test_importing_the_package_stays_light() -> None:
    # Workflow code imports bridge.workflow inside Temporal's sandbox: the package itself
    # must not drag in the sidecar, aiokafka or the CLI.
    code = (
        "import sys, bridge, bridge.events, bridge.workflow; print(sorted(m for m in sys.modules"
        " if m.startswith(('aiokafka', 'bridge.sidecar', 'bridge.kafka', 'bridge.cli', 'typer'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
