"""A stateful property test of bridge.sidecar.dispatch: no wait spins, no count drifts.

Hypothesis drives a :class:`Dispatcher` through random bounds (count, bytes, running slots),
random item weights, random completion order, retriable failures (retried), permanent ones
(each dead-lettered alone) and coalesced calls that split. The dispatcher lives on an event
loop in a thread of its own; every step is handed to that loop and must come back within a
few seconds. A submitter that waited without a real suspension would hold the loop forever
(the freeze of issue 21), so liveness is judged from outside the loop, as the sidecar's own
``/livez`` is.

After every step:
- the loop turned (the step came back);
- the item and byte totals equal the sums over the items accepted and not finished;
- a submitter still waits only while the dispatcher is full (no lost wake-up);
- the running bound holds, and outcomes per key follow submission order.
At the end every call succeeds; the totals return to 0.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from bridge.exceptions import PermanentTemporalError, TransientTemporalError
from bridge.sidecar.dispatch import Coalescing, Dispatcher, RetryPolicy

T = TypeVar("T")

Item = tuple[str, int, int]  # key, sequence number, weight in bytes
#: How long one step may hold the loop: a step is a handful of loop turns (microseconds), so
#: any stall this long is a loop that stopped turning.
STEP_BUDGET_S = 3.0
TICK = RetryPolicy(initial=1e-6, maximum=1e-6, jitter=False)


class LoopThread:
    """An event loop turning in a thread of its own; steps are handed to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.stalled: Callable[[], None] | None = None

    def run(self, coro: Coroutine[Any, Any, T], what: str) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout=STEP_BUDGET_S)
        except TimeoutError:
            if self.stalled is not None:
                self.stalled()
            raise AssertionError(
                f"the event loop did not turn for {STEP_BUDGET_S} s during {what}: "
                "a wait spins"
            ) from None

    def close(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=STEP_BUDGET_S)
        if not self._thread.is_alive():
            self.loop.close()


class DispatcherStates(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.box = LoopThread()
        self.d: Dispatcher[str, Item, str] | None = None
        self.seq = 0
        self.max_in_flight = 1
        self.max_buffered = 1
        self.max_bytes: int | None = None
        self.submitters: dict[Item, asyncio.Task[None]] = {}
        self.accepted: dict[Item, int] = {}  # item -> weight, accepted and not finished
        self.outcomes: list[tuple[Item, str]] = []
        self.submitted: list[Item] = []
        # call id -> (the items of one handler call, the future that ends it)
        self.calls: dict[int, tuple[list[Item], asyncio.Future[str]]] = {}
        self.call_ids = 0
        self.retrying = 0

    # --- the dispatcher's callbacks (on the loop thread) -----------------------------------

    async def _call(self, items: list[Item]) -> str:
        if self.retrying:
            self.retrying -= 1
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.call_ids += 1
        call_id = self.call_ids
        self.calls[call_id] = (items, future)
        try:
            return await future
        finally:
            self.calls.pop(call_id, None)

    async def _one(self, key: str, item: Item) -> str:
        return await self._call([item])

    async def _batch(self, key: str, items: list[Item]) -> str:
        return await self._call(list(items))

    def _finish(self, item: Item, outcome: str) -> None:
        self.outcomes.append((item, outcome))
        self.accepted.pop(item)

    def _retry(self, item: Item, attempt: int, exc: BaseException, delay: float) -> None:
        self.retrying += 1

    # --- set-up ----------------------------------------------------------------------------

    @initialize(
        max_in_flight=st.integers(1, 4),
        extra=st.integers(0, 5),
        max_bytes=st.one_of(st.none(), st.integers(1, 60)),
        coalesce=st.booleans(),
    )
    def build(self, max_in_flight: int, extra: int, max_bytes: int | None, coalesce: bool) -> None:
        self.max_in_flight, self.max_buffered, self.max_bytes = (
            max_in_flight, max_in_flight + extra, max_bytes,
        )
        rule: Coalescing[str, Item, str] | None = None
        if coalesce:
            rule = Coalescing(
                handler=self._batch, joins=lambda head, item: True,
                size=lambda item: item[2], max_items=3, max_bytes=40,
            )

        async def make() -> Dispatcher[str, Item, str]:
            return Dispatcher(
                self._one,
                max_in_flight=max_in_flight,
                max_buffered=self.max_buffered,
                on_done=lambda item, result: self._finish(item, "done"),
                on_failed=lambda item, exc: self._finish(item, "failed"),
                retry=TICK,
                on_retry=self._retry,
                coalescing=rule,
                max_buffered_bytes=max_bytes,
                weight=(lambda item: item[2]) if max_bytes is not None else None,
            )

        self.d = self.box.run(make(), "set-up")
        self.box.stalled = self._stalled

    def _stalled(self) -> None:
        # From the test's thread: a submitter spinning on the loop re-checks ``closed`` on
        # every pass, so closing it by hand ends the spin and frees the loop (and the CPU)
        # for the examples that follow; the failure is reported all the same.
        assert self.d is not None
        self.d._closed = True
        self.d = None

    # --- steps -----------------------------------------------------------------------------

    def _settle(self, what: str) -> None:
        """Lets the loop turn until nothing moves (and no retry is pending)."""

        def snapshot() -> tuple[int, ...]:
            assert self.d is not None
            return (
                self.d.in_flight, self.d.buffered_bytes, self.d.running, len(self.calls),
                len(self.outcomes), sum(not t.done() for t in self.submitters.values()),
            )

        async def settle() -> None:
            last, still = snapshot(), 0
            while still < 5 or self.retrying:
                await asyncio.sleep(0)
                now = snapshot()
                still = still + 1 if now == last else 0
                last = now

        self.box.run(settle(), what)

    @rule(key=st.sampled_from("abcd"), weight=st.integers(1, 30))
    def submit(self, key: str, weight: int) -> None:
        assert self.d is not None
        self.seq += 1
        item = (key, self.seq, weight)
        self.submitted.append(item)
        d = self.d

        async def start() -> None:
            async def go() -> None:
                await d.submit(key, item)
                self.accepted[item] = weight

            self.submitters[item] = asyncio.create_task(go())

        self.box.run(start(), f"submit {item}")
        self._settle(f"submit {item}")

    @precondition(lambda self: bool(self.calls))
    @rule(data=st.data(), outcome=st.sampled_from(["ok", "ok", "retry", "fail"]))
    def finish_a_call(self, data: st.DataObject, outcome: str) -> None:
        call_id = data.draw(st.sampled_from(sorted(self.calls)))
        _, future = self.calls[call_id]

        async def end() -> None:
            if outcome == "ok":
                future.set_result("ok")
            elif outcome == "retry":
                future.set_exception(TransientTemporalError("unavailable"))
            else:
                future.set_exception(PermanentTemporalError("refused"))

        self.box.run(end(), f"finish call {call_id} ({outcome})")
        self._settle(f"after call {call_id} ({outcome})")

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def totals_are_the_sums_over_held_items(self) -> None:
        if self.d is None:
            return
        assert self.d.in_flight == len(self.accepted)
        assert self.d.buffered_bytes == (sum(self.accepted.values()) if self.max_bytes else 0)

    @invariant()
    def a_submitter_waits_only_while_full(self) -> None:
        if self.d is None:
            return
        waiting = [item for item, task in self.submitters.items() if not task.done()]
        assert not waiting or self.d.full, f"{waiting} wait on a dispatcher with room"

    @invariant()
    def bounds_hold(self) -> None:
        if self.d is None:
            return
        assert self.d.running <= self.max_in_flight
        assert len(self.calls) <= self.max_in_flight
        assert self.d.in_flight <= self.max_buffered
        if self.max_bytes is not None:
            # Accepted while not full: at most one item's weight past the bound.
            assert self.d.buffered_bytes < self.max_bytes + 30

    @invariant()
    def outcomes_follow_submission_order_per_key(self) -> None:
        for key in "abcd":
            finished = [item for item, _ in self.outcomes if item[0] == key]
            assert finished == sorted(finished, key=lambda item: item[1])

    def teardown(self) -> None:
        try:
            if self.d is not None:
                self._drain_all()
        finally:
            self.box.close()

    def _drain_all(self) -> None:
        assert self.d is not None
        d = self.d

        async def succeed_everything() -> None:
            # Every call succeeds until nothing is held and nobody waits.
            while d.in_flight or self.retrying or not all(
                t.done() for t in self.submitters.values()
            ):
                for _, future in list(self.calls.values()):
                    if not future.done():
                        future.set_result("ok")
                await asyncio.sleep(0)
            assert await d.drain(timeout=1.0)

        self.box.run(succeed_everything(), "the final drain")
        assert (d.in_flight, d.buffered_bytes, d.running) == (0, 0, 0)
        assert sorted(item for item, _ in self.outcomes) == sorted(self.submitted)
        self.box.run(d.close(), "close")


DispatcherStates.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_dispatcher_states = DispatcherStates.TestCase
