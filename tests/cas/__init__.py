"""Workflow modules of the continue-as-new matrix (``tests/test_continue_as_new.py``).

Real modules, as users write them, because Temporal's sandbox re-imports a workflow's module
for every run: :mod:`cas.models` holds state models apart from the workflows,
:mod:`cas.toplevel` imports the loom's workflow side at module top level and
:mod:`cas.passed` inside ``workflow.unsafe.imports_passed_through()``, as the tutorial does.
The two workflow modules are the same code but for that import block (a test checks it).
"""
