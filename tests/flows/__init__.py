"""Workflow modules of the end-to-end tests, as users write them.

Temporal's sandbox (the worker ``loom worker`` builds, which the tests use) re-imports a
workflow's module for every run, so the workflows live in light modules that import only
what workflow code needs, not in the test modules (which import pytest, the servers, the
sidecar):

- the continue-as-new matrix (``tests/test_continue_as_new.py``): :mod:`flows.models` holds
  state models apart from the workflows, :mod:`flows.toplevel` imports the loom's workflow
  side at module top level and :mod:`flows.passed` inside
  ``workflow.unsafe.imports_passed_through()``, as the tutorial does (the same code but for
  that import block: a test checks it);
- windows through Kafka (``tests/faults/test_windows.py``): :mod:`flows.windows`, routed by
  :mod:`flows.window_routes`;
- other tests' workflows: :mod:`flows.collecting` (``tests/test_workflow.py``),
  :mod:`flows.cancelling` (``tests/test_cancel.py``), :mod:`flows.replaying`
  (``tests/test_replay.py``), :mod:`flows.asking` (``tests/test_request_reply.py``),
  :mod:`flows.rollover` (``tests/test_temporal_edges.py``), :mod:`flows.edges`
  (``tests/faults/test_temporal_edges.py``); the recorders are in ``tests/recorders.py``.

Most import the loom's workflow side inside ``imports_passed_through()``, as the tutorial
does: the sandbox then re-imports only the module itself for each run.
"""
