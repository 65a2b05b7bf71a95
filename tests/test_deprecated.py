"""The modules that moved in 0.2.0 keep a warning alias for one minor release.

Each is imported in a fresh interpreter (an import warns once per process), with
``-W error::DeprecationWarning`` so that a missing warning fails, and the warning must name
the importing line, not the import system.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import bridge

#: Alias module -> {name: the object it must be}.
SHIMS: dict[str, dict[str, str]] = {
    "bridge.activities": {
        "Encoder": "bridge.worker.activities",
        "PublishActivities": "bridge.worker.activities",
        "loom_activities": "bridge.worker.activities",
    },
    "bridge.producer": {
        "LoomProducer": "bridge.kafka.clients",
        "RecordMetadata": "bridge.kafka.clients",
    },
    "bridge.service": {
        "Sidecar": "bridge.sidecar.process",
        "run_sidecar": "bridge.sidecar.process",
        "settings_summary": "bridge.sidecar.process",
        "connect_temporal": "bridge.temporal.client",
        "make_data_converter": "bridge.temporal.client",
        "temporal_tls": "bridge.temporal.client",
        "load_codec": "bridge._loading",
        "load_object": "bridge._loading",
        "load_router": "bridge._loading",
    },
    "bridge.saga": {
        "Compensation": "bridge.workflow.saga",
        "Compensations": "bridge.workflow.saga",
    },
}

IMPORTER = '''
import json, sys, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import {module}  # the line the warning must name
print(json.dumps([[str(w.category.__name__), str(w.message), w.filename, w.lineno] for w in caught]))
'''


@pytest.mark.parametrize("module", sorted(SHIMS))
def test_importing_a_moved_module_warns_at_the_import(module: str, tmp_path: Path) -> None:
    script = tmp_path / "importer.py"
    script.write_text(textwrap.dedent(IMPORTER.format(module=module)))
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True,
        cwd=Path(bridge.__file__).parent.parent,
    )
    caught = json.loads(out.stdout)
    deprecations = [w for w in caught if w[0] == "DeprecationWarning" and module in w[1]]
    assert len(deprecations) == 1, caught
    _, message, filename, lineno = deprecations[0]
    assert "0.3.0" in message and SHIMS[module][next(iter(SHIMS[module]))] in message
    assert (filename, lineno) == (str(script), 5)


@pytest.mark.parametrize("module", sorted(SHIMS))
def test_a_moved_module_names_resolve_to_the_new_objects(module: str) -> None:
    sys.modules.pop(module, None)
    with pytest.warns(DeprecationWarning, match=module):
        shim = importlib.import_module(module)
    assert sorted(shim.__all__) == sorted(SHIMS[module])
    for name, home in SHIMS[module].items():
        assert getattr(shim, name) is getattr(importlib.import_module(home), name)


@pytest.mark.parametrize(
    ("module", "name", "hint"),
    [
        ("bridge.activities", "PublishSettings", "EmitSettings"),
        ("bridge.producer", "ProducerSettings", "KafkaSettings"),
        ("bridge.service", "tracing_plugins", "connect_temporal"),
    ],
)
def test_a_name_that_is_gone_says_what_replaced_it(module: str, name: str, hint: str) -> None:
    sys.modules.pop(module, None)
    with pytest.warns(DeprecationWarning, match=module):
        shim = importlib.import_module(module)
    with pytest.raises(AttributeError, match=hint):
        getattr(shim, name)
