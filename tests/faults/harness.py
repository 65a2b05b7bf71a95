"""The fault suite's harness: sizes, the sidecar's settings, group offsets, results.

``LOOM_FAULTS_FULL=1`` selects the full sizes of issue 8 (5,000 events, a 10 s outage...);
the default is a reduced size that keeps the whole suite within a few minutes on 2 cores.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kit import LoomProcess, eventually, loom_settings, metric_value
from recorder import query_all, wait_delivered

from bridge.kafka.deadletters import PREFIX
from bridge.kafka.record import Record
from bridge.settings import LoomSettings
from bridge.testing import read_records
from faults.workload import Tally, tally

FULL = os.environ.get("LOOM_FAULTS_FULL", "") not in ("", "0")


def size(reduced: int, full: int) -> int:
    """The reduced figure by default, the full one under ``LOOM_FAULTS_FULL=1``."""
    return full if FULL else reduced


# --- results --------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the fault table."""

    scenario: str
    sent: int
    lost: int
    duplicated: int
    out_of_order: int
    deadlettered: int
    seconds: float = 0.0
    notes: str = ""
    passed: bool = True
    #: Dead letters beyond one per original record (their ``loom-dlq-*`` coordinates).
    repeated: int = 0
    #: Records the loom read more than once (None: not measured in this scenario).
    redone: int | None = None

    @classmethod
    def measured(
        cls,
        scenario: str,
        result: Tally,
        letters: list[Any],
        started: float,
        notes: str,
        *,
        passed: bool,
        sent: int | None = None,
        redone: int | None = None,
    ) -> Row:
        """The row of a scenario from its tally, its dead letters and its ``time.monotonic()``
        start (``sent`` when more went out than the tally counts, as bad input; ``redone``:
        records read more than once, when the scenario measures it)."""
        return cls(
            scenario, result.sent if sent is None else sent, result.lost, result.duplicated,
            result.out_of_order, len(letters), time.monotonic() - started, notes, passed,
            repeated_letters(letters), redone,
        )


def repeated_letters(letters: list[Any]) -> int:
    """Dead letters beyond the first for the same original record (records read back from
    the dead-letter topic, or ``DeadLetter`` values)."""
    origins = set()
    for letter in letters:
        record = getattr(letter, "record", letter)
        headers = dict(record.headers)
        origins.add(tuple(headers.get(PREFIX + n) for n in ("topic", "partition", "offset")))
    return len(letters) - len(origins)


def consumed(metrics_text: str) -> int:
    """Records a sidecar took from Kafka (``loom_events_consumed_total``) in one scrape."""
    return int(metric_value(metrics_text, "loom_events_consumed_total"))


@dataclass
class Results:
    """Rows collected during the session, printed as a table and kept as JSON."""

    path: Path | None = None
    rows: list[Row] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        if self.path is not None:
            self.path.write_text(json.dumps([asdict(r) for r in self.rows], indent=2))

    def markdown(self) -> str:
        head = (
            "| scenario | events sent | lost | duplicated | out of order | dead-lettered "
            "| repeated dead letters | records redone | time (s) | notes |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
        )
        lines = [head]
        for r in self.rows:
            redone = "not measured" if r.redone is None else f"{r.redone:,}"
            lines.append(
                f"| {r.scenario} | {r.sent:,} | {r.lost} | {r.duplicated} | {r.out_of_order} "
                f"| {r.deadlettered} | {r.repeated} | {redone} | {r.seconds:.1f} | {r.notes} |"
            )
        return "\n".join(lines)


RESULTS = Results()


# --- settings for the sidecar -----------------------------------------------------------------


def fault_settings(
    *,
    bootstrap: str,
    topic: str,
    dlq: str,
    group: str,
    temporal: str,
    max_in_flight: int = 64,
    drain_timeout_s: float = 10.0,
    routes: str = "faults.workload:router",
    **overrides: Any,
) -> LoomSettings:
    """The settings of a sidecar in a fault scenario, in this process or as ``loom run``
    (:func:`kit.settings_as_env`; the task queue goes in ``LOOM_FAULTS_TASK_QUEUE``).

    ``overrides`` as for :func:`kit.loom_settings`: sections (``kafka={...}``) are merged.
    """
    sections: dict[str, Any] = {
        # A dead member must leave the group quickly, or every restart waits 30 s.
        "kafka": {"heartbeat_interval_ms": 500},
        "temporal": {"address": temporal},
        "dispatch": {
            "max_in_flight": max_in_flight,
            "drain_timeout_s": drain_timeout_s,
            "retry_initial_s": 0.05,
            "retry_max_s": 1.0,
        },
    }
    for key, value in overrides.items():
        if isinstance(value, Mapping) and key in sections:
            sections[key] = {**sections[key], **value}
        else:
            sections[key] = value
    return loom_settings(
        bootstrap, [topic], dlq, routes=routes, group_id=group, log_level="WARNING", **sections
    )


#: The ``sidecars`` fixture: ``await sidecars(settings, name)`` starts ``loom run``.
Sidecars = Callable[[LoomSettings, str], Awaitable[LoomProcess]]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# --- Kafka helpers -----------------------------------------------------------------------------


async def log_ends(consumer: Any, tps: list[Any]) -> dict[Any, int]:
    """The offset after the last record of each partition, from a fetch's high watermark.

    The embedded broker answers ListOffsets (``end_offsets``) with the last batch's base
    offset + 1: 1 for a partition holding one batch of 5 records. A fetch response carries
    the true high watermark, so one fetch from the start of each partition is taken too.
    """
    ends: dict[Any, int] = await consumer.end_offsets(tps)
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, 0)
    deadline = time.monotonic() + 5
    while any(consumer.highwater(tp) is None for tp in tps) and time.monotonic() < deadline:
        await consumer.getmany(timeout_ms=200, max_records=1)
    return {tp: max(ends[tp], consumer.highwater(tp) or 0) for tp in tps}


async def group_offsets(
    bootstrap: str, group: str, topic: str
) -> tuple[dict[int, int], dict[int, int]] | None:
    """``({partition: committed}, {partition: log end})`` of ``topic`` (None: unknown)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, max_partition_fetch_bytes=1024
    )
    await admin.start()
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:  # metadata without the topic yet: unknown, not "nothing left"
            return None
        ends = await log_ends(consumer, tps)
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        done: dict[int, int] = {}
        for tp in tps:
            meta = committed.get(tp)
            done[tp.partition] = meta.offset if meta is not None and meta.offset >= 0 else 0
        return done, {tp.partition: ends[tp] for tp in tps}
    except Exception:
        return None
    finally:
        await consumer.stop()
        await admin.close()


async def group_lag(bootstrap: str, group: str, topic: str) -> int | None:
    """Log ends minus the group's committed offsets over ``topic`` (None: unknown)."""
    offsets = await group_offsets(bootstrap, group, topic)
    if offsets is None:
        return None
    done, ends = offsets
    return sum(max(0, ends[p] - done[p]) for p in ends)


async def wait_caught_up(bootstrap: str, group: str, topic: str, timeout: float) -> int | None:
    """Wait until the group committed everything of ``topic``; the last lag seen."""
    lag: int | None = None

    async def probe() -> int | None:
        nonlocal lag
        lag = await group_lag(bootstrap, group, topic)
        return lag

    with contextlib.suppress(AssertionError):  # the caller asserts on the lag returned
        await eventually(probe, until=lambda n: n == 0, timeout=timeout, interval=0.5)
    return lag


# --- the end of every scenario --------------------------------------------------------------


async def settle(
    client: Any,
    expected: Mapping[str, list[str]],
    *,
    bootstrap: str,
    group: str,
    topic: str,
    timeout: float,
) -> tuple[Tally, int | None]:
    """Wait for delivery and for the group to commit everything, then count per workflow.

    The group's commit reaching the end of the topic means every record was finished, so a
    duplicate delivery, if any, has reached its workflow by then, and every dead letter was
    acknowledged by the broker (:func:`dead_letters` then reads them all).
    """
    await wait_delivered(client, expected, timeout)
    lag = await wait_caught_up(bootstrap, group, topic, timeout=min(timeout, 60))
    seen = await query_all(client, expected)
    return tally(expected, seen), lag


async def dead_letters(bootstrap: str, dlq: str) -> list[Record]:
    """Every record of the dead-letter topic, up to its end now.

    Exact after :func:`settle` caught up: an offset is committed only once its dead letter
    was acknowledged, so none is still on its way.
    """
    return await read_records(bootstrap, dlq, timeout=60)
