"""Metrics (prometheus-client) and health state of the sidecar.

Every sidecar owns a :class:`Metrics` on its own ``CollectorRegistry`` so that several loom
instances in one process (tests, ``loom dev``) never share counters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """The loom's Prometheus metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
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
        self.paused = Counter("loom_partition_pauses", "Times partitions were paused", registry=r)


@dataclass
class Health:
    """Liveness and readiness of one sidecar."""

    running: bool = False
    kafka_connected: bool = False
    temporal_connected: bool = False
    assigned: set[tuple[str, int]] = field(default_factory=set)

    @property
    def live(self) -> bool:
        """The process loop is running."""
        return self.running

    @property
    def ready(self) -> bool:
        """Connected to both sides and owning at least one partition."""
        return (
            self.running
            and self.kafka_connected
            and self.temporal_connected
            and bool(self.assigned)
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
