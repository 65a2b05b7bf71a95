"""Tests for bridge.sidecar.dispatch: order per key, the two bounds, retries, failures, drain, close."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kit import eventually

from bridge.exceptions import (
    DataValidationError,
    PermanentTemporalError,
    SignalLimitError,
    TransientTemporalError,
)
from bridge.sidecar.dispatch import Dispatcher, DispatcherClosedError, RetryPolicy, is_retriable

FAST = RetryPolicy(initial=0.001, maximum=0.01, jitter=False)


@dataclass
class Recorder:
    """Collects callbacks and watches concurrency."""

    done: list[tuple[str, int, object]] = field(default_factory=list)
    failed: list[tuple[tuple[str, int], BaseException]] = field(default_factory=list)
    retries: list[tuple[tuple[str, int], int, float]] = field(default_factory=list)
    active: set[str] = field(default_factory=set)
    running: int = 0
    max_running: int = 0
    overlaps: int = 0

    def on_done(self, item: tuple[str, int], result: object) -> None:
        self.done.append((item[0], item[1], result))

    def on_failed(self, item: tuple[str, int], exc: BaseException) -> None:
        self.failed.append((item, exc))

    def on_retry(
        self, item: tuple[str, int], attempt: int, exc: BaseException, delay: float
    ) -> None:
        self.retries.append((item, attempt, delay))

    def enter(self, key: str) -> None:
        if key in self.active:
            self.overlaps += 1
        self.active.add(key)
        self.running += 1
        self.max_running = max(self.max_running, self.running)

    def leave(self, key: str) -> None:
        self.active.discard(key)
        self.running -= 1


Item = tuple[str, int]


async def one_turn() -> None:
    """One turn of the event loop: every task created before it takes its first step.

    Not a wait for time: the tests that use it show, with a control task, that the same turn
    is enough to see what would happen if the task under test did not wait.
    """
    await asyncio.sleep(0)


def _dispatcher(
    rec: Recorder,
    handler: Callable[[str, Item], Awaitable[object]],
    *,
    max_in_flight: int = 100,
    retry: RetryPolicy = FAST,
) -> Dispatcher[str, Item, object]:
    return Dispatcher(
        handler,
        max_in_flight=max_in_flight,
        on_done=rec.on_done,
        on_failed=rec.on_failed,
        retry=retry,
        on_retry=rec.on_retry,
    )


@pytest.mark.parametrize("seed", range(5))
async def test_order_per_key_under_random_delays(seed: int) -> None:
    rng = random.Random(seed)
    rec = Recorder()
    started: dict[str, list[int]] = defaultdict(list)

    async def handler(key: str, item: Item) -> int:
        rec.enter(key)
        started[key].append(item[1])
        await asyncio.sleep(rng.random() * 0.003)  # a call of random length: the interleaving under test
        rec.leave(key)
        return item[1]

    d = _dispatcher(rec, handler, max_in_flight=rng.randint(1, 20))
    submitted: dict[str, list[int]] = defaultdict(list)
    for n in range(300):
        key = f"wf-{rng.randint(0, 9)}"
        submitted[key].append(n)
        await d.submit(key, (key, n))
    assert await d.drain(timeout=10)
    assert rec.overlaps == 0
    assert started == submitted
    finished: dict[str, list[int]] = defaultdict(list)
    for key, n, result in rec.done:
        assert result == n
        finished[key].append(n)
    assert finished == submitted


async def test_concurrency_reaches_but_never_exceeds_the_bound() -> None:
    rec = Recorder()
    in_flight_seen: list[int] = []

    async def handler(key: str, item: Item) -> None:
        rec.enter(key)
        await asyncio.sleep(0.002)  # a call that lasts: calls overlap up to the bound
        rec.leave(key)

    d = _dispatcher(rec, handler, max_in_flight=8)
    for n in range(100):
        await d.submit(f"wf-{n}", (f"wf-{n}", n))
        in_flight_seen.append(d.in_flight)
        assert d.free_slots == 8 - d.in_flight
    assert await d.drain(timeout=10)
    assert rec.max_running == 8
    assert max(in_flight_seen) == 8
    assert len(rec.done) == 100


async def test_bound_counts_items_queued_behind_their_key() -> None:
    rec = Recorder()
    gate = asyncio.Event()

    async def handler(key: str, item: Item) -> None:
        await gate.wait()

    d = _dispatcher(rec, handler, max_in_flight=3)
    for n in range(3):
        await d.submit("same", ("same", n))
    assert d.full
    assert d.free_slots == 0
    assert d.keys_in_flight == 1
    # A submit with room returns in its first step: one turn of the loop finishes the same
    # submit to a dispatcher with room, and not the one to the full dispatcher.
    roomy = _dispatcher(rec, handler, max_in_flight=3)
    control = asyncio.create_task(roomy.submit("other", ("other", 0)))
    blocked = asyncio.create_task(d.submit("other", ("other", 0)))
    await one_turn()
    assert control.done()
    assert not blocked.done()  # backpressure: submit waits
    gate.set()
    await asyncio.wait_for(blocked, 1)
    assert await d.drain(timeout=1)
    assert await roomy.drain(timeout=1)


async def test_wait_for_space_lets_the_consumer_pause_instead_of_blocking() -> None:
    rec = Recorder()
    release = asyncio.Event()

    async def handler(key: str, item: Item) -> None:
        await release.wait()

    d = _dispatcher(rec, handler, max_in_flight=2)
    await d.submit("a", ("a", 0))
    await d.submit("b", ("b", 0))
    assert d.full
    # The same turn of the loop finishes a wait on a dispatcher with room.
    control = asyncio.create_task(_dispatcher(rec, handler, max_in_flight=2).wait_for_space())
    waiter = asyncio.create_task(d.wait_for_space())
    await one_turn()
    assert control.done()
    assert not waiter.done()
    release.set()
    await asyncio.wait_for(waiter, 1)
    assert not d.full
    await d.wait_for_space()  # returns at once when there is space
    assert await d.drain(timeout=1)


@pytest.mark.parametrize("seed", range(8))
async def test_running_and_buffered_bounds_hold_and_order_per_key_is_kept(seed: int) -> None:
    """max_in_flight bounds the calls running at once, max_buffered the items accepted."""
    rng = random.Random(seed)
    rec = Recorder()
    max_in_flight = rng.randint(1, 8)
    max_buffered = max_in_flight + rng.randint(0, 24)
    started: dict[str, list[int]] = defaultdict(list)
    running_seen: list[int] = []
    accepted_seen: list[int] = []
    d: Dispatcher[str, Item, object]

    async def handler(key: str, item: Item) -> int:
        rec.enter(key)
        running_seen.append(d.running)
        started[key].append(item[1])
        await asyncio.sleep(rng.random() * 0.003)  # a call of random length: the interleaving under test
        rec.leave(key)
        return item[1]

    d = Dispatcher(
        handler, max_in_flight=max_in_flight, max_buffered=max_buffered,
        on_done=rec.on_done, on_failed=rec.on_failed, retry=FAST,
    )
    assert (d.max_in_flight, d.max_buffered) == (max_in_flight, max_buffered)
    submitted: dict[str, list[int]] = defaultdict(list)
    for n in range(400):
        key = f"wf-{rng.randint(0, 11)}"  # keys repeat: items queue behind their key
        submitted[key].append(n)
        await d.submit(key, (key, n))
        accepted_seen.append(d.in_flight)
        assert d.running <= max_in_flight
        assert d.free_slots == max_buffered - d.in_flight
    assert await d.drain(timeout=10)
    assert rec.overlaps == 0
    assert rec.max_running <= max_in_flight
    assert max(running_seen) <= max_in_flight
    assert max(accepted_seen) <= max_buffered
    assert max(accepted_seen) == max_buffered  # the buffer fills: submit waited at the bound
    assert started == submitted
    assert {k: [n for key, n, _ in rec.done if key == k] for k in submitted} == submitted
    assert d.running == 0 and d.in_flight == 0


async def test_items_queued_behind_their_key_leave_running_slots_to_other_keys() -> None:
    """Hypothesis (b) of the benchmark: with one bound, queued items took running slots."""
    rec = Recorder()
    gate = asyncio.Event()

    async def handler(key: str, item: Item) -> None:
        rec.enter(key)
        await gate.wait()
        rec.leave(key)

    d = Dispatcher(handler, max_in_flight=4, max_buffered=16, on_done=rec.on_done,
                   on_failed=rec.on_failed, retry=FAST)
    for n in range(4):
        await d.submit("hot", ("hot", n))
    for key in ("b", "c", "d", "e"):
        await d.submit(key, (key, 0))  # accepted at once: the buffer has room
    await eventually(lambda: len(rec.active), until=lambda n: n == 4, timeout=5, interval=0.001,
                     what="handlers entered")
    assert d.in_flight == 8
    assert d.running == 4  # hot-0, b, c, d: three items of "hot" wait without a slot
    assert rec.active == {"hot", "b", "c", "d"}
    assert not d.full
    gate.set()
    assert await d.drain(timeout=1)
    assert [n for key, n, _ in rec.done if key == "hot"] == [0, 1, 2, 3]
    assert rec.max_running == 4

    # The single bound of earlier versions (max_buffered = max_in_flight): the same
    # submissions fill it with one running call.
    gate.clear()
    old = Dispatcher(handler, max_in_flight=4, on_done=rec.on_done, on_failed=rec.on_failed)
    assert old.max_buffered == 4
    for n in range(4):
        await old.submit("hot", ("hot", n))
    await eventually(lambda: old.running, until=lambda n: n == 1, timeout=5, interval=0.001,
                     what="calls running")
    assert old.full and old.running == 1
    gate.set()
    assert await old.drain(timeout=1)


async def test_full_and_wait_for_space_follow_the_buffered_bound() -> None:
    rec = Recorder()
    release = asyncio.Event()

    async def handler(key: str, item: Item) -> None:
        await release.wait()

    d = Dispatcher(handler, max_in_flight=2, max_buffered=5, on_done=rec.on_done,
                   on_failed=rec.on_failed)
    for n in range(5):
        await d.submit(f"k{n}", (f"k{n}", n))
    await eventually(lambda: d.running, until=lambda n: n == 2, timeout=5, interval=0.001,
                     what="calls running")
    assert d.running == 2  # k0, k1 run; k2..k4 accepted, waiting for a running slot
    assert d.in_flight == 5
    assert d.full and d.free_slots == 0
    # The same turn of the loop finishes both on a dispatcher with room.
    roomy = Dispatcher(handler, max_in_flight=2, max_buffered=5, on_done=lambda i, r: None,
                       on_failed=lambda i, e: None)
    controls = [asyncio.create_task(roomy.wait_for_space()),
                asyncio.create_task(roomy.submit("late", ("late", 9)))]
    waiter = asyncio.create_task(d.wait_for_space())
    blocked = asyncio.create_task(d.submit("late", ("late", 9)))
    await one_turn()
    assert all(c.done() for c in controls)
    assert not waiter.done() and not blocked.done()
    release.set()
    await asyncio.wait_for(asyncio.gather(waiter, blocked), 1)
    assert await d.drain(timeout=1)
    assert await roomy.drain(timeout=1)
    assert sorted(n for _, n, _ in rec.done) == [0, 1, 2, 3, 4, 9]


async def test_running_slots_go_to_waiting_keys_in_turn() -> None:
    """A key with many items queues behind other waiting keys after each item (FIFO)."""
    order: list[Item] = []

    async def handler(key: str, item: Item) -> None:
        order.append(item)
        await asyncio.sleep(0.001)  # a call that lasts: other keys queue for the one slot

    d: Dispatcher[str, Item, None] = Dispatcher(
        handler, max_in_flight=1, max_buffered=10, on_done=lambda i, r: None,
        on_failed=lambda i, e: None,
    )
    for n in range(3):
        await d.submit("hot", ("hot", n))
    await d.submit("cold", ("cold", 0))
    assert await d.drain(timeout=1)
    assert order == [("hot", 0), ("cold", 0), ("hot", 1), ("hot", 2)]


async def test_a_key_backing_off_holds_its_running_slot() -> None:
    """Retries count as running: during an outage no more than max_in_flight keys call."""
    rec = Recorder()
    calls: list[str] = []

    async def handler(key: str, item: Item) -> None:
        calls.append(key)
        if key == "stuck":
            raise TransientTemporalError("unavailable")

    d = Dispatcher(handler, max_in_flight=1, max_buffered=4, on_done=rec.on_done,
                   on_failed=rec.on_failed, retry=RetryPolicy(initial=0.005, jitter=False))
    await d.submit("stuck", ("stuck", 0))
    await d.submit("free", ("free", 0))
    assert not await d.drain(timeout=0.05)
    assert d.running == 1
    assert set(calls) == {"stuck"}  # "free" waits for the slot
    await d.close()
    assert d.running == 0


async def test_retriable_error_backs_off_with_growing_delays_and_keeps_order() -> None:
    rec = Recorder()
    failures = {"first": 4}
    order: list[int] = []

    async def handler(key: str, item: Item) -> int:
        order.append(item[1])
        if item[1] == 0 and failures["first"] > 0:
            failures["first"] -= 1
            raise TransientTemporalError("unavailable")
        return item[1]

    d = _dispatcher(rec, handler, retry=RetryPolicy(initial=0.001, maximum=0.004, jitter=False))
    await d.submit("k", ("k", 0))
    await d.submit("k", ("k", 1))
    assert await d.drain(timeout=5)
    assert order == [0, 0, 0, 0, 0, 1]  # item 1 never overtook the retried item 0
    assert [(attempt, delay) for _, attempt, delay in rec.retries] == [
        (1, 0.001),
        (2, 0.002),
        (3, 0.004),
        (4, 0.004),  # capped at maximum
    ]
    assert [n for _, n, _ in rec.done] == [0, 1]
    assert rec.failed == []


async def test_retries_do_not_block_other_keys() -> None:
    rec = Recorder()

    async def handler(key: str, item: Item) -> int:
        if key == "stuck":
            raise TransientTemporalError("unavailable")
        return item[1]

    d = _dispatcher(rec, handler, max_in_flight=10)
    await d.submit("stuck", ("stuck", 0))
    await d.submit("stuck", ("stuck", 1))
    for n in range(5):
        await d.submit("free", ("free", n))
    assert not await d.drain(timeout=0.05)  # retry forever: never skipped
    assert [n for key, n, _ in rec.done] == [0, 1, 2, 3, 4]
    assert d.in_flight == 2
    assert rec.failed == []
    await d.close()


async def test_max_attempts_turns_a_retriable_error_into_a_failure() -> None:
    rec = Recorder()
    calls = 0

    async def handler(key: str, item: Item) -> None:
        nonlocal calls
        calls += 1
        raise TransientTemporalError("unavailable")

    d = _dispatcher(rec, handler, retry=RetryPolicy(initial=0.001, max_attempts=3, jitter=False))
    await d.submit("k", ("k", 0))
    assert await d.drain(timeout=5)
    assert calls == 3
    assert len(rec.retries) == 2
    assert [item for item, _ in rec.failed] == [("k", 0)]


def _bounded(message: str, seconds: float) -> SignalLimitError:
    err = SignalLimitError(message)
    err.retry_for = seconds
    return err


async def test_a_bounded_retriable_error_fails_once_its_time_is_up() -> None:
    # The per-run signal cap: retried while the run may still continue as new, then failed
    # (dead-lettered) with its own reason; the key carries on.
    rec = Recorder()
    first: dict[int, float] = {}

    async def handler(key: str, item: Item) -> int:
        if item[1] == 0:
            first.setdefault(0, asyncio.get_running_loop().time())
            raise _bounded("capped", 0.3)
        return item[1]

    d = _dispatcher(rec, handler)
    await d.submit("k", ("k", 0))
    await d.submit("k", ("k", 1))
    assert await d.drain(timeout=5)
    waited = asyncio.get_running_loop().time() - first[0]
    assert [item for item, _ in rec.failed] == [("k", 0)]
    assert isinstance(rec.failed[0][1], SignalLimitError)
    assert len(rec.retries) >= 2  # retried before giving up...
    assert waited >= 0.3  # ...for its whole time
    assert [n for _, n, _ in rec.done] == [1]


async def test_a_bounded_retriable_error_that_clears_in_time_succeeds() -> None:
    rec = Recorder()
    calls = 0

    async def handler(key: str, item: Item) -> str:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise _bounded("capped", 30)
        return "delivered"

    d = _dispatcher(rec, handler)
    await d.submit("k", ("k", 0))
    assert await d.drain(timeout=5)
    assert rec.failed == []
    assert rec.done == [("k", 0, "delivered")]
    assert calls == 4


@pytest.mark.parametrize("error", [PermanentTemporalError("bad"), ValueError("bug")])
async def test_non_retriable_error_calls_on_failed_and_the_key_continues(
    error: Exception,
) -> None:
    rec = Recorder()

    async def handler(key: str, item: Item) -> int:
        if item[1] == 1:
            raise error
        return item[1]

    d = _dispatcher(rec, handler)
    for n in range(3):
        await d.submit("k", ("k", n))
    assert await d.drain(timeout=5)
    assert rec.failed == [(("k", 1), error)]
    assert [n for _, n, _ in rec.done] == [0, 2]
    assert rec.retries == []


async def test_async_on_failed_completes_before_the_item_counts_as_finished() -> None:
    events: list[str] = []
    dlq_written = asyncio.Event()

    async def handler(key: str, item: int) -> int:
        if item == 0:
            raise DataValidationError("bad data")
        events.append(f"handled {item}")
        return item

    async def on_failed(item: int, exc: BaseException) -> None:
        await asyncio.sleep(0.01)  # a slow dead-letter write: submit must wait for it
        events.append(f"dead-lettered {item}")
        dlq_written.set()

    d: Dispatcher[str, int, int] = Dispatcher(
        handler,
        max_in_flight=1,
        on_done=lambda item, result: events.append(f"done {item}"),
        on_failed=on_failed,
        retry=FAST,
    )
    await d.submit("k", 0)
    assert d.in_flight == 1
    await d.submit("k", 1)  # bound 1: waits until the dead-letter write finished
    assert dlq_written.is_set()
    assert await d.drain(timeout=1)
    assert events == ["dead-lettered 0", "handled 1", "done 1"]


async def test_failing_on_failed_is_abandoned_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    """The dead-letter path retries on its own (the writer); a dispatcher loop around it could
    spin forever on an unexpected error. The item is given up (its offset never commits: Kafka
    redelivers it) and the key goes on."""
    attempts = 0
    done: list[int] = []

    async def handler(key: str, item: int) -> int:
        if item == 7:
            raise PermanentTemporalError("bad")
        return item

    async def on_failed(item: int, exc: BaseException) -> None:
        nonlocal attempts
        attempts += 1
        raise OSError("bug in the dead-letter path")

    d: Dispatcher[str, int, int] = Dispatcher(
        handler,
        max_in_flight=5,
        on_done=lambda item, result: done.append(item),
        on_failed=on_failed,
        retry=FAST,
    )
    await d.submit("k", 7)
    await d.submit("k", 8)
    assert await d.drain(timeout=5)
    assert attempts == 1
    assert done == [8]
    assert d.in_flight == 0
    assert "on_failed raised" in caplog.text


async def test_sync_on_done_error_does_not_stop_the_key(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[int] = []

    async def handler(key: str, item: int) -> int:
        return item

    def on_done(item: int, result: int) -> None:
        seen.append(item)
        if item == 0:
            raise RuntimeError("broken callback")

    d: Dispatcher[str, int, int] = Dispatcher(
        handler, max_in_flight=5, on_done=on_done, on_failed=lambda i, e: None
    )
    await d.submit("k", 0)
    await d.submit("k", 1)
    assert await d.drain(timeout=1)
    assert seen == [0, 1]
    assert "on_done raised" in caplog.text


async def test_drain_times_out_and_leaves_work_running() -> None:
    rec = Recorder()
    release = asyncio.Event()

    async def handler(key: str, item: Item) -> int:
        await release.wait()
        return item[1]

    d = _dispatcher(rec, handler)
    assert await d.drain(timeout=0.01)  # nothing in flight
    await d.submit("k", ("k", 0))
    assert not await d.drain(timeout=0.02)
    assert d.in_flight == 1
    release.set()
    assert await d.drain(timeout=1)
    assert [n for _, n, _ in rec.done] == [0]


async def test_close_cancels_in_flight_without_on_done() -> None:
    rec = Recorder()
    started = asyncio.Event()
    cancelled: list[int] = []

    async def handler(key: str, item: Item) -> int:
        started.set()
        try:
            await asyncio.sleep(10)  # a call still running when close() cancels it
        except asyncio.CancelledError:
            cancelled.append(item[1])
            raise
        return item[1]

    d = _dispatcher(rec, handler, max_in_flight=3)
    for n in range(3):
        await d.submit(f"k{n % 2}", (f"k{n % 2}", n))
    blocked = asyncio.create_task(d.submit("late", ("late", 9)))
    await started.wait()
    await d.close()
    assert sorted(cancelled) == [0, 1]  # item 2 was queued behind k0, never started
    assert rec.done == []
    assert rec.failed == []
    assert d.in_flight == 0
    assert d.keys_in_flight == 0
    assert d.closed
    with pytest.raises(DispatcherClosedError):
        await blocked
    with pytest.raises(DispatcherClosedError):
        await d.submit("k", ("k", 0))
    assert await d.drain(timeout=0.01)


async def test_close_cancels_a_retry_backoff() -> None:
    rec = Recorder()

    async def handler(key: str, item: Item) -> None:
        raise TransientTemporalError("unavailable")

    d = _dispatcher(rec, handler, retry=RetryPolicy(initial=5, maximum=5, jitter=False))
    await d.submit("k", ("k", 0))
    await eventually(lambda: rec.retries, timeout=5, interval=0.001, what="a retry")
    assert len(rec.retries) == 1
    await asyncio.wait_for(d.close(), 1)
    assert rec.done == []
    assert rec.failed == []


async def test_no_per_key_state_left_after_completion() -> None:
    rec = Recorder()

    async def handler(key: str, item: Item) -> None:
        await asyncio.sleep(0)  # a call that yields once

    d = _dispatcher(rec, handler, max_in_flight=50)
    for n in range(2000):
        key = f"wf-{n % 300}"
        await d.submit(key, (key, n))
    assert d.keys_in_flight > 0
    assert await d.drain(timeout=10)
    assert d.keys_in_flight == 0
    assert d._keys == {}
    assert d.in_flight == 0
    # A key that comes back after its state was dropped works as before.
    await d.submit("wf-1", ("wf-1", 1))
    assert await d.drain(timeout=1)
    assert len(rec.done) == 2001


async def test_item_submitted_while_key_finishes_is_not_lost() -> None:
    """An item for a key whose worker just ran dry gets a new worker."""
    rec = Recorder()

    async def handler(key: str, item: Item) -> int:
        return item[1]

    d = _dispatcher(rec, handler)
    for n in range(50):
        await d.submit("k", ("k", n))
        if n % 7 == 0:
            await asyncio.sleep(0)  # let a key's worker run dry between submits (the race under test)
    assert await d.drain(timeout=1)
    assert [n for _, n, _ in rec.done] == list(range(50))


def test_is_retriable_reads_the_flag() -> None:
    assert is_retriable(TransientTemporalError("x"))
    assert not is_retriable(PermanentTemporalError("x"))
    assert not is_retriable(RuntimeError("x"))


def test_retry_policy_validates() -> None:
    with pytest.raises(ValueError, match="initial"):
        RetryPolicy(initial=0)
    with pytest.raises(ValueError, match="initial"):
        RetryPolicy(initial=2, maximum=1)
    with pytest.raises(ValueError, match="multiplier"):
        RetryPolicy(multiplier=0.5)
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="max_in_flight"):
        Dispatcher(lambda k, i: asyncio.sleep(0), max_in_flight=0, on_done=print, on_failed=print)
    with pytest.raises(ValueError, match="max_buffered"):
        Dispatcher(lambda k, i: asyncio.sleep(0), max_in_flight=4, max_buffered=3,
                   on_done=print, on_failed=print)


@given(
    attempt=st.integers(min_value=1, max_value=5000),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_jittered_delay_stays_within_the_cap(attempt: int, seed: int) -> None:
    policy = RetryPolicy(initial=0.1, maximum=10.0, multiplier=2.0)
    cap = policy.cap(attempt)
    assert cap == min(10.0, 0.1 * 2.0 ** min(attempt - 1, 100))
    delay = policy.delay(attempt, random.Random(seed))
    assert 0.0 <= delay <= cap <= 10.0


def test_huge_multiplier_does_not_overflow() -> None:
    assert RetryPolicy(multiplier=1e6).cap(10_000) == 10.0


def test_jitter_spreads_delays() -> None:
    rng = random.Random(0)
    delays = {RetryPolicy(initial=1, maximum=1).delay(1, rng) for _ in range(20)}
    assert len(delays) == 20


# --- no wait spins (issue 21: the freeze on a backlog past the byte bound) ----------------------


async def test_a_submitter_waiting_on_the_byte_bound_yields_while_a_finish_leaves_it_full() -> None:
    """A finish that leaves the byte bound crossed must not wake the waiting submitter into a
    loop that never suspends: the loop would starve the completions that free space.

    Reproduces the freeze deterministically: bound 10 bytes, a light item (1) and a heavy one
    (20) accepted (now full), a third submit waits, the light item finishes (still full).
    """
    light_go, heavy_go = asyncio.Event(), asyncio.Event()

    async def call(key: str, n: int) -> int:
        await (light_go if n == 1 else heavy_go).wait()
        return n

    done: list[int] = []
    d: Dispatcher[str, int, int] = Dispatcher(
        call,
        max_in_flight=4,
        max_buffered=100,
        on_done=lambda n, r: done.append(n),
        on_failed=lambda n, exc: None,
        max_buffered_bytes=10,
        weight=lambda n: n,
    )
    await d.submit("a", 1)
    await d.submit("b", 20)
    assert d.full
    third = asyncio.create_task(d.submit("c", 2))
    await eventually(lambda: not third.done(), timeout=1, what="the third submit waits")
    light_go.set()
    # The light item finishing leaves 20 >= 10 bytes held: the submitter must stay suspended,
    # and the loop must keep turning (a spinning submitter would never let this await return).
    turns = 0
    async with asyncio.timeout(5):
        while 1 not in done:
            await asyncio.sleep(0)
            turns += 1
    for _ in range(10):
        await asyncio.sleep(0)
    assert d.full and not third.done()
    heavy_go.set()
    async with asyncio.timeout(5):
        await third
    assert await d.drain(timeout=5)
    assert done == [1, 20, 2]
    assert (d.in_flight, d.buffered_bytes) == (0, 0)
