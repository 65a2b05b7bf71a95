"""Metrics (prometheus-client) and health state of the sidecar.

Every sidecar owns a :class:`Metrics` on its own ``CollectorRegistry`` so that several loom
instances in one process (tests, ``loom dev``) never share counters. The registry also carries
what prometheus-client's default registry would: the process, platform and GC collectors
(``process_*``, ``python_info``, ``python_gc_*``); the sidecar adds the Temporal SDK's own
client metrics (``bridge.temporal.metrics``).

Per-partition series (``loom_committed_offset``, ``loom_consumer_lag``) exist only while this
member owns the partition: :meth:`Metrics.revoke_partitions` removes them on revocation, so a
dashboard summing lag over the group never counts a partition twice (and a partition kept
through a rebalance gets its committed offset back when the rebalance ends).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from bridge.map.recording import Recording


class Metrics:
    """The loom's Prometheus metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # prometheus-client's default collectors, built anew on this registry (its module-level
        # instances belong to the global registry, which the sidecar does not expose).
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.consumed = Counter(
            "loom_events_consumed", "Records taken from Kafka", ["topic"], registry=r
        )
        self.routed = Counter(
            "loom_events_routed",
            "Temporal calls completed per route and outcome",
            ["route", "outcome"],
            registry=r,
        )
        self.unmatched = Counter(
            "loom_events_unmatched", "Events no route matched", ["policy"], registry=r
        )
        self.deadlettered = Counter(
            "loom_events_deadlettered",
            "Records written to the dead-letter topic",
            ["reason"],
            registry=r,
        )
        self.deadletter_failed = Counter(
            "loom_deadletter_failed",
            "Records left uncommitted: the dead-letter topic refused them and their summary",
            registry=r,
        )
        self.retries = Counter(
            "loom_temporal_retries",
            "Retried Temporal calls (transient errors)",
            ["reason"],
            registry=r,
        )
        self.call_latency = Histogram(
            "loom_temporal_call_seconds",
            "Latency of Temporal calls",
            ["kind"],
            registry=r,
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.batch_events = Histogram(
            "loom_batch_events",
            "Events per Temporal call (a coalesced call carries the events queued behind its "
            "workflow id)",
            registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
        )
        self.batch_splits = Counter(
            "loom_batch_splits",
            "Coalesced calls refused for good: their events went one by one",
            ["reason"],
            registry=r,
        )
        # Issue 23: what a new owner of a partition did again, and what it knew to skip.
        self.redo_records = Counter(
            "loom_redo_records",
            "Records taken again after a crash or a rebalance, below the highest offset known "
            "finished (the commit's metadata, the dead-letter topic)",
            registry=r,
        )
        self.redo_skipped = Counter(
            "loom_redo_skipped",
            "Records skipped after a crash or a rebalance: finished before (delivered or "
            "dead-lettered), known from the commit's metadata or the dead-letter topic",
            registry=r,
        )
        self.metadata_fallbacks = Counter(
            "loom_commit_metadata_fallbacks",
            "Commits whose finished offsets could not fit in the metadata (plain commit)",
            registry=r,
        )
        self.metadata_undecodable = Counter(
            "loom_commit_metadata_undecodable",
            "Committed offsets whose metadata the loom cannot read (ignored)",
            registry=r,
        )
        self.in_flight = Gauge(
            "loom_in_flight", "Records' calls accepted, not finished (bounded by max_buffered)",
            registry=r,
        )
        self.running = Gauge(
            "loom_calls_running", "Temporal calls running now (bounded by max_in_flight)",
            registry=r,
        )
        self.committed = Gauge(
            "loom_committed_offset", "Last committed offset", ["topic", "partition"], registry=r
        )
        self.lag = Gauge(
            "loom_consumer_lag",
            "High watermark minus committed offset",
            ["topic", "partition"],
            registry=r,
        )
        self.loop_lag = Histogram(
            "loom_event_loop_lag_seconds",
            "How late a timer on the event loop ran (sampled every 0.25 s): a busy or "
            "blocked loop answers late",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=r,
        )
        self.paused = Counter("loom_partition_pauses", "Times partitions were paused", registry=r)
        self.partitions = Gauge(
            "loom_partitions_assigned",
            "Partitions this group member owns (0 is normal with more members than partitions)",
            registry=r,
        )

        #: What the choreography map shows (off until the sidecar turns it on: ``LOOM_MAP__*``).
        self.recording = Recording(registry=r, enabled=False)
        # Committed offsets of partitions revoked by a rebalance that is not over yet.
        self._parked: dict[tuple[str, int], float] = {}

    def forget_partition(self, topic: str, partition: int) -> None:
        """Remove the per-partition series of a partition this member no longer owns."""
        for gauge in (self.committed, self.lag):
            with contextlib.suppress(KeyError):
                gauge.remove(topic, str(partition))

    def revoke_partitions(
        self, partitions: Iterable[tuple[str, int]], committed: Mapping[tuple[str, int], int]
    ) -> None:
        """A rebalance took ``partitions``: remove their series.

        Kafka's eager protocol revokes every partition and then assigns back the ones a member
        keeps, so the last committed offsets (``committed``: the ones just committed on
        revocation) are kept aside for :meth:`assign_partitions`.
        """
        current = {
            (s.labels["topic"], int(s.labels["partition"])): s.value
            for family in self.committed.collect() for s in family.samples
        }
        for key in partitions:
            if key in committed:
                self._parked[key] = committed[key]
            elif key in current:
                self._parked[key] = current[key]
            self.forget_partition(*key)

    def assign_partitions(self, partitions: Iterable[tuple[str, int]]) -> None:
        """The rebalance ended with ``partitions``: the committed offset of those this member
        kept is back; the others stay removed."""
        for key in partitions:
            if key in self._parked:
                self.committed.labels(key[0], str(key[1])).set(self._parked[key])
        self._parked.clear()


@dataclass
class Health:
    """Liveness and readiness of one sidecar.

    Readiness is being connected: to Kafka (the consumer joined its group and the cluster
    answers) and to Temporal (the namespace answers). Owning partitions is not part of it:
    with more members than partitions the idle ones must be ready too, or a rolling update
    that adds a member before removing one never completes. Ownership is
    ``loom_partitions_assigned``.
    """

    running: bool = False
    kafka_connected: bool = False
    group_joined: bool = False
    temporal_connected: bool = False
    assigned: set[tuple[str, int]] = field(default_factory=set)

    @property
    def live(self) -> bool:
        """The process loop is running."""
        return self.running

    @property
    def ready(self) -> bool:
        """Running, in the consumer group, and connected to Kafka and Temporal."""
        return (
            self.running
            and self.kafka_connected
            and self.group_joined
            and self.temporal_connected
        )


def metric_total(metric: Counter | Gauge, **labels: str) -> float:
    """Sum of a counter's or gauge's current values, optionally filtered by labels."""
    total = 0.0
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith(("_created",)):
                continue
            if all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
