"""A time window of a topic: the offsets to read, and a reader that stops at the window's end.

``loom replay`` reads the records of a past window again. The broker names the first offset
(``offsets_for_times``), but its answer is not trusted blindly, because brokers differ:

- Kafka answers ``None`` for a time after the last record; the embedded broker (Tansu)
  answers offset 0 with timestamp -1 instead, which would rewind the replay to the start of
  the partition. Both mean "nothing from here": the span starts at the end offset.
- Tansu indexes by the broker's append time, not the records' own (CreateTime) timestamps,
  and Kafka's records may be out of timestamp order. So the answer is clamped to the
  partition's offsets, records are read at most up to the end offset the partition had when
  the replay began (records written since are not the past), and each record is kept only if
  its own timestamp is in the window: the window is the same whatever the broker answers.
- With an end to the window, a partition stops at its first record whose own timestamp is at
  or past the end plus ``lateness`` (the window's end as the records tell it): a window far
  in the past costs its own records, not the rest of the partition. A record timestamped in
  the window but written after one past that bound is not read (producers whose clocks or
  buffers disagree: raise ``lateness``). Without an end, or with no such record, the span
  ends where the partition ended when the replay began.
- Tansu's end offset (``ListOffsets`` latest) is the base offset of the last batch plus one,
  short of the end when that batch holds several records (measured: 4 records in one batch,
  end offset 1). The high watermark of a fetch response is right: the end is the larger of
  the two.

The reader assigns its partitions itself: it never joins a group, so it neither waits for a
rebalance nor disturbs the sidecar's group (a replay commits its progress to a group of its
own, :mod:`bridge.sidecar.replay`). It fetches through the sidecar's
:class:`~bridge.sidecar.batches.BatchFetcher`, so a record aiokafka cannot parse is handed
over marked unreadable (for the dead-letter topic) instead of wedging the replay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from bridge.exceptions import SetupError
from bridge.kafka.clients import log_ends
from bridge.kafka.record import Record
from bridge.sidecar.batches import BatchFetcher, Ownership

__all__ = ["Span", "Window", "WindowReader", "plan_spans"]


@dataclass(frozen=True)
class Window:
    """Record timestamps from ``start`` (included) to ``end`` (excluded; None: no end), in
    milliseconds since the epoch."""

    start: int
    end: int | None = None

    def __post_init__(self) -> None:
        if self.end is not None and self.end <= self.start:
            raise ValueError("the window's end must be after its start")

    def contains(self, timestamp: int | None) -> bool:
        """Whether a record with this timestamp is in the window (no timestamp: it is not)."""
        if timestamp is None or timestamp < 0:
            return False
        return self.start <= timestamp and (self.end is None or timestamp < self.end)


@dataclass(frozen=True)
class Span:
    """The offsets of one partition to read: ``start`` up to ``stop`` (excluded)."""

    tp: TopicPartition
    start: int
    stop: int

    @property
    def size(self) -> int:
        """How many offsets the span covers."""
        return max(0, self.stop - self.start)


async def plan_spans(
    consumer: AIOKafkaConsumer, topics: Iterable[str], window: Window
) -> list[Span]:
    """The span of every partition of ``topics`` for ``window`` (see the module's rules).

    Raises:
        SetupError: A topic does not exist.
    """
    known = await consumer.topics()  # also refreshes the cluster metadata
    tps: list[TopicPartition] = []
    for topic in topics:
        partitions = consumer.partitions_for_topic(topic) if topic in known else None
        if not partitions:
            raise SetupError(f"topic {topic!r} does not exist")
        tps += [TopicPartition(topic, p) for p in sorted(partitions)]
    begins = await consumer.beginning_offsets(tps)
    ends = await log_ends(consumer, tps)
    found = await consumer.offsets_for_times(dict.fromkeys(tps, window.start))
    spans = []
    for tp in tps:
        answer, end = found.get(tp), ends[tp]
        if answer is None or answer.timestamp < 0 or answer.offset >= end:
            start = end  # nothing at or after the window's start
        else:
            start = min(max(answer.offset, begins[tp]), end)
        spans.append(Span(tp, start, end))
    return spans


class WindowReader:
    """Reads the spans from a started consumer, stopping each partition at its span's end.

    Args:
        consumer: A started consumer that joined no group; :meth:`open` assigns and seeks it.
        spans: What to read.
        window: Records whose own timestamps are outside it are read and left out.
        read_committed: The consumer's isolation level (records read raw are filtered alike).
        backoff: Seconds to wait after the ``n``-th failed fetch in a row (see
            :class:`~bridge.sidecar.batches.BatchFetcher`).
        lateness_ms: With an end to the window, a partition stops at its first record
            timestamped at or past ``end + lateness_ms`` (see the module).
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        spans: Iterable[Span],
        window: Window,
        *,
        read_committed: bool = False,
        backoff: Callable[[int], float] = lambda n: min(0.1 * 2**n, 5.0),
        lateness_ms: int = 0,
    ) -> None:
        if lateness_ms < 0:
            raise ValueError("lateness must not be negative")
        self.consumer = consumer
        self.window = window
        self.stop_at = None if window.end is None else window.end + lateness_ms
        self.spans = [s for s in spans if s.size]
        self._ended: dict[TopicPartition, int] = {}  # partitions stopped by a record's time
        self._remaining = {s.tp: s for s in self.spans}
        self._position = {s.tp: s.start for s in self.spans}
        self._ownership = Ownership()
        self._fetcher = BatchFetcher(
            consumer, self._ownership, read_committed=read_committed, backoff=backoff
        )
        #: Records read whose timestamp is outside the window.
        self.outside = 0

    def open(self) -> None:
        """Assign the partitions and seek each to its span's start."""
        tps = [s.tp for s in self.spans]
        self.consumer.assign(tps)
        self._ownership.assigned(tps)
        for span in self.spans:
            self.consumer.seek(span.tp, span.start)

    def _stop(self, span: Span) -> int:
        return self._ended.get(span.tp, span.stop)

    @property
    def total(self) -> int:
        """Offsets to read in all (less once a partition stopped at the window's end)."""
        return sum(self._stop(s) - s.start for s in self.spans)

    @property
    def read(self) -> int:
        """Offsets read so far (records in the window or not, and gaps)."""
        return sum(min(self._position[s.tp], self._stop(s)) - s.start for s in self.spans)

    @property
    def ended_early(self) -> int:
        """Partitions that stopped at a record past the window's end (see the module)."""
        return len(self._ended)

    @property
    def done(self) -> bool:
        """Whether every partition reached its span's end."""
        return not self._remaining

    async def fetch(self, max_records: int) -> list[tuple[TopicPartition, Record]]:
        """The next records in the window, in partition order (possibly none)."""
        if not self._remaining:
            return []
        batch = await self._fetcher.fetch(timeout_ms=200, max_records=max(1, max_records))
        taken: list[tuple[TopicPartition, Record]] = []
        for tp, records in batch.records.items():
            span = self._remaining.get(tp)
            if span is None:
                continue
            for rec in records:
                if rec.offset >= span.stop:
                    break
                if self.stop_at is not None and (rec.timestamp or 0) >= self.stop_at:
                    self._ended[tp] = rec.offset  # the window's end, as the records tell it
                    self._position[tp] = rec.offset
                    del self._remaining[tp]
                    self.consumer.pause(tp)
                    break
                self._position[tp] = rec.offset + 1
                if self.window.contains(rec.timestamp):
                    taken.append((tp, rec))
                else:
                    self.outside += 1
        for tp, span in list(self._remaining.items()):
            # The position also passes offsets that hold no record (transaction markers,
            # compacted records).
            position = max(self._position[tp], await self.consumer.position(tp))
            self._position[tp] = position
            if position >= span.stop:
                del self._remaining[tp]
                self.consumer.pause(tp)
        return taken
