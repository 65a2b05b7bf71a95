"""Redo after a crash or a rebalance: bounded, reported, and never a second dead letter.

The commit point of a partition is its contiguous finished prefix (guarantee 1), so when a
member dies, or a partition moves, what was finished beyond it is taken again by the new
owner. For a delivered event that costs a call the inbox drops; for a dead-lettered record it
would cost a second dead letter: a second page and a second re-drive for an operator.

Before the first record of a new assignment of a partition is taken, :class:`Redo` learns
what is already finished beyond the committed offset, from two places:

- **the dead-letter topic**: the letters this consumer group wrote for the partition since
  its first uncommitted record was produced (``offsets_for_times`` at that record's
  timestamp minus :attr:`~bridge.settings.KafkaSettings.redo_scan_margin_s`, read up to the
  topic's end). A letter acknowledged before the crash is found and its record skipped; a
  letter never acknowledged was never counted as done, and its record is dead-lettered once
  more (the one window left: written by the broker, its ack lost with the process);
- **the commit's metadata** (:mod:`.finished`), on a broker that keeps it (detected at the
  first commit that carries some: the embedded broker accepts metadata and answers it empty).

A letter also names its original record's timestamp: a record at a named offset with another
timestamp is another record (a topic deleted and created again under the same name) and is
taken. Nothing is skipped on a guess: only what a letter of this group or the commit names.

Records skipped count in ``loom_redo_skipped``; records taken again that lie below the
highest offset known finished count in ``loom_redo_records``, and each assignment logs
"redoing N records from offset X (M already finished)".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from bridge.kafka.clients import consumer_for, log_ends, started
from bridge.kafka.deadletters import GROUP, OFFSET, PARTITION, TIMESTAMP, TOPIC
from bridge.kafka.record import Record
from bridge.settings import KafkaSettings
from bridge.sidecar.batches import Batch, Ownership
from bridge.sidecar.finished import MetadataError, decode, encode
from bridge.sidecar.metrics import Metrics
from bridge.sidecar.offsets import OffsetTracker

__all__ = ["ReadAhead", "Redo", "broker_keeps_metadata", "letters_since", "moved_back", "settle"]

log = logging.getLogger("loom")

Origin = tuple[str, int]


@dataclass(slots=True)
class _Assignment:
    """What is known finished beyond the commit point of one assignment of a partition."""

    epoch: int
    start: int
    finished: set[int] = field(default_factory=set)
    high: int = -1  # the highest offset known finished when the assignment began
    # The original timestamps the dead letters name: a record at a finished offset with
    # another timestamp is another record (a topic recreated under the same name).
    stamps: dict[int, int] = field(default_factory=dict)


def _header(headers: Iterable[tuple[str, bytes | None]], name: str) -> str | None:
    for key, value in headers:
        if key == name and value is not None:
            return value.decode("utf-8", "replace")
    return None


def _origin(
    headers: Iterable[tuple[str, bytes | None]],
) -> tuple[str, int, int, int | None] | None:
    """The original topic, partition, offset and timestamp a letter names (None: a letter it
    cannot be)."""
    topic, partition, offset, stamp = (
        _header(headers, n) for n in (TOPIC, PARTITION, OFFSET, TIMESTAMP)
    )
    if topic is None or partition is None or offset is None:
        return None
    if not partition.isdigit() or not offset.isdigit():
        return None
    return topic, int(partition), int(offset), int(stamp) if stamp and stamp.isdigit() else None


async def letters_since(
    consumer: AIOKafkaConsumer,
    topic: str,
    since_ms: int,
    *,
    group: str,
    origins: set[Origin],
    max_records: int,
    timeout: float = 30.0,
) -> dict[Origin, dict[int, int | None]]:
    """The origin offsets of the letters ``group`` wrote to ``topic`` for ``origins``, among
    those written from ``since_ms`` (broker timestamps, ms) to the topic's end now, each with
    the original record's timestamp (None when the letter does not say).

    Reads at most ``max_records`` letters (a warning when the bound cuts the read short).

    Args:
        consumer: A started consumer outside any group (it is assigned and moved).
        topic: The dead-letter topic.
        since_ms: Where to start, by timestamp (``offsets_for_times``).
        group: Only letters carrying this ``loom-dlq-group`` count.
        origins: The original (topic, partition) pairs asked about.
        max_records: Bound on the letters read.
        timeout: Bound on the read, in seconds.
    """
    found: dict[Origin, dict[int, int | None]] = {}
    if topic not in await consumer.topics():  # also refreshes the cluster metadata
        return found
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    if not tps:
        return found
    ends = await log_ends(consumer, tps)
    answers = await consumer.offsets_for_times(dict.fromkeys(tps, max(0, since_ms)))
    starts: dict[TopicPartition, int] = {}
    for tp in tps:
        answer = answers.get(tp)
        # None: nothing at or after the time. The embedded broker answers that with offset 0
        # and timestamp -1, which would read the whole topic: also nothing.
        if answer is None or answer.timestamp < 0:
            continue
        if answer.offset < ends[tp]:
            starts[tp] = answer.offset
    if not starts:
        return found
    consumer.assign(list(starts))
    for tp, offset in starts.items():
        consumer.seek(tp, offset)
    remaining = set(starts)
    read = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while remaining and read < max_records and loop.time() < deadline:
        batch = await consumer.getmany(*remaining, timeout_ms=200)
        for tp, records in batch.items():
            for rec in records:
                if rec.offset >= ends[tp]:
                    break
                read += 1
                headers = Record.from_aiokafka(rec).headers
                if _header(headers, GROUP) != group:
                    continue
                origin = _origin(headers)
                if origin is not None and (origin[0], origin[1]) in origins:
                    found.setdefault((origin[0], origin[1]), {})[origin[2]] = origin[3]
        for tp in list(remaining):
            if await consumer.position(tp) >= ends[tp]:
                remaining.discard(tp)
    if remaining:
        log.warning(
            "reading the dead-letter topic %r stopped after %d letters (bound %d, %.0fs): "
            "records dead-lettered before may be dead-lettered again", topic, read,
            max_records, timeout,
        )
    return found


def moved_back(tp: TopicPartition, last: int, offset: int) -> None:
    """The tracker's ``on_reset``: a partition's offset went back (a seek, an offset reset)."""
    log.warning(
        "%s[%d]: offset %d after %d (a seek or an offset reset): tracking the partition again",
        tp.topic, tp.partition, offset, last,
    )


async def broker_keeps_metadata(
    consumer: AIOKafkaConsumer, sent: Mapping[TopicPartition, OffsetAndMetadata]
) -> bool:
    """Whether the group's committed offsets, fetched back, carry the metadata just committed
    (``sent``: a commit of ``consumer``'s group). The embedded broker accepts metadata and
    answers it empty."""
    fetched = await consumer._coordinator.fetch_committed_offsets(list(sent))
    return all(
        (got := fetched.get(tp)) is not None and got.metadata == meta.metadata
        for tp, meta in sent.items()
    )


async def settle(
    tracker: OffsetTracker[TopicPartition], tps: Iterable[TopicPartition], timeout: float
) -> bool:
    """Wait, at most ``timeout`` seconds, until no record of ``tps`` is in flight: a revoked
    partition committed then hands nothing finished over to be redone. True when settled.

    Polls every 20 ms (a real suspension each time): the records finish in other tasks.
    """
    tps = list(tps)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while any(tracker.in_flight(tp) for tp in tps):
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


class ReadAhead:
    """A bound on the records read ahead of each partition's commit point: what a crash or a
    rebalance redoes, at most. A partition at the bound is paused until its commit moves.

    Args:
        bound: Records (offsets) beyond the commit point; 0: no bound.
        metrics: ``loom_partition_pauses`` counts the pauses.
    """

    def __init__(self, bound: int, metrics: Metrics) -> None:
        self.bound = bound
        self._metrics = metrics
        self.paused: set[TopicPartition] = set()

    def apply(self, consumer: AIOKafkaConsumer, tracker: OffsetTracker[TopicPartition]) -> None:
        """Pause the partitions at the bound, resume those below it (before each fetch)."""
        if not self.bound:
            return
        assignment = consumer.assignment()
        self.paused &= assignment
        for tp in assignment:
            if tracker.uncommitted(tp) >= self.bound:
                consumer.pause(tp)  # again too: a pause for space resumes every partition
                if tp not in self.paused:
                    self.paused.add(tp)
                    self._metrics.paused.inc()
            elif tp in self.paused:
                self.paused.discard(tp)
                consumer.resume(tp)


class Redo:
    """What a new owner of a partition need not do again, and what it reports about it.

    Args:
        reader: Builds a (not started) consumer outside any group, to read the dead-letter
            topic.
        ownership: The loop's view of the assignments (their epochs).
        deadletter_topic: Where the loom writes dead letters.
        group: The consumer group (only its own letters count).
        metrics: ``loom_redo_records`` and ``loom_redo_skipped``.
        margin_s: How far before a partition's first uncommitted record the dead-letter topic
            is read (clock skew between producers and the loom).
        max_scan: Bound on the letters read per assignment.
    """

    def __init__(
        self,
        reader: Callable[[], AIOKafkaConsumer],
        ownership: Ownership,
        *,
        deadletter_topic: str,
        group: str,
        metrics: Metrics,
        margin_s: float,
        max_scan: int,
    ) -> None:
        self._reader = reader
        self._ownership = ownership
        self._topic = deadletter_topic
        self._group = group
        self._metrics = metrics
        self._margin_ms = int(margin_s * 1000)
        self._max_scan = max_scan
        self._assignments: dict[TopicPartition, _Assignment] = {}
        # Finished offsets beyond the committed one, read from the commit's metadata at
        # assignment (``.finished``), waiting for the partition's first record.
        self.from_metadata: dict[TopicPartition, tuple[int, set[int]]] = {}
        #: Whether the broker keeps commit metadata: None until the first commit carrying
        #: finished offsets was fetched back and compared.
        self.metadata_kept: bool | None = None
        self._undecodable_logged = False

    @classmethod
    def from_settings(cls, kafka: KafkaSettings, ownership: Ownership, metrics: Metrics) -> Redo:
        """The loom's: its group, its dead-letter topic, the ``redo_scan_*`` settings."""
        return cls(
            lambda: consumer_for(kafka, group_id=None, enable_auto_commit=False),
            ownership, deadletter_topic=kafka.deadletter_topic, group=kafka.group_id,
            metrics=metrics, margin_s=kafka.redo_scan_margin_s, max_scan=kafka.redo_scan_max,
        )

    def _new(self, batch: Batch) -> dict[TopicPartition, int]:
        """The partitions of ``batch`` whose current assignment is not prepared yet."""
        new: dict[TopicPartition, int] = {}
        for tp, records in batch.records.items():
            epoch = batch.epochs.get(tp)
            if not records or epoch is None or not self._ownership.owns(tp, epoch):
                continue
            known = self._assignments.get(tp)
            if known is None or known.epoch != epoch:
                new[tp] = epoch
        return new

    async def prepare(self, batch: Batch) -> None:
        """Learn what is finished beyond the commit point of each partition of ``batch`` taken
        for the first time under its current assignment (before any of its records is)."""
        new = self._new(batch)
        if not new:
            return
        firsts = {tp: batch.records[tp][0] for tp in new}
        stamps = [r.timestamp for r in firsts.values() if r.timestamp is not None]
        since = min(stamps, default=0) - self._margin_ms
        letters: dict[Origin, dict[int, int | None]] = {}
        try:
            async with started(self._reader()) as reader:
                letters = await letters_since(
                    reader, self._topic, since, group=self._group,
                    origins={(tp.topic, tp.partition) for tp in new}, max_records=self._max_scan,
                )
        except Exception as exc:  # the scan saves repeats: it must never stop the line
            log.warning("reading the dead-letter topic %r at assignment failed (records "
                        "dead-lettered before may be dead-lettered again): %r", self._topic, exc)
        for tp, epoch in new.items():
            start = firsts[tp].offset
            named = {o: t for o, t in letters.get((tp.topic, tp.partition), {}).items() if o >= start}
            done = set(named)
            base, finished = self.from_metadata.pop(tp, (start, set()))
            if base == start:
                done |= finished
            state = self._assignments[tp] = _Assignment(
                epoch, start, done, max(done, default=-1),
                {o: t for o, t in named.items() if t is not None},
            )
            redo = max(0, state.high - start + 1 - len(done))
            log.log(
                logging.WARNING if redo or done else logging.INFO,
                "%s[%d]: redoing %d records from offset %d (%d already finished)",
                tp.topic, tp.partition, redo, start, len(done),
            )

    def skips(self, tp: TopicPartition, record: Record) -> bool:
        """Whether ``record`` is already finished (skip it); counts the record as skipped, or
        as redone when it lies below the highest offset known finished."""
        state = self._assignments.get(tp)
        offset = record.offset
        if state is None or not state.finished or offset < state.start:
            return False
        stamp = state.stamps.get(offset)
        if stamp is not None and record.timestamp is not None and stamp != record.timestamp:
            state.finished.discard(offset)  # a letter for another record at this offset
        if offset in state.finished:
            state.finished.discard(offset)
            self._metrics.redo_skipped.inc()
            return True
        if offset < state.high:
            self._metrics.redo_records.inc()
        return False

    async def hand_over(
        self,
        consumer: AIOKafkaConsumer | None,
        tracker: OffsetTracker[TopicPartition],
        revoked: set[TopicPartition],
        kafka: KafkaSettings,
    ) -> dict[TopicPartition, int]:
        """Revoke ``revoked`` from ``tracker`` and commit them; returns the offsets committed.

        What is in flight finishes first, for at most ``revoke_drain_s`` (and half the
        session timeout, or the group would expel this member): the commit then hands
        nothing finished over to be redone. What is left finished beyond the commit point
        travels in its metadata, where the broker keeps it.
        """
        await settle(tracker, revoked, min(kafka.revoke_drain_s, kafka.session_timeout_ms / 2000))
        offsets = tracker.revoke(revoked, with_finished=self.metadata_kept is not False)
        if not offsets or consumer is None:
            return {}
        finished = tracker.revoked_finished
        try:
            await consumer.commit(
                self.commit_offsets(offsets, lambda tp, _: finished.get(tp, set()))
            )
        except KafkaError as exc:  # CommitFailedError is one
            log.warning("commit on revocation failed (records will be redelivered): %s", exc)
            return {}
        return offsets

    # --- the commit's metadata -------------------------------------------------------------

    def commit_offsets(
        self, offsets: Mapping[TopicPartition, int],
        finished: Callable[[TopicPartition, int], set[int]],
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """``offsets`` with the offsets finished beyond each in the metadata (none once the
        broker is known to drop metadata; none, counted, when they cannot fit)."""
        result: dict[TopicPartition, OffsetAndMetadata] = {}
        for tp, offset in offsets.items():
            text: str | None = ""
            if self.metadata_kept is not False:
                text = encode(offset, finished(tp, offset))
                if text is None:
                    self._metrics.metadata_fallbacks.inc()
                    text = ""
            result[tp] = OffsetAndMetadata(offset, text)
        return result

    async def committed(
        self, consumer: AIOKafkaConsumer, sent: Mapping[TopicPartition, OffsetAndMetadata]
    ) -> None:
        """After a commit: the first one carrying finished offsets tells whether the broker
        keeps them (commit, fetch, compare)."""
        if self.metadata_kept is not None or not any(m.metadata for m in sent.values()):
            return
        try:
            kept = await broker_keeps_metadata(consumer, sent)
        except Exception as exc:  # asked again at the next commit
            log.info("could not fetch the commit back to compare its metadata: %r", exc)
            return
        self.metadata_kept = kept
        if kept:
            log.info("the broker keeps commit metadata: finished offsets beyond the commit "
                     "point travel in it, and a new owner skips them")
        else:
            log.warning("the broker drops commit metadata (it answers it empty): only the "
                        "dead-letter topic tells a new owner what was finished, so records "
                        "delivered beyond the commit point are redone after a crash")

    async def read_metadata(self, consumer: AIOKafkaConsumer, tps: Iterable[TopicPartition]) -> None:
        """At assignment: the finished offsets the last commit of each partition carries."""
        tps = list(tps)
        if self.metadata_kept is False or not tps:
            return
        try:
            fetched = await consumer._coordinator.fetch_committed_offsets(tps)
        except Exception as exc:  # the metadata saves redo: it must never stop the line
            log.warning("fetching the committed offsets' metadata failed: %r", exc)
            return
        for tp, meta in fetched.items():
            try:
                decoded = decode(meta.metadata or "")
            except MetadataError as exc:
                self._metrics.metadata_undecodable.inc()
                if not self._undecodable_logged:
                    self._undecodable_logged = True
                    log.warning(
                        "%s[%d]: commit metadata the loom cannot read (%s): the committed "
                        "offset alone counts (logged once)", tp.topic, tp.partition, exc,
                    )
                continue
            if decoded is not None and decoded[0] == meta.offset:
                self.from_metadata[tp] = decoded
