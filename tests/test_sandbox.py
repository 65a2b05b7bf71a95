"""The workflow side (``bridge.workflow``) is safe inside Temporal's workflow sandbox.

The worker below runs with the default sandbox plus restrictions that make Kafka clients,
metrics, the CLI and the loom's own I/O modules unimportable: a workflow module that pulls
any of them in fails when the worker validates it. The negative control shows that the same
restrictions do refuse such a module.
"""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from sandbox.entity_workflow import SandboxEntity, Tally
from sandbox.leaky_workflow import LeakyWorkflow
from sandbox.loom_workflow import FORBIDDEN, SandboxProbe
from temporalio.client import Client
from temporalio.worker.workflow_sandbox import (
    SandboxedWorkflowRunner,
    SandboxMatcher,
    SandboxRestrictions,
)

from bridge.events import EVENT_SIGNAL, Event
from bridge.testing import loom_worker

STRICT = dataclasses.replace(
    SandboxRestrictions.default,
    invalid_modules=SandboxMatcher(
        children=dict.fromkeys({name.split(".")[0] for name in FORBIDDEN if not name.startswith("bridge")}, SandboxMatcher.all)
        | {
            "bridge": SandboxMatcher(
                children={
                    name.split(".")[1]: SandboxMatcher.all
                    for name in FORBIDDEN
                    if name.startswith("bridge.")
                }
            )
        }
    ),
)


def strict_runner() -> SandboxedWorkflowRunner:
    return SandboxedWorkflowRunner(restrictions=STRICT)


@pytest.mark.temporal
async def test_the_workflow_side_runs_in_a_strict_sandbox(
    temporal_client: Client, task_queue: str
) -> None:
    async with loom_worker(
        temporal_client,
        task_queue=task_queue,
        workflows=[SandboxProbe],
        # runner: the default sandbox with the loom's I/O modules made unimportable
        workflow_runner=strict_runner(),
    ):
        handle = await temporal_client.start_workflow(
            SandboxProbe.run, id=f"sandbox-{uuid.uuid4()}", task_queue=task_queue
        )
        await handle.signal(EVENT_SIGNAL, Event(id="e1", source="/t", type="t.x").to_payload())
        assert await handle.result() == []


@pytest.mark.temporal
async def test_an_entity_workflow_runs_in_a_strict_sandbox(
    temporal_client: Client, task_queue: str
) -> None:
    async with loom_worker(
        temporal_client,
        task_queue=task_queue,
        workflows=[SandboxEntity],
        # runner: the default sandbox with the loom's I/O modules made unimportable
        workflow_runner=strict_runner(),
    ):
        handle = await temporal_client.start_workflow(
            SandboxEntity.run, id=f"sandbox-entity-{uuid.uuid4()}", task_queue=task_queue
        )
        for n, (type, data) in enumerate([("amount.added", {"cents": 5}),
                                           ("amount.added", {"cents": 7}), ("done", None)]):
            event = Event(id=f"e{n}", source="/t", type=type, data=data)
            await handle.signal(EVENT_SIGNAL, event.to_payload())
        result = await handle.result()
    assert Tally.model_validate(result) == Tally(cents=12, forbidden=[])


@pytest.mark.temporal
async def test_a_workflow_module_that_imports_kafka_is_refused(
    temporal_client: Client, task_queue: str
) -> None:
    with pytest.raises(Exception, match="Failed validating workflow LoomSandboxLeak") as info:
        loom_worker(
            temporal_client,
            task_queue=task_queue,
            workflows=[LeakyWorkflow],
            # runner: the default sandbox with the loom's I/O modules made unimportable
            workflow_runner=strict_runner(),
        )
    causes = []
    error: BaseException | None = info.value
    while error is not None:
        causes.append(f"{type(error).__name__}: {error}")
        error = error.__cause__ or error.__context__
    assert any("aiokafka" in cause for cause in causes), causes
