"""The Temporal SDK's own client metrics, on the loom's Prometheus registry.

The SDK's core records its metrics (``temporal_request``, ``temporal_request_latency``,
``temporal_request_failure``, ``temporal_long_request``, ... labelled by ``operation``,
``namespace``, ``status_code``) into the telemetry of a ``Runtime``. :class:`TemporalMetrics`
gives that runtime a ``MetricBuffer`` and is itself a prometheus-client collector, so the
metrics are served from the sidecar's own ``/metrics`` (no second port)::

    sdk = TemporalMetrics.for_process()
    client = await Client.connect(..., runtime=sdk.runtime)
    registry.register(sdk)
    ...
    sdk.drain()   # regularly (the sidecar's health loop, every second)

A buffered update is a delta for counters, the current value for gauges and one observation
for histograms, so the collector keeps the totals; a full buffer drops updates, hence the
regular :meth:`TemporalMetrics.drain`. Each ``Runtime`` starts a thread pool of its own: there is
one per process (:meth:`TemporalMetrics.for_process`).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable
from typing import ClassVar

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from temporalio.runtime import (
    BUFFERED_METRIC_KIND_COUNTER,
    BUFFERED_METRIC_KIND_GAUGE,
    MetricBuffer,
    MetricBufferDurationFormat,
    Runtime,
    TelemetryConfig,
)

__all__ = ["TemporalMetrics"]

_Labels = tuple[tuple[str, str], ...]
_Key = tuple[str, _Labels]


class TemporalMetrics(Collector):
    """A Temporal ``Runtime`` whose metrics a prometheus-client registry can collect.

    Args:
        buffer_size: Updates the buffer holds between two drains.
    """

    #: Histogram buckets, in seconds (durations are read as seconds).
    BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

    _process: ClassVar[TemporalMetrics | None] = None
    _process_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, buffer_size: int = 100_000) -> None:
        self._buffer = MetricBuffer(buffer_size, MetricBufferDurationFormat.SECONDS)
        self.runtime = Runtime(telemetry=TelemetryConfig(metrics=self._buffer))
        self._lock = threading.Lock()
        self._meta: dict[str, tuple[int, str]] = {}
        self._counters: dict[_Key, float] = defaultdict(float)
        self._gauges: dict[_Key, float] = {}
        # Per series: one count per bucket (cumulative), then the sum, then the count.
        self._histograms: dict[_Key, list[float]] = {}

    @classmethod
    def for_process(cls) -> TemporalMetrics:
        """The process's one instance (created on first use)."""
        with cls._process_lock:
            if cls._process is None:
                cls._process = cls()
            return cls._process

    def drain(self) -> None:
        """Move the buffered updates into the totals (call it regularly)."""
        with self._lock:
            for update in self._buffer.retrieve_updates():
                metric = update.metric
                labels = tuple(sorted((k, str(v)) for k, v in update.attributes.items()))
                key = (metric.name, labels)
                self._meta.setdefault(metric.name, (metric.kind, metric.description or metric.name))
                if metric.kind == BUFFERED_METRIC_KIND_COUNTER:
                    self._counters[key] += update.value
                elif metric.kind == BUFFERED_METRIC_KIND_GAUGE:
                    self._gauges[key] = update.value
                else:
                    counts = self._histograms.setdefault(key, [0.0] * (len(self.BUCKETS) + 2))
                    for i, bound in enumerate(self.BUCKETS):
                        if update.value <= bound:
                            counts[i] += 1
                    counts[-2] += update.value
                    counts[-1] += 1

    def collect(self) -> Iterable[Metric]:
        """The SDK's metrics as metric families (drains first)."""
        self.drain()
        with self._lock:
            # Series of one metric may carry different labels (GetSystemInfo has no
            # namespace): a family gets the union, missing ones empty.
            names: dict[str, set[str]] = defaultdict(set)
            for name, labels in [*self._counters, *self._gauges, *self._histograms]:
                names[name].update(k for k, _ in labels)
            families: dict[str, tuple[Metric, list[str]]] = {}
            for name, label_names in names.items():
                kind, help_text = self._meta[name]
                ordered = sorted(label_names)
                family: Metric
                if kind == BUFFERED_METRIC_KIND_COUNTER:
                    family = CounterMetricFamily(name, help_text, labels=ordered)
                elif kind == BUFFERED_METRIC_KIND_GAUGE:
                    family = GaugeMetricFamily(name, help_text, labels=ordered)
                else:
                    family = HistogramMetricFamily(name, help_text, labels=ordered)
                families[name] = (family, ordered)

            def values(name: str, labels: _Labels) -> list[str]:
                given = dict(labels)
                return [given.get(k, "") for k in families[name][1]]

            for (name, labels), value in [*self._counters.items(), *self._gauges.items()]:
                family = families[name][0]
                if isinstance(family, CounterMetricFamily | GaugeMetricFamily):
                    family.add_metric(values(name, labels), value)
            for (name, labels), counts in self._histograms.items():
                family = families[name][0]
                if isinstance(family, HistogramMetricFamily):
                    buckets = [(str(b), counts[i]) for i, b in enumerate(self.BUCKETS)]
                    family.add_metric(
                        values(name, labels), [*buckets, ("+Inf", counts[-1])], counts[-2]
                    )
            return [family for family, _ in families.values()]
