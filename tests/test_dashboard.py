"""The Grafana dashboard queries only metrics that a running sidecar exports.

Every metric name in the dashboard's PromQL is extracted and looked up on the ``/metrics`` of
a real ``loom run`` (the kit's loom subprocess, on the session's Kafka and Temporal), after one routed and one dead-lettered record made the labelled series exist.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kit import StartLoom, eventually, loom_settings
from prometheus_client.parser import text_string_to_metric_families
from recorder import RECORDER, ROUTES_WITH_STEP, publish, write_routes

from bridge.dev import free_port
from bridge.events import Event
from bridge.testing import TemporalServer

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "temporal-loom.json"

#: What the dashboard must show (its panels may query more).
REQUIRED = {
    "loom_events_routed_total",  # throughput by route and outcome
    "loom_events_consumed_total",
    "loom_events_deadlettered_total",  # dead letters by reason
    "loom_temporal_retries_total",
    "loom_consumer_lag",  # lag per partition
    "loom_calls_running",
    "loom_in_flight",
    "loom_temporal_call_seconds_bucket",  # call latency quantiles
    "loom_partition_pauses_total",
    "loom_redo_records_total",  # redo after a crash or a rebalance (issue 23)
    "loom_redo_skipped_total",
}
#: Queried metrics whose series exist only after a transient Temporal error: a labelled
#: counter exports no sample before its first increment, only its HELP and TYPE.
DECLARED_ONLY = {"loom_temporal_retries_total"}

# PromQL words that look like metric names.
_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "and", "or", "unless", "atan2", "inf", "nan",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME = re.compile(r"(?<![\w.:$])[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    text = _STRING.sub("", expr)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery windows
    text = _LABEL_LIST.sub("", text)  # grouping and matching label lists
    text = re.sub(r"\$\{[^}]*\}|\$\w+", "", text)  # Grafana variables
    names = set()
    for match in _NAME.finditer(text):
        name = match.group()
        if name.lower() in _KEYWORDS or text[match.end():].lstrip().startswith("("):
            continue  # a keyword, or a function or aggregation
        names.add(name)
    return names


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))  # collapsed rows hold their panels


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in panels(dashboard["panels"]) for t in p.get("targets", [])]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable["type"] == "query":
            query = variable["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def queried_metrics() -> set[str]:
    return {name for expr in dashboard_exprs() for name in metric_names(expr)}


def exported(text: str) -> tuple[set[str], set[str]]:
    """(sample names present, sample names declared) in a /metrics exposition."""
    present: set[str] = set()
    declared: set[str] = set()
    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_count", "_sum"],
                "summary": ["", "_count", "_sum"]}
    for family in text_string_to_metric_families(text):
        present |= {sample.name for sample in family.samples}
        declared |= {family.name + suffix for suffix in suffixes.get(family.type, [""])}
    return present, declared


def test_metric_names_are_extracted_from_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, kind) '
        '(rate(loom_temporal_call_seconds_bucket{kind=~"signal.*", job="x"}[$__rate_interval])))'
    )
    assert metric_names(expr) == {"loom_temporal_call_seconds_bucket"}
    expr = (
        "sum by (reason) (increase(loom_events_deadlettered_total[5m] offset 1h)) "
        "/ on (reason) group_left max without (instance) (other:recorded_rule) > bool 1e3"
    )
    assert metric_names(expr) == {"loom_events_deadlettered_total", "other:recorded_rule"}
    assert metric_names("sum(rate(a_total[${__rate_interval}])) / sum(b) * 100") == {"a_total", "b"}


def test_the_dashboard_shows_the_loom_metrics() -> None:
    queried = queried_metrics()
    assert queried >= REQUIRED, REQUIRED - queried
    assert all(name.startswith("loom_") for name in queried), queried


@pytest.mark.kafka
@pytest.mark.temporal
async def test_every_metric_the_dashboard_queries_is_exported_by_a_running_sidecar(
    tmp_path: Path,
    loom_kafka_bootstrap: str,
    loom_temporal: TemporalServer,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    task_queue: str,
    start_loom: StartLoom,
) -> None:
    queried = queried_metrics()
    topic, dlq = await new_topic(partitions=2), await new_topic()
    settings = loom_settings(
        loom_kafka_bootstrap, [topic], dlq, http_port=free_port(),
        temporal={"address": loom_temporal.address, "namespace": loom_temporal.namespace},
    )
    routes = write_routes(tmp_path, ROUTES_WITH_STEP, wf=RECORDER, tq=task_queue)
    loom = await start_loom("run", "--routes", routes, settings=settings, python_path=[tmp_path])
    await loom.wait_ready(30)
    # One record routed (routed, call latency, consumed, lag and offsets per partition) and
    # one that no route matches (unmatched, dead-lettered): the labelled series exist.
    entity = uuid.uuid4().hex[:8]
    await publish(await make_producer(), topic, [
        Event(id=f"{entity}-0", source="test://dashboard", type="test.step",
              data={"entity": entity, "seq": 0}, extensions={"partitionkey": entity}),
        Event(id=f"{entity}-1", source="test://dashboard", type="test.nobody-routes-this",
              data={"entity": entity}, extensions={"partitionkey": entity}),
    ])
    expected = queried - DECLARED_ONLY
    text = ""

    async def scrape() -> str:
        nonlocal text
        text = await loom.metrics()
        return text

    with contextlib.suppress(AssertionError):  # the assertions below say what is missing
        await eventually(scrape, until=lambda t: expected <= exported(t)[0], timeout=30,
                         interval=0.2)
    present, declared = exported(text)
    assert queried <= declared, f"queried, not exported: {sorted(queried - declared)}"
    assert expected <= present, f"no series after a routed and a dead-lettered record: {sorted(expected - present)}\n{loom.output}"
    # The ones left without a series are exactly those this workload cannot produce.
    assert queried - present == DECLARED_ONLY
    assert await loom.stop() == 0, loom.output
