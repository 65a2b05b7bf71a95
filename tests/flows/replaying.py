"""The workflow of the replay tests (``tests/test_replay.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from bridge.workflow import InboxState, LoomWorkflow


RECORDER = "LoomReplayRecorder"


@dataclass
class RecorderInput:
    delivered: list[str] = field(default_factory=list)
    inbox: InboxState | None = None


@workflow.defn(name=RECORDER)
class InboxRecorder(LoomWorkflow):
    """Records what its inbox delivered (repeats are dropped before that); ``roll``
    continues it as new (Temporal forgets the request ids it saw: only the inbox is left)."""

    def __init__(self) -> None:
        self.delivered: list[str] = []
        self.rolling = False

    @workflow.run
    async def run(self, input: RecorderInput | None = None) -> None:
        input = input or RecorderInput()
        if input.inbox is not None:
            self.inbox.restore(input.inbox)
        self.delivered = list(input.delivered)
        while True:
            await workflow.wait_condition(lambda: len(self.inbox) > 0 or self.rolling)
            if self.rolling:
                await self.inbox.continue_as_new(
                    lambda state: RecorderInput(self.delivered, state)
                )
            event = self.inbox.take()
            assert event is not None
            self.delivered.append(event.id)

    @workflow.signal
    def roll(self) -> None:
        self.rolling = True

    @workflow.query
    def seen(self) -> tuple[list[str], int, int, int]:
        """Delivered ids, signals received in this run, repeats dropped in it, runs before."""
        box = self.inbox
        return self.delivered, box.signals_this_run, box.duplicates_this_run, box.runs
