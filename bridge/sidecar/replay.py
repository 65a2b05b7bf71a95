"""Route a past time window again: what ``loom replay`` runs.

After a route bug is fixed, or a route is added, the events of a past window can be routed
again. :class:`Replay` is the sidecar's own :class:`~bridge.sidecar.loop.Loom` (the same
routes, dispatcher, executor, dead-letter handling and metrics) with another source of
records: a :class:`~bridge.sidecar.window.WindowReader` that stops at the window's end. A
replay has its own consumer group (``group``, never the sidecar's): it assigns its partitions
itself (no join, so no rebalance) and commits there what it finished, contiguously as the
sidecar does, so Kafka's tools show how far it got. Where it starts is decided by the
window's time, not by that group: an interrupted replay is simply run again.

Routing twice is safe: the inbox drops repeats, start-only routes refuse a second start, and
a closed run that saw the event makes it a duplicate. A replay also asks each
``LoomWorkflow`` it signals, once, which events it saw (the ``loom_seen_digests`` query) and
sends none of those again: they count as duplicates, never reach the workflow, and cost no
signal of the run's budget. A workflow that cannot answer (none yet, no worker, not a
``LoomWorkflow``) is signalled as usual, and its inbox drops what it had.

:func:`preview` is ``--dry-run``: the same window through the same routes, without Temporal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from prometheus_client import Counter as PromCounter
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from bridge._ids import identity_digest
from bridge.actions import ActionKind, Outcome
from bridge.events import EVENT_SEEN_DIGESTS_QUERY, EVENT_SIGNAL
from bridge.exceptions import BadInputError, SettingsError, error_reason
from bridge.kafka.binding import decode
from bridge.kafka.clients import consumer_for, start_client, started, stop_client
from bridge.routing import Router
from bridge.settings import LoomSettings
from bridge.sidecar.intake import UnreadableRecordError
from bridge.sidecar.loop import Loom
from bridge.sidecar.metrics import Metrics
from bridge.sidecar.window import Window, WindowReader, plan_spans
from bridge.temporal.calls import TemporalExecutor

__all__ = ["Preview", "Replay", "ReplaySummary", "RoutePreview", "SeenByWorkflow", "preview"]

log = logging.getLogger("loom.replay")

# Calls that deliver the event to a LoomWorkflow's inbox.
_SIGNALLED = frozenset({ActionKind.SIGNAL_WITH_START, ActionKind.SIGNAL})


@dataclass
class ReplaySummary:
    """What a replay did. Calls (one per applying route) are counted by outcome; records that
    matched no route, or were dead-lettered, once each (a failed call dead-letters its record
    once per failing route)."""

    read: int = 0
    total: int = 0
    outside: int = 0
    ended_early: int = 0
    routed: int = 0
    duplicates: int = 0
    skipped: int = 0
    unmatched: int = 0
    deadlettered: int = 0
    by_route: dict[str, dict[str, int]] = field(default_factory=dict)
    complete: bool = False


class SeenByWorkflow:
    """What each workflow's inbox saw, asked once per workflow id (bounded in identities).

    Args:
        client: The Temporal client.
        timeout: How long a workflow may take to answer (a query waits this long when no
            worker polls its task queue).
        max_identities: Identities kept in all; the oldest workflows are forgotten first.
    """

    def __init__(self, client: Client, timeout: timedelta, max_identities: int = 500_000) -> None:
        self.client = client
        self.timeout = timeout
        self.max_identities = max_identities
        self._answers: OrderedDict[str, frozenset[str]] = OrderedDict()
        self._size = 0

    async def seen(self, workflow_id: str) -> frozenset[str]:
        """Digests of the identities the workflow's inbox remembers; empty when it cannot say."""
        known = self._answers.get(workflow_id)
        if known is not None:
            return known
        try:
            digests = await self.client.get_workflow_handle(workflow_id).query(
                EVENT_SEEN_DIGESTS_QUERY, result_type=list[str], rpc_timeout=self.timeout
            )
            answer = frozenset(digests)
        # No such workflow, no worker, not a LoomWorkflow, the cluster: the call decides.
        except Exception as exc:
            # A workflow not started yet is the common case; anything else is worth a line:
            # its events are signalled again (and dropped by its inbox).
            missing = isinstance(exc, RPCError) and exc.status == RPCStatusCode.NOT_FOUND
            log.log(logging.DEBUG if missing else logging.INFO,
                    "workflow %s did not say what it saw (its events are signalled, its inbox "
                    "drops repeats): %s: %s", workflow_id, type(exc).__name__, exc)
            answer = frozenset()
        self._answers[workflow_id] = answer
        self._size += max(1, len(answer))
        while self._size > self.max_identities and len(self._answers) > 1:
            _, old = self._answers.popitem(last=False)
            self._size -= max(1, len(old))
        return answer


class Replay(Loom):
    """The loom over a past window of ``topics``, until the window's end.

    Args:
        router: The route table (restricted to one route for ``--route``).
        client: A connected Temporal client.
        settings: The sidecar's settings (Kafka connection, dispatch, Temporal).
        topics: The topics to replay.
        window: The records' timestamps to replay.
        group: The replay's consumer group (see the module).
        lateness_ms: How far past the window's end a record's timestamp stops its partition
            (:class:`~bridge.sidecar.window.WindowReader`).
        check_seen: Ask each signalled workflow what it saw first (see the module).
        metrics: Metrics (a fresh registry when omitted): the summary is read from them.
        executor: The Temporal executor (built from ``client`` when omitted).
    """

    def __init__(
        self,
        router: Router,
        client: Client,
        settings: LoomSettings,
        *,
        topics: Iterable[str],
        window: Window,
        group: str,
        lateness_ms: int = 0,
        check_seen: bool = True,
        metrics: Metrics | None = None,
        executor: TemporalExecutor | None = None,
    ) -> None:
        if group == settings.kafka.group_id:
            raise SettingsError(f"a replay cannot use the sidecar's consumer group {group!r}")
        super().__init__(router, client, settings, metrics=metrics, executor=executor)
        self.group = group
        self.lateness_ms = lateness_ms
        self.topics = list(topics)
        self.window = window
        timeout = timedelta(seconds=settings.temporal.closed_query_timeout_s)
        self.seen = SeenByWorkflow(client, timeout) if check_seen else None
        self.reader: WindowReader | None = None
        self.complete = False

    async def start(self) -> None:
        """Connect the producer (dead letters, replies) and read the window's offsets."""
        k = self.settings.kafka
        await self._start_producer()
        consumer = consumer_for(
            k, group_id=self.group, enable_auto_commit=False,
            max_poll_records=k.max_poll_records, fetch_max_wait_ms=k.fetch_max_wait_ms,
        )
        try:
            await start_client(consumer)
            reader = WindowReader(
                consumer, await plan_spans(consumer, self.topics, self.window), self.window,
                read_committed=k.isolation_level == "read_committed",
                backoff=self._retry_policy.cap, lateness_ms=self.lateness_ms,
            )
            reader.open()
        except BaseException:
            await stop_client(consumer)
            if self._producer is not None:
                await stop_client(self._producer)
            raise
        self._consumer, self.reader = consumer, reader
        for span in reader.spans:
            self.health.assigned.add((span.tp.topic, span.tp.partition))
        self.health.kafka_connected = self.health.temporal_connected = True
        self.health.running = True

    async def _loop(self) -> None:
        reader = self.reader
        if reader is None:
            raise RuntimeError("the replay is not started: call start() or run() first")
        while not reader.done and not self._stopping.is_set():
            if self.dispatcher.full:
                await self._wait(self.dispatcher.wait_for_space())
                continue
            records = await reader.fetch(
                min(self.dispatcher.free_slots, self.settings.kafka.max_poll_records)
            )
            for tp, record in records:
                self.metrics.consumed.labels(tp.topic).inc()
                await self._take(tp, record)
            if time.monotonic() - self._last_commit >= self.settings.dispatch.commit_interval_s:
                await self.commit()
        # Every record of the window is taken: wait for their calls (a stop ends the wait,
        # and the drain gets the sidecar's drain timeout).
        while self.dispatcher.in_flight and not self._stopping.is_set():
            await self._wait(self.dispatcher.drain(3600))
        self.complete = reader.done and self.dispatcher.in_flight == 0

    async def _wait(self, awaitable: Any) -> None:
        """Await ``awaitable`` unless :meth:`stop` is called first."""
        work = asyncio.ensure_future(awaitable)
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, stop):
                task.cancel()

    async def _call(self, key: str, job: Any) -> tuple[Outcome, Any]:
        inv = job.invocation
        if (
            self.seen is not None
            and inv.kind in _SIGNALLED
            and inv.name == EVENT_SIGNAL
            and identity_digest(inv.event.key) in await self.seen.seen(inv.workflow_id)
        ):
            return Outcome.DUPLICATE, None  # the workflow has it: no signal
        return await super()._call(key, job)

    def summary(self) -> ReplaySummary:
        """What the replay did so far (read from its metrics)."""
        reader = self.reader
        result = ReplaySummary(
            read=reader.read if reader else 0,
            total=reader.total if reader else 0,
            outside=reader.outside if reader else 0,
            ended_early=reader.ended_early if reader else 0,
            unmatched=int(sum(v for _, v in _samples(self.metrics.unmatched))),
            deadlettered=int(sum(v for _, v in _samples(self.metrics.deadlettered))),
            complete=self.complete,
        )
        for labels, value in _samples(self.metrics.routed):
            route, outcome = labels["route"], labels["outcome"]
            result.by_route.setdefault(route, {})[outcome] = int(value)
            if outcome == Outcome.DELIVERED.value:
                result.routed += int(value)
            elif outcome == Outcome.DUPLICATE.value:
                result.duplicates += int(value)
            else:
                result.skipped += int(value)
        return result


def _samples(counter: PromCounter) -> list[tuple[dict[str, str], float]]:
    """A counter's values by their labels."""
    return [
        (sample.labels, sample.value)
        for family in counter.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    ]


# --- --dry-run ----------------------------------------------------------------------------------


@dataclass
class RoutePreview:
    """What one route would do with the window."""

    kind: str
    events: int = 0
    workflows: set[str] = field(default_factory=set)
    more_workflows: bool = False  # past the bound: ``workflows`` holds only the first ones


#: Workflow ids a preview keeps per route (counted exactly up to this many).
PREVIEW_WORKFLOWS = 100_000


@dataclass
class Preview:
    """What a replay of the window would route, per route, without calling Temporal."""

    routes: dict[str, RoutePreview] = field(default_factory=dict)
    unmatched: int = 0
    bad: Counter[str] = field(default_factory=Counter)
    read: int = 0
    outside: int = 0
    total: int = 0
    ended_early: int = 0


async def preview(
    settings: LoomSettings,
    router: Router,
    topics: Iterable[str],
    window: Window,
    *,
    lateness_ms: int = 0,
    on_read: Any = None,
) -> Preview:
    """Read the window and resolve its events through ``router``; call nothing.

    Args:
        settings: Kafka connection settings.
        router: The route table (restricted to one route for ``--route``).
        topics: The topics to read.
        window: The records' timestamps to read.
        lateness_ms: See :class:`~bridge.sidecar.window.WindowReader`.
        on_read: Called as ``on_read(read, total)`` after each fetch (a progress bar).
    """
    k = settings.kafka
    result = Preview()
    consumer = consumer_for(k, group_id=None, enable_auto_commit=False)
    async with started(consumer):
        reader = WindowReader(consumer, await plan_spans(consumer, topics, window), window,
                              read_committed=k.isolation_level == "read_committed",
                              lateness_ms=lateness_ms)
        reader.open()
        result.total = reader.total
        while not reader.done:
            for _, record in await reader.fetch(k.max_poll_records):
                try:
                    if record.unreadable is not None:  # aiokafka could not parse it
                        raise UnreadableRecordError(record.unreadable)
                    invocations = router.resolve(decode(record))
                except BadInputError as exc:
                    result.bad[error_reason(exc)] += 1
                    continue
                result.unmatched += not invocations
                for inv in invocations:
                    seen = result.routes.setdefault(inv.route, RoutePreview(inv.kind.value))
                    seen.events += 1
                    if len(seen.workflows) < PREVIEW_WORKFLOWS:
                        seen.workflows.add(inv.workflow_id)
                    elif inv.workflow_id not in seen.workflows:
                        seen.more_workflows = True
            result.read, result.outside, result.total = reader.read, reader.outside, reader.total
            result.ended_early = reader.ended_early
            if on_read is not None:
                on_read(reader.read, reader.total)
    return result
