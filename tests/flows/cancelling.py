"""The workflow of the ``Cancel`` action's tests (``tests/test_cancel.py``)."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import is_cancelled_exception


@workflow.defn
class Job:
    """Waits for ``finish``; on a cancel request it records the reason, then "compensates"
    until ``release`` and returns (``mode="return"``) or re-raises (``mode="raise"``)."""

    def __init__(self) -> None:
        self.done = False
        self.released = False
        self.reason: str | None = None

    @workflow.run
    async def run(self, mode: str) -> str:
        try:
            await workflow.wait_condition(lambda: self.done)
        except BaseException as exc:
            if not is_cancelled_exception(exc):
                raise
            self.reason = workflow.cancellation_reason()
            await workflow.wait_condition(lambda: self.released)
            if mode == "raise":
                raise
            return f"cancelled: {self.reason}"
        return "finished"

    @workflow.signal
    def finish(self) -> None:
        self.done = True

    @workflow.signal
    def release(self) -> None:
        self.released = True

    @workflow.query
    def cancel_reason(self) -> str | None:
        return self.reason
