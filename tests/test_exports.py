"""The public surface of ``bridge`` is pinned (like temporalio's test_client_exports)."""

from __future__ import annotations

import subprocess
import sys

import bridge


def test_public_names_are_pinned() -> None:
    assert bridge.__all__ == [
        "EVENT_SIGNAL", "EVENT_UPDATE", "BadInputError", "DataValidationError", "DecodeError",
        "EmbeddedKafka", "EmbeddedTemporal", "Event", "Loom", "LoomError", "LoomSettings",
        "Match", "MissingWorkflowPolicy", "PermanentTemporalError", "Record", "Route",
        "RouteDefinitionError", "Router", "SettingsError", "SetupError", "Signal",
        "SignalWithStart", "StartWorkflow", "TemporalExecutor", "TransientTemporalError",
        "UnmatchedPolicy", "UpdateWithStart", "decode", "encode", "load_settings",
    ]


def test_every_public_name_resolves() -> None:
    for name in bridge.__all__:
        assert getattr(bridge, name) is not None


def test_importing_the_package_stays_light() -> None:
    # Workflow code imports bridge.workflow inside Temporal's sandbox: the package itself
    # must not drag in the consumer, aiokafka or the CLI.
    code = "import sys, bridge, bridge.events; print(sorted(m for m in sys.modules if m.startswith(('aiokafka', 'bridge.consumer', 'typer'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
