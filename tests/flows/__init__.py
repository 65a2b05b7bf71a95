"""Workflow modules of the end-to-end tests, as users write them.

Temporal's sandbox (the worker ``loom worker`` builds, which the tests use) re-imports a
workflow's module for every run, so the workflows live in light modules that import only
what workflow code needs, never in a test module: a test module imports pytest, the servers
and the sidecar, and it is imported through pytest's assertion rewriting, which parsed it
again on every run (under load: ``SystemError: AST constructor recursion depth mismatch``).
``tests/test_layout.py`` holds the rule.

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
  (``tests/faults/test_temporal_edges.py``); the recorders are in ``tests/recorders.py``;
- one ``<name>_flows`` module per test module ``test_<name>.py`` for the rest:
  :mod:`flows.activities_flows`, :mod:`flows.asyncapi_flows`, :mod:`flows.batching_flows`,
  :mod:`flows.cli_flows` (loaded by name by the worker's short form),
  :mod:`flows.coalesce_flows`, :mod:`flows.dev_flows`, :mod:`flows.entity_flows`,
  :mod:`flows.routing_flows`, :mod:`flows.temporal_calls_flows`, :mod:`flows.tracing_flows`,
  :mod:`flows.workflow_flows`.

Most import the loom's workflow side inside ``imports_passed_through()``, as the tutorial
does: the sandbox then re-imports only the module itself for each run.
"""
