"""What the ``loom worker`` short form loads in the CLI tests (``tests/test_cli.py``): a
workflow, an activity, a list of activities and a name that is neither.

They live here, not in the test module: Temporal's sandbox re-imports a workflow's module on
every run, and pytest rewrites the asserts of a test module, which it would then parse again.
"""

from __future__ import annotations

from temporalio import activity, workflow


@workflow.defn
class Hello:
    @workflow.run
    async def run(self) -> str:
        return "hi"


@activity.defn
async def greet(name: str) -> str:
    return name


ACTIVITIES = [greet]
NOT_A_WORKFLOW = 42
