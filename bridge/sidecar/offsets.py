"""Per-partition commit tracking: commit only what is done, and contiguously so.

Guarantee 1 of the design: a Kafka offset is committed only after its event was acknowledged by
Temporal or dead-lettered, and a fast event behind a slow one never moves the commit past the
slow one. The consumer calls :meth:`OffsetTracker.track` for every record it takes,
:meth:`OffsetTracker.done` when the record is finished, and periodically commits
:meth:`OffsetTracker.committable`.

Offsets of a partition need not be contiguous (compacted topics, transaction markers), so the
commit position is "every tracked offset below it is done": the lowest offset still pending,
or the last done offset + 1 when nothing is pending.

An offset at or below the last one tracked (a seek, an offset reset after an unclean leader
election) starts the partition over, as a revocation and a new assignment would: records of
the earlier run that finish later no longer count, and nothing raises in the loop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from itertools import count
from typing import Generic, NamedTuple, TypeVar

__all__ = ["OffsetTracker", "Ticket"]

P = TypeVar("P", bound=Hashable)


class Ticket(NamedTuple, Generic[P]):
    """Receipt for one tracked record; hand it back to :meth:`OffsetTracker.done`.

    Attributes:
        tp: The topic-partition the record came from.
        offset: The record's offset.
        generation: The assignment the record was taken under; a ticket of an earlier
            assignment of the same partition is ignored by ``done``.
    """

    tp: P
    offset: int
    generation: int


class _Partition:
    """State of one assigned partition."""

    __slots__ = (
        "committed", "committed_finished", "done", "first", "generation", "last_done",
        "last_tracked", "pending",
    )

    def __init__(self, generation: int) -> None:
        self.generation = generation
        # Offsets tracked and not yet popped, in increasing order; the head is the lowest
        # offset that is not known to be contiguously done.
        self.pending: deque[int] = deque()
        # Offsets finished out of order: still in ``pending``, behind an unfinished head.
        self.done: set[int] = set()
        self.last_done: int | None = None
        self.last_tracked: int | None = None
        self.committed: int | None = None
        self.first: int | None = None  # the first offset tracked in this assignment
        self.committed_finished = 0  # len(done) when last committed (the commit's metadata)

    def position(self) -> int | None:
        """The offset to commit, or None while nothing has finished yet."""
        if self.last_done is None:
            # Committing the first pending offset before anything finished would be safe but
            # useless: it only repeats where the group already stands.
            return None
        if self.pending:
            return self.pending[0]
        return self.last_done + 1

    def in_flight(self) -> int:
        return len(self.pending) - len(self.done)

    def commit_point(self, with_finished: bool) -> int | None:
        """:meth:`position`, or with ``with_finished`` the head when only offsets finished
        beyond it changed since the last commit (they travel in the commit's metadata)."""
        position = self.position()
        if position is not None and position != self.committed:
            return position
        if with_finished and self.pending and len(self.done) != self.committed_finished:
            return self.pending[0]
        return None


class OffsetTracker(Generic[P]):
    """Tracks finished offsets per partition and tells what may be committed.

    ``P`` is the topic-partition type (aiokafka's ``TopicPartition``, or anything hashable).
    A partition is assigned implicitly by its first :meth:`track`; :meth:`revoke` forgets it,
    and tickets taken before that are ignored afterwards, even if the partition comes back.
    ``track`` and ``done`` are O(1) amortised.

    Args:
        on_reset: Called as ``on_reset(tp, last_tracked, offset)`` when an offset goes
            backwards and the partition starts over (for logs).

    Example:
        >>> tracker: OffsetTracker[str] = OffsetTracker()
        >>> a, b = tracker.track("t-0", 10), tracker.track("t-0", 11)
        >>> tracker.done(b)
        True
        >>> tracker.committable()
        {}
        >>> tracker.done(a)
        True
        >>> tracker.committable()
        {'t-0': 12}
    """

    def __init__(self, *, on_reset: Callable[[P, int, int], None] | None = None) -> None:
        self._on_reset = on_reset
        self._partitions: dict[P, _Partition] = {}
        # One counter for every partition: a generation number is never reused, so a ticket
        # of an earlier assignment can never match a later one.
        self._generations = count(1)
        self._in_flight = 0
        #: Offsets finished beyond the commit point of the partitions last revoked with
        #: ``with_finished`` (read by the revocation's commit).
        self.revoked_finished: dict[P, set[int]] = {}

    def track(self, tp: P, offset: int) -> Ticket[P]:
        """Registers a record taken from the consumer.

        Args:
            tp: The record's topic-partition.
            offset: The record's offset; normally above the previous one tracked for ``tp``
                (gaps are fine). One at or below it means the position went back (a seek, an
                offset reset): the partition starts over, as after :meth:`revoke`.

        Returns:
            The ticket to pass to :meth:`done` when the record is finished.

        Raises:
            ValueError: ``offset`` is negative (no Kafka record has one).
        """
        if offset < 0:
            raise ValueError(f"offset {offset} of {tp!r} is negative")
        part = self._partitions.get(tp)
        if part is None:
            part = self._partitions[tp] = _Partition(next(self._generations))
        elif part.last_tracked is not None and offset <= part.last_tracked:
            last = part.last_tracked
            self._in_flight -= part.in_flight()
            part = self._partitions[tp] = _Partition(next(self._generations))
            if self._on_reset is not None:
                self._on_reset(tp, last, offset)
        part.last_tracked = offset
        if part.first is None:
            part.first = offset
        part.pending.append(offset)
        self._in_flight += 1
        return Ticket(tp, offset, part.generation)

    def done(self, ticket: Ticket[P]) -> bool:
        """Marks a record finished (acknowledged by Temporal, or dead-lettered).

        Args:
            ticket: The ticket :meth:`track` returned.

        Returns:
            True when the ticket counted; False when it was ignored because its partition was
            revoked since (a stale generation) or it was already done.
        """
        part = self._partitions.get(ticket.tp)
        if part is None or part.generation != ticket.generation:
            return False
        pending = part.pending
        offset = ticket.offset
        if not pending or offset < pending[0] or offset in part.done:
            return False
        self._in_flight -= 1
        if offset != pending[0]:
            part.done.add(offset)
            return True
        pending.popleft()
        last = offset
        # Each offset enters and leaves ``pending`` and ``done`` once: O(1) amortised.
        finished = part.done
        while pending and pending[0] in finished:
            last = pending.popleft()
            finished.discard(last)
        part.last_done = last
        return True

    def holds(self, ticket: Ticket[P]) -> bool:
        """Whether ``ticket`` is still tracked and unfinished (its partition not revoked or
        started over since it was taken)."""
        part = self._partitions.get(ticket.tp)
        return (
            part is not None and part.generation == ticket.generation
            and bool(part.pending) and ticket.offset >= part.pending[0]
            and ticket.offset not in part.done
        )

    def committable(self, *, with_finished: bool = False) -> dict[P, int]:
        """The offsets to commit now: per partition, those that moved since the last commit.

        Args:
            with_finished: Also the partitions whose offsets finished beyond the commit point
                (:meth:`finished_after`) changed since the last commit, at their commit
                point, when the commit carries them in its metadata.

        Returns:
            ``{tp: offset}`` where ``offset`` is the next offset to consume (Kafka's commit
            convention); empty when nothing moved.
        """
        result: dict[P, int] = {}
        for tp, part in self._partitions.items():
            point = part.commit_point(with_finished)
            if point is not None:
                result[tp] = point
        return result

    def finished_after(self, tp: P, offset: int) -> set[int]:
        """The offsets of ``tp`` finished beyond ``offset`` (its commit point), out of order."""
        part = self._partitions.get(tp)
        return set() if part is None else {o for o in part.done if o > offset}

    def uncommitted(self, tp: P) -> int:
        """Records of ``tp`` read beyond its last commit (counted by offset: gaps count), the
        records a crash would make the next owner take again, at most."""
        part = self._partitions.get(tp)
        if part is None or part.last_tracked is None or part.first is None:
            return 0
        base = part.first if part.committed is None else part.committed
        return max(0, part.last_tracked + 1 - base)

    def mark_committed(self, offsets: Mapping[P, int]) -> None:
        """Records that ``offsets`` (as returned by :meth:`committable`) were committed.

        Partitions no longer assigned are skipped.
        """
        for tp, offset in offsets.items():
            part = self._partitions.get(tp)
            if part is not None and (part.committed is None or offset >= part.committed):
                part.committed = offset
                part.committed_finished = len(part.done)

    def revoke(self, tps: Iterable[P], *, with_finished: bool = False) -> dict[P, int]:
        """Forgets revoked partitions and returns their last committable offsets.

        Tickets of these partitions that finish later are ignored, even if the partition is
        assigned again (by a later :meth:`track`).

        Args:
            tps: The revoked partitions; unknown ones are skipped.
            with_finished: As for :meth:`committable`; the offsets finished beyond each
                commit point are then left in :attr:`revoked_finished` for the commit.

        Returns:
            ``{tp: offset}`` for the finished work not yet committed, to commit before the
            revocation completes.
        """
        result: dict[P, int] = {}
        self.revoked_finished = {}
        for tp in tps:
            part = self._partitions.pop(tp, None)
            if part is None:
                continue
            self._in_flight -= part.in_flight()
            point = part.commit_point(with_finished)
            if point is not None:
                result[tp] = point
                if with_finished:
                    self.revoked_finished[tp] = {o for o in part.done if o > point}
        return result

    def in_flight(self, tp: P | None = None) -> int:
        """Counts records tracked and not yet done, for one partition or all of them."""
        if tp is None:
            return self._in_flight
        part = self._partitions.get(tp)
        return 0 if part is None else part.in_flight()

    @property
    def partitions(self) -> frozenset[P]:
        """The partitions currently tracked (assigned and seen at least once)."""
        return frozenset(self._partitions)
