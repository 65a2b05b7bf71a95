"""Tests for bridge.sidecar.offsets: contiguous commits, gaps, revocation, reassignment."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.sidecar.offsets import OffsetTracker, Ticket

TP = ("orders", 0)
TP2 = ("orders", 1)


def _tracker() -> OffsetTracker[tuple[str, int]]:
    return OffsetTracker()


def test_nothing_committable_before_anything_finishes() -> None:
    tracker = _tracker()
    tracker.track(TP, 0)
    tracker.track(TP, 1)
    assert tracker.committable() == {}
    assert tracker.in_flight() == 2
    assert tracker.in_flight(TP) == 2


def test_fast_event_behind_slow_one_never_moves_the_commit() -> None:
    tracker = _tracker()
    tickets = [tracker.track(TP, o) for o in range(5)]
    for t in tickets[1:]:
        assert tracker.done(t)
    assert tracker.committable() == {}
    assert tracker.in_flight(TP) == 1
    assert tracker.done(tickets[0])
    assert tracker.committable() == {TP: 5}
    assert tracker.in_flight() == 0


def test_commit_stops_at_first_unfinished_offset() -> None:
    tracker = _tracker()
    t = [tracker.track(TP, o) for o in range(6)]
    for i in (0, 1, 3, 5):
        tracker.done(t[i])
    assert tracker.committable() == {TP: 2}
    tracker.done(t[2])
    assert tracker.committable() == {TP: 4}


def test_gaps_commit_lowest_pending_or_last_done_plus_one() -> None:
    tracker = _tracker()
    a, b, c = (tracker.track(TP, o) for o in (10, 14, 20))
    tracker.done(a)
    # 11..13 were never delivered (compacted): the commit may jump to the next pending one.
    assert tracker.committable() == {TP: 14}
    tracker.done(c)
    assert tracker.committable() == {TP: 14}
    tracker.done(b)
    assert tracker.committable() == {TP: 21}


def test_committable_reports_only_what_moved() -> None:
    tracker = _tracker()
    a = tracker.track(TP, 0)
    b = tracker.track(TP2, 7)
    tracker.done(a)
    tracker.done(b)
    offsets = tracker.committable()
    assert offsets == {TP: 1, TP2: 8}
    tracker.mark_committed(offsets)
    assert tracker.committable() == {}
    tracker.done(tracker.track(TP, 1))
    assert tracker.committable() == {TP: 2}


def test_older_mark_committed_does_not_move_back() -> None:
    tracker = _tracker()
    tracker.done(tracker.track(TP, 0))
    first = tracker.committable()
    tracker.done(tracker.track(TP, 1))
    second = tracker.committable()
    tracker.mark_committed(second)
    tracker.mark_committed(first)  # a late completion of an older commit
    assert tracker.committable() == {}


def test_done_twice_counts_once() -> None:
    tracker = _tracker()
    a = tracker.track(TP, 0)
    b = tracker.track(TP, 1)
    assert tracker.done(b)
    assert not tracker.done(b)
    assert tracker.in_flight() == 1
    assert tracker.done(a)
    assert not tracker.done(a)
    assert tracker.in_flight() == 0
    assert tracker.committable() == {TP: 2}


def test_an_offset_going_backwards_retracks_the_partition() -> None:
    """A seek, or an offset reset (out of range, unclean leader election), moves the position
    back within one assignment: the partition starts over, as if revoked and assigned again,
    and the loop never raises on it."""
    resets: list[tuple[tuple[str, int], int, int]] = []
    tracker: OffsetTracker[tuple[str, int]] = OffsetTracker(
        on_reset=lambda tp, last, offset: resets.append((tp, last, offset))
    )
    old = [tracker.track(TP, o) for o in range(5, 8)]
    other = tracker.track(TP2, 0)
    tracker.done(old[0])
    again = tracker.track(TP, 6)  # back to 6: 6 and 7 come again
    assert resets == [(TP, 7, 6)]
    assert again.generation != old[1].generation
    assert tracker.in_flight(TP) == 1 and tracker.in_flight() == 2
    assert not tracker.done(old[1]) and not tracker.done(old[2])  # the old ones no longer count
    assert tracker.committable() == {}  # nothing finished since the reset
    tracker.done(again)
    assert tracker.committable() == {TP: 7}
    same = tracker.track(TP, 6)  # the same offset again is a reset too
    assert resets[-1] == (TP, 6, 6) and same.generation != again.generation
    tracker.done(other)
    assert tracker.committable() == {TP2: 1}


def test_negative_offsets_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        _tracker().track(TP, -1)


def test_revoke_returns_finished_work_and_forgets_partition() -> None:
    tracker = _tracker()
    t = [tracker.track(TP, o) for o in range(4)]
    other = tracker.track(TP2, 0)
    tracker.done(t[0])
    tracker.done(t[1])
    tracker.done(t[3])
    assert tracker.revoke([TP]) == {TP: 2}
    assert tracker.partitions == frozenset({TP2})
    assert tracker.in_flight() == 1
    assert tracker.in_flight(TP) == 0
    # The late finisher of the revoked partition produces nothing.
    assert not tracker.done(t[2])
    assert tracker.committable() == {}
    tracker.done(other)
    assert tracker.committable() == {TP2: 1}


def test_revoke_skips_what_was_already_committed_and_unknown_partitions() -> None:
    tracker = _tracker()
    tracker.done(tracker.track(TP, 0))
    tracker.mark_committed(tracker.committable())
    tracker.track(TP, 1)
    assert tracker.revoke([TP, ("unknown", 9)]) == {}


def test_reassigned_partition_ignores_tickets_of_earlier_assignment() -> None:
    tracker = _tracker()
    old = [tracker.track(TP, o) for o in range(3)]
    tracker.done(old[0])
    assert tracker.revoke([TP]) == {TP: 1}
    # Assigned again: the group resumes from the committed offset 1.
    new = [tracker.track(TP, o) for o in range(1, 4)]
    assert new[0].generation != old[1].generation
    # Late completions of the old assignment, same offsets: must not count.
    assert not tracker.done(old[1])
    assert not tracker.done(old[2])
    assert tracker.committable() == {}
    assert tracker.in_flight(TP) == 3
    tracker.done(new[0])
    assert tracker.committable() == {TP: 2}


def test_ticket_carries_partition_and_offset() -> None:
    tracker = _tracker()
    ticket = tracker.track(TP, 42)
    assert isinstance(ticket, Ticket)
    assert (ticket.tp, ticket.offset) == (TP, 42)


def _reference(tracked: list[int], finished: set[int]) -> int | None:
    """Commit position by definition: every tracked offset below it is done."""
    if not tracked or tracked[0] not in finished:
        return None
    pending = [o for o in tracked if o not in finished]
    return min(pending) if pending else max(tracked) + 1


@given(
    gaps=st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=60),
    data=st.data(),
)
def test_committable_always_equals_reference(gaps: list[int], data: st.DataObject) -> None:
    offsets: list[int] = []
    position = data.draw(st.integers(min_value=0, max_value=1000))
    for gap in gaps:
        offsets.append(position)
        position += gap
    tracker = _tracker()
    tickets = [tracker.track(TP, o) for o in offsets]
    order = data.draw(st.permutations(range(len(tickets))))
    finished: set[int] = set()
    committed: int | None = None
    for step, i in enumerate(order):
        tracker.done(tickets[i])
        finished.add(offsets[i])
        expected = _reference(offsets, finished)
        got = tracker.committable().get(TP)
        if expected is None or expected == committed:
            assert got is None
        else:
            assert got == expected
            # Never past an unfinished offset.
            assert all(o in finished for o in offsets if o < got)
            if step % 3 == 0:
                tracker.mark_committed({TP: got})
                committed = got
        assert tracker.in_flight() == len(offsets) - len(finished)
    assert tracker.in_flight() == 0


@given(
    n=st.integers(min_value=1, max_value=30),
    data=st.data(),
)
def test_interleaved_track_and_done(n: int, data: st.DataObject) -> None:
    """Records finish while more are tracked, as they do in the consumer."""
    tracker = _tracker()
    tracked: list[int] = []
    open_tickets: list[Ticket[tuple[str, int]]] = []
    finished: set[int] = set()
    next_offset = 0
    for _ in range(n * 2):
        finish: bool = data.draw(st.booleans())
        if open_tickets and finish:
            t = open_tickets.pop(data.draw(st.integers(0, len(open_tickets) - 1)))
            assert tracker.done(t)
            finished.add(t.offset)
        else:
            open_tickets.append(tracker.track(TP, next_offset))
            tracked.append(next_offset)
            next_offset += data.draw(st.integers(1, 3))
        assert tracker.committable().get(TP) == _reference(tracked, finished)


def test_holds_a_ticket_until_it_is_done_or_its_partition_revoked() -> None:
    tracker = _tracker()
    a, b = tracker.track(TP, 0), tracker.track(TP, 1)
    assert tracker.holds(a) and tracker.holds(b)
    tracker.done(b)
    assert tracker.holds(a) and not tracker.holds(b)
    tracker.revoke([TP])
    assert not tracker.holds(a)
    c = tracker.track(TP, 0)  # assigned again: the old ticket stays stale
    assert tracker.holds(c) and not tracker.holds(a)
