"""A saga's compensation stack, for workflow code (deterministic, no I/O).

Register the undo of each step right after the step succeeded; on failure, run them all in
reverse order::

    compensations = Compensations()
    try:
        await emit("payment.charge", order)
        compensations.add(emit, "payment.refund", order)
        await emit("inventory.reserve", order)
        compensations.add(emit, "inventory.release", order)
    except Exception:
        await compensations.compensate()
        raise

or, equivalently, ``async with Compensations() as compensations: ...`` (compensates when the
block raises, then re-raises).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from temporalio import workflow

__all__ = ["Compensation", "Compensations"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Compensation:
    """One registered undo step."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    @property
    def name(self) -> str:
        """A readable name for logs."""
        return getattr(self.fn, "__qualname__", repr(self.fn))


class Compensations:
    """Stack of undo steps run in reverse order by :meth:`compensate`."""

    def __init__(self) -> None:
        self._stack: list[Compensation] = []
        #: Errors of the last :meth:`compensate`, in the order they happened.
        self.errors: list[BaseException] = []

    def add(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Register ``fn(*args, **kwargs)`` (sync or async) as the undo of the last step."""
        self._stack.append(Compensation(fn, args, kwargs))

    def __len__(self) -> int:
        return len(self._stack)

    def clear(self) -> None:
        """Forget all registered steps (e.g. once the saga committed)."""
        self._stack.clear()

    async def compensate(self) -> list[BaseException]:
        """Run every registered step, newest first, and empty the stack.

        A failing step does not stop the others: its error is logged and collected.

        Returns:
            The errors raised by steps (empty when all succeeded).
        """
        errors: list[BaseException] = []
        while self._stack:
            step = self._stack.pop()
            try:
                result = step.fn(*step.args, **step.kwargs)
                if inspect.isawaitable(result):
                    await result
            except Exception as err:
                # Outside a workflow (unit tests, plain asyncio) Temporal's logger cannot run.
                log = workflow.logger if workflow.in_workflow() else _logger
                log.warning("compensation %s failed: %r", step.name, err)
                errors.append(err)
        self.errors = errors
        return errors

    async def __aenter__(self) -> Compensations:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            await self.compensate()
