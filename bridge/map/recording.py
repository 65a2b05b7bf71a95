"""What the sidecar saw, for the choreography map: live counters and a bounded ring of records.

On the hot path the loom only appends small tuples and bumps dict counters (no formatting,
no copies of event data unless ``LOOM_MAP__SHOW_DATA`` allows it); everything readable is
made from them when a page asks. The ring holds, per workflow id, the events received (with
their outcome: delivered, duplicate, dead-lettered and why, coalesced into call N), the calls
made to Temporal, linked by ids: ``(source, id)`` of events, ``causationid`` of their causes.
It is bounded in entries and in (estimated) bytes; ``loom_map_evicted`` counts what fell out.

Each replica records what it takes: its own partitions, nothing else.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from bridge.actions import Invocation, Outcome
from bridge.events import CAUSATION, CAUSATION_ID, CORRELATION, CORRELATION_ID, Event, link_value
from bridge.kafka.record import Record
from bridge.temporal.calls import TemporalExecutor

__all__ = ["KEY_LIMIT", "Entry", "RecordedExecutor", "Recording"]

#: Distinct keys a live counter keeps (types, sources, reasons): hostile input with a new
#: type per event must not grow the sidecar's memory; the rest is counted under ``(other)``.
KEY_LIMIT = 500
OTHER = "(other)"
# Estimated bytes of one ring entry beside its strings (tuple, floats, ints, references).
_ENTRY_OVERHEAD = 200

#: One ring entry: ``(kind, time, workflow id, fields...)``. Kinds:
#: ``in``: (topic, partition, offset, type, id, source, correlation, causation, route, data)
#: ``out``: (event id, route, outcome, detail), ``dead``: (topic, partition, offset, type, id,
#: route, reason), ``call``: (call number, action, route, event ids).
Entry = tuple[Any, ...]


def _bump(counter: dict[Any, int], key: Any) -> None:
    if key in counter or len(counter) < KEY_LIMIT:
        counter[key] = counter.get(key, 0) + 1
    else:
        counter[OTHER] = counter.get(OTHER, 0) + 1


@dataclass
class Live:
    """Cumulative counters since start (the page computes rates from their changes)."""

    #: (source, topic) -> events taken
    sources: dict[Any, int] = field(default_factory=dict)
    #: (topic, type) -> events taken
    types: dict[Any, int] = field(default_factory=dict)
    #: route -> events done (any outcome)
    routes: dict[str, int] = field(default_factory=dict)
    #: (route, outcome) -> events
    outcomes: dict[Any, int] = field(default_factory=dict)
    #: (route or None, type or None, reason) -> dead letters
    dead: dict[Any, int] = field(default_factory=dict)
    #: type -> [count, one sample event id]: events that no route took
    unrouted: dict[str, list[Any]] = field(default_factory=dict)
    #: malformed correlation values seen (``correlationid`` or ``causationid``)
    malformed: int = 0


class Recording:
    """The map's recording: live counters and the bounded ring.

    Args:
        max_entries: Ring bound in entries.
        max_bytes: Ring bound in estimated bytes.
        keep_data: Keep each event's data in the ring (shown on its timeline).
        registry: Where ``loom_map_evicted`` and ``loom_malformed_links`` are registered.
        enabled: When False every hook returns at once (the bench's "off").
    """

    def __init__(
        self,
        *,
        max_entries: int = 20_000,
        max_bytes: int = 8 * 1024 * 1024,
        keep_data: bool = False,
        registry: CollectorRegistry | None = None,
        enabled: bool = True,
    ) -> None:
        self.enabled = enabled
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.keep_data = keep_data
        self.ring: deque[Entry] = deque()
        self._sizes: deque[int] = deque()
        self.bytes = 0
        self.live = Live()
        self.started = time.time()
        self._calls = 0
        #: Records that fell out of the ring (``loom_map_evicted``, read when scraped: a plain
        #: int on the hot path, no lock).
        self.evictions = 0
        if registry is not None:
            registry.register(_Evicted(self))
        self.malformed_links = Counter(
            "loom_malformed_links",
            "Events whose correlationid or causationid was malformed (ignored for linking)",
            ["attribute"], registry=registry,
        )

    def configure(
        self, *, enabled: bool, max_entries: int, max_bytes: int, keep_data: bool
    ) -> None:
        """Apply the map's settings (``LOOM_MAP__*``) before the first record."""
        self.enabled = enabled
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.keep_data = keep_data

    # --- the ring ----------------------------------------------------------------------------

    def _append(self, entry: Entry, size: int) -> None:
        ring, sizes = self.ring, self._sizes
        if len(ring) >= self.max_entries:
            ring.popleft()
            self.bytes -= sizes.popleft()
            self.evictions += 1
        ring.append(entry)
        sizes.append(size)
        self.bytes += size
        while self.bytes > self.max_bytes and ring:
            ring.popleft()
            self.bytes -= sizes.popleft()
            self.evictions += 1

    # --- hooks (the hot path) ----------------------------------------------------------------

    def received(self, record: Record, event: Event, invocations: Iterable[Invocation]) -> None:
        """An event was taken and resolved into ``invocations`` (none: unrouted)."""
        if not self.enabled:
            return
        ext = event.extensions
        correlation = ext.get(CORRELATION_ID)
        if correlation is None:
            correlation = link_value(ext.get(CORRELATION))
        elif link_value(correlation) is None:
            correlation = link_value(ext.get(CORRELATION))
            self._malformed("correlationid")
        causation = ext.get(CAUSATION_ID)
        if causation is None:
            causation = link_value(ext.get(CAUSATION))
        elif link_value(causation) is None:
            causation = link_value(ext.get(CAUSATION))
            self._malformed("causationid")
        live = self.live
        _bump(live.sources, (event.source, record.topic))
        _bump(live.types, (record.topic, event.type))
        data = event.data if self.keep_data else None
        size = _ENTRY_OVERHEAD + len(event.id) + len(event.type) + len(event.source)
        if data is not None:
            size += len(record.value or b"")
        now = time.time()
        routed = False
        for inv in invocations:
            routed = True
            self._append(
                ("in", now, inv.workflow_id, record.topic, record.partition, record.offset,
                 event.type, event.id, event.source, correlation, causation, inv.route, data),
                size + len(inv.workflow_id),
            )
        if not routed:
            found = live.unrouted.get(event.type)
            if found is not None:
                found[0] += 1
            elif len(live.unrouted) < KEY_LIMIT:
                live.unrouted[event.type] = [1, event.id]
            self._append(
                ("in", now, None, record.topic, record.partition, record.offset, event.type,
                 event.id, event.source, correlation, causation, None, data),
                size,
            )

    def _malformed(self, attribute: str) -> None:
        self.live.malformed += 1
        self.malformed_links.labels(attribute).inc()

    def done(self, inv: Invocation, outcome: Outcome) -> None:
        """The call carrying ``inv`` answered ``outcome``."""
        if not self.enabled:
            return
        route = inv.route
        routes = self.live.routes
        routes[route] = routes.get(route, 0) + 1
        _bump(self.live.outcomes, (route, outcome.value))
        self._append(("out", time.time(), inv.workflow_id, inv.event.id, route, outcome.value,
                      None), _ENTRY_OVERHEAD)

    def dead_lettered(
        self, record: Record, event: Event | None, route: str | None, reason: str,
        workflow_id: str | None,
    ) -> None:
        """``record`` went to the dead-letter topic for ``reason``."""
        if not self.enabled:
            return
        type_ = event.type if event is not None else None
        _bump(self.live.dead, (route, type_, reason))
        self._append(
            ("dead", time.time(), workflow_id, record.topic, record.partition, record.offset,
             type_, event.id if event is not None else None, route, reason),
            _ENTRY_OVERHEAD,
        )

    def call(self, inv: Invocation) -> None:
        """A call to Temporal is about to be made (one event, or a coalesced batch)."""
        if not self.enabled:
            return
        self._calls += 1
        ids = tuple(i.event.id for i in inv.batch) if inv.batch else (inv.event.id,)
        self._append(("call", time.time(), inv.workflow_id, self._calls, inv.kind.value,
                      inv.route, ids), _ENTRY_OVERHEAD + 40 * len(ids))

    # --- reading (pages) -----------------------------------------------------------------------

    def snapshot(self) -> list[Entry]:
        """A copy of the ring (one C-level copy: safe to hand to a thread)."""
        return list(self.ring)

    def find(self, query: str) -> str | None:
        """The workflow id a query names: a workflow id, an event id or a correlation id."""
        entries = self.snapshot()
        for entry in reversed(entries):
            if entry[2] == query:
                return query
        for entry in reversed(entries):
            if entry[0] == "in" and entry[2] is not None and query in (entry[7], entry[9]):
                return str(entry[2])
        return None


class _Evicted(Collector):
    """``loom_map_evicted``, read from the recording's plain counter when scraped."""

    def __init__(self, recording: Recording) -> None:
        self.recording = recording

    def collect(self) -> Iterable[CounterMetricFamily]:
        family = CounterMetricFamily(
            "loom_map_evicted", "Records that fell out of the map's ring (its bound)"
        )
        family.add_metric([], self.recording.evictions)
        yield family


class RecordedExecutor(TemporalExecutor):
    """The Temporal executor, recording each call it makes (the map's "calls to Temporal")."""

    recording: Recording | None = None

    async def execute(self, inv: Invocation, **kwargs: Any) -> tuple[Outcome, Any]:
        """Record the call, then make it (:meth:`TemporalExecutor.execute`)."""
        if self.recording is not None:
            self.recording.call(inv)
        return await super().execute(inv, **kwargs)
