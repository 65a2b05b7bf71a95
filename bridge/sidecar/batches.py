"""Fetching batches for the loop: who owns what since when, and records aiokafka cannot parse.

Two things can make a fetched batch lie to the loop, and this module keeps both out of it:

- **A rebalance while the batch is being taken.** aiokafka revokes and re-assigns partitions
  in its coordinator task while the loop awaits (a dead-letter write, ``submit`` waiting for
  room). After a rebalance every partition restarts at its committed offset, even one this
  member kept, so the rest of a batch fetched before it must not be taken: it would be
  tracked under the new assignment and could be committed past records of the old one still
  in flight. :class:`Ownership` gives each assignment of a partition an epoch; a
  :class:`Batch` remembers the epoch its records were fetched under.
- **A record aiokafka cannot parse** (a header name that is not UTF-8, see
  :mod:`bridge.kafka.rawfetch`). ``getmany`` then raises on every call, and records it had
  already drained from other partitions in that call are lost with the exception while their
  positions moved on. :class:`BatchFetcher` snapshots the positions before each call; on such
  an error it seeks every partition back, reads the partitions raw, hands over the records up
  to the end of the bad batch (the bad one marked ``unreadable``, for the dead-letter topic)
  and seeks past that batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import count

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError

from bridge.kafka.rawfetch import fetch_raw, is_parse_error, to_record
from bridge.kafka.record import Record

__all__ = ["Batch", "BatchFetcher", "Ownership", "positions"]

log = logging.getLogger("loom")


class Ownership:
    """The partitions this member owns, each with the epoch of its current assignment.

    Updated by the rebalance listener (which runs in aiokafka's coordinator task, whenever the
    loop awaits). An epoch is never reused: a partition revoked and assigned again gets a new
    one, so "still owned" and "owned since the batch was fetched" can be told apart.
    """

    def __init__(self) -> None:
        self._epochs: dict[TopicPartition, int] = {}
        self._counter = count(1)

    def assigned(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            self._epochs[tp] = next(self._counter)

    def revoked(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            self._epochs.pop(tp, None)

    def epoch(self, tp: TopicPartition) -> int | None:
        """The epoch of the current assignment of ``tp``; None when it is not owned."""
        return self._epochs.get(tp)

    def owns(self, tp: TopicPartition, epoch: int | None) -> bool:
        """Whether ``tp`` is owned under the same assignment as at ``epoch``."""
        return epoch is not None and self._epochs.get(tp) == epoch


@dataclass(slots=True)
class Batch:
    """Records fetched in one call, per partition in offset order, with the epoch each
    partition was owned under when they were fetched."""

    records: dict[TopicPartition, list[Record]]
    epochs: dict[TopicPartition, int | None]

    def __len__(self) -> int:
        return sum(len(records) for records in self.records.values())


def positions(consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
    """The fetch positions of the assigned partitions that have one, read without waiting.

    ``consumer.position()`` would wait for a partition whose position is being reset; this
    reads aiokafka's subscription state instead, and gives nothing while no assignment holds.
    """
    subscription = getattr(consumer._subscription, "subscription", None)
    assignment = getattr(subscription, "assignment", None)
    if assignment is None:
        return {}
    result: dict[TopicPartition, int] = {}
    for tp in assignment.tps:
        state = assignment.state_value(tp)
        if state is not None and state.has_valid_position:
            result[tp] = state.position
    return result


class BatchFetcher:
    """``getmany`` that never loses a record to one aiokafka cannot parse.

    Args:
        consumer: The started consumer (subscribed, manual commit).
        ownership: The rebalance listener's view of what this member owns.
        read_committed: The consumer's isolation level (the raw reader filters the same way).
        backoff: Seconds to wait after the ``n``-th failed call in a row that no unreadable
            record explains (the error is logged each time; the loop goes on).
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        ownership: Ownership,
        *,
        read_committed: bool,
        backoff: Callable[[int], float],
    ) -> None:
        self._consumer = consumer
        self._ownership = ownership
        self._read_committed = read_committed
        self._backoff = backoff
        self._failures = 0
        self.unreadable = 0  # records handed over marked unreadable (metrics, tests)

    def _epochs(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int | None]:
        return {tp: self._ownership.epoch(tp) for tp in tps}

    async def _positions(self) -> dict[TopicPartition, int]:
        consumer = self._consumer
        found = positions(consumer)
        for tp in consumer.assignment() - found.keys():
            # Being reset (just assigned): getmany would wait for it as well. Without it, the
            # records a failed call drained from this partition could not be fetched again.
            try:
                found[tp] = await consumer.position(tp)
            except (IllegalStateError, KafkaError) as err:  # revoked meanwhile
                log.info("no position for %s: %s", tp, err)
        return found

    async def fetch(self, *, timeout_ms: int, max_records: int) -> Batch:
        """One batch; empty after a failed call (seeked back: the next call fetches again)."""
        before = await self._positions()
        epochs = self._epochs(before)
        try:
            fetched = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        except Exception as exc:
            if not is_parse_error(exc):
                raise
            return await self._recover(before, epochs, exc)
        # No await between the return of getmany and the epochs: they are the fetch's.
        self._failures = 0
        return Batch(
            {tp: [Record.from_aiokafka(r) for r in records] for tp, records in fetched.items()},
            self._epochs(fetched),
        )

    async def _recover(
        self,
        before: dict[TopicPartition, int],
        epochs: dict[TopicPartition, int | None],
        exc: BaseException,
    ) -> Batch:
        consumer = self._consumer
        # A partition assigned again since the snapshot restarts at its committed offset:
        # the snapshot says nothing about it any more.
        before = {tp: o for tp, o in before.items() if self._ownership.owns(tp, epochs[tp])}
        now = positions(consumer)
        for tp, offset in before.items():
            # Records drained from tp in the failed call were lost with it: fetch them again.
            if now.get(tp, offset) != offset:
                self._seek(tp, offset)
        found: dict[TopicPartition, list[Record]] = {}
        try:
            fetched = await fetch_raw(
                consumer._client, before, read_committed=self._read_committed,
                max_bytes=consumer._fetcher._max_partition_fetch_bytes,
            )
        except Exception as err:  # the raw read is the recovery: never let it stop the loop
            log.warning("reading partitions raw after %r failed: %r", exc, err)
            fetched = {}
        for tp, batches in fetched.items():
            start = before[tp]
            records: list[Record] = []
            for batch in batches:
                taken = [to_record(tp, r) for r in batch.records if r.offset >= start]
                records += taken
                if any(r.unreadable for r in taken):
                    # Everything up to the end of the bad batch goes to the loop; seeking to the
                    # next record alone would not do: aiokafka parses whole batches.
                    found[tp] = records
                    self.unreadable += sum(1 for r in taken if r.unreadable)
                    self._seek(tp, batch.next_offset)
                    log.error(
                        "%s[%d]: records aiokafka cannot parse in offsets %d..%d: read raw, "
                        "the unreadable ones go to the dead-letter topic",
                        tp.topic, tp.partition, start, batch.next_offset - 1,
                    )
                    break
        if found:
            self._failures = 0
            return Batch(found, {tp: epochs.get(tp) for tp in found})
        self._failures += 1
        delay = self._backoff(self._failures)
        log.error(
            "fetching failed and no unreadable record explains it (%d in a row, next try in "
            "%.1fs): %s: %s", self._failures, delay, type(exc).__name__, exc,
        )
        await asyncio.sleep(delay)
        return Batch({}, {})

    def _seek(self, tp: TopicPartition, offset: int) -> None:
        try:
            self._consumer.seek(tp, offset)
        except (IllegalStateError, AssertionError) as err:  # revoked meanwhile: not ours now
            log.info("no seek of %s to %d: %s", tp, offset, err)

