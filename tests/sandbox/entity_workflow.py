"""An entity workflow module imported inside the sandbox (no passthrough).

``bridge.workflow``'s entity base class, its handler table and the pydantic models it builds
for each entity (the typed input, the state) are rebuilt in the sandbox at every run.
"""

from __future__ import annotations

import sys

from pydantic import BaseModel
from temporalio import workflow

from bridge.workflow import EntityWorkflow, handles
from sandbox.loom_workflow import FORBIDDEN


class Amount(BaseModel):
    cents: int


class Tally(BaseModel):
    cents: int = 0
    forbidden: list[str] = []


@workflow.defn(name="LoomSandboxEntity")
class SandboxEntity(EntityWorkflow[Tally]):
    """Adds amounts; ``done`` finishes with the tally and the forbidden modules it can see."""

    @handles("amount.added")
    def added(self, amount: Amount) -> None:
        self.state.cents += amount.cents

    @handles("done")
    def done(self, data: object) -> None:
        self.state.forbidden = sorted(
            m for m in sys.modules if m.split(".")[0] in FORBIDDEN or m.startswith(FORBIDDEN)
        )
        self.finish(self.state)
