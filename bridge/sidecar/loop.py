"""The inbound loop: Kafka records -> decode -> route -> ordered dispatch -> Temporal.

:class:`Loom` owns an aiokafka consumer (consumer group, manual commit), a producer for the
dead-letter topic and update replies, a :class:`~bridge.sidecar.dispatch.Dispatcher` and an
:class:`~bridge.sidecar.offsets.OffsetTracker`. It keeps the guarantees of
docs/architecture.md:

- an offset is committed only once its record was acknowledged by Temporal (every route of a
  fan-out) or written to the dead-letter topic, up to the highest contiguous finished offset;
- calls for one workflow id run one at a time in partition order (what queued behind one
  shares it where the route allows: :mod:`.coalesce`); different ids run concurrently up to
  ``max_in_flight``; records held are bounded by ``max_buffered_bytes`` (and
  ``max_buffered``): when full, the partitions are paused;
- bad input goes to the dead-letter topic byte for byte, transient Temporal errors are
  retried without skipping; no record stops the line: whatever raises while a record is
  taken dead-letters that record (reason ``internal`` for the unexpected), and a record the
  dead-letter topic refuses for good is left uncommitted while the loop goes on;
- the rest of a batch fetched before a rebalance is never taken (:mod:`.batches`);
- :meth:`Loom.stop` stops fetching, drains until ``drain_timeout_s`` after the stop (a
  record blocked past that, e.g. on an unreachable dead-letter topic, is abandoned
  uncommitted), commits and closes; :meth:`Loom.abandon` ends the wait now (and still closes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from temporalio.client import Client

from bridge.actions import ActionKind, Invocation, Outcome
from bridge.exceptions import error_reason
from bridge.kafka.clients import consumer_for, producer_for, start_client, stop_client
from bridge.kafka.deadletters import DeadLetterWriter
from bridge.kafka.record import Record
from bridge.routing import Router
from bridge.settings import LoomSettings
from bridge.sidecar.batches import BatchFetcher, Ownership
from bridge.sidecar.coalesce import coalesced_invocation, coalescing, held_bytes
from bridge.sidecar.dispatch import Dispatcher, RetryPolicy
from bridge.sidecar.intake import Intake, Job, UnmatchedStopError, UnreadableRecordError
from bridge.sidecar.metrics import Health, Metrics
from bridge.sidecar.offsets import OffsetTracker
from bridge.sidecar.redo import ReadAhead, Redo, moved_back
from bridge.sidecar.replies import publish_reply
from bridge.sidecar.stopping import StopClock
from bridge.telemetry.logs import CLIENT_ERRORS
from bridge.telemetry.tracing import header_hook, route_span
from bridge.temporal.calls import TemporalExecutor

__all__ = ["Loom", "UnmatchedStopError", "UnreadableRecordError", "running"]

log = logging.getLogger("loom")
_Job = Job  # the dispatcher's unit (bench/child.py subclasses the loom's callbacks with it)


class Loom:
    """The sidecar's inbound engine for one consumer group member.

    Args:
        router: The route table.
        client: A connected Temporal client (its data converter and codec are used).
        settings: Kafka, dispatch and Temporal settings.
        metrics: Prometheus metrics (a fresh registry when omitted).
        executor: The Temporal executor (built from ``client`` when omitted, with the
            tracing header hook: an event's ``traceparent`` continues into the workflow).
    """

    def __init__(
        self,
        router: Router,
        client: Client,
        settings: LoomSettings,
        *,
        metrics: Metrics | None = None,
        executor: TemporalExecutor | None = None,
    ) -> None:
        self.router = router
        self.client = client
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.health = Health()
        d = settings.dispatch
        self.executor = executor or TemporalExecutor(
            client,
            payload_limit=settings.temporal.payload_limit_bytes,
            header_hook=header_hook(),
            signal_limit_retry_s=d.signal_limit_retry_s,
            closed_query_timeout=timedelta(seconds=settings.temporal.closed_query_timeout_s),
        )
        self._retry_policy = RetryPolicy(
            initial=d.retry_initial_s, maximum=d.retry_max_s, multiplier=d.retry_multiplier
        )
        self.tracker: OffsetTracker[TopicPartition] = OffsetTracker(on_reset=moved_back)
        self.ownership = Ownership()
        self.redo = Redo.from_settings(settings.kafka, self.ownership, self.metrics)
        self.read_ahead = ReadAhead(settings.kafka.max_uncommitted, self.metrics)
        self.dispatcher: Dispatcher[str, Job, tuple[Outcome, Any]] = Dispatcher(
            self._call,
            max_in_flight=d.max_in_flight,
            max_buffered=d.buffered_bound or sys.maxsize,
            on_done=self._on_done,
            on_failed=self._on_failed,
            retry=self._retry_policy,
            on_retry=self._on_retry,
            coalescing=coalescing(d, self._call_batch, self.metrics),
            max_buffered_bytes=d.max_buffered_bytes,
            weight=held_bytes,
        )
        # Read at each scrape from the dispatcher itself: true at rest too (set from a
        # callback, they lagged the dispatcher's own counts by the last call).
        self.metrics.in_flight.set_function(lambda: self.dispatcher.in_flight)
        self.metrics.running.set_function(lambda: self.dispatcher.running)
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._intake: Intake | None = None
        self._fetcher: BatchFetcher | None = None
        self._clock = StopClock(settings.dispatch.drain_timeout_s)
        self._stopping = self._clock.stopping
        self._last_commit = 0.0
        self._commit_lock = asyncio.Lock()
        self.error: BaseException | None = None

    # --- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect the producer and the consumer and join the group."""
        k = self.settings.kafka
        await self._start_producer()
        self._consumer = consumer_for(
            k,
            group_id=k.group_id,
            enable_auto_commit=False,
            auto_offset_reset=k.auto_offset_reset,
            max_poll_records=k.max_poll_records,
            fetch_max_wait_ms=k.fetch_max_wait_ms,
            session_timeout_ms=k.session_timeout_ms,
            heartbeat_interval_ms=k.heartbeat_interval_ms,
        )
        self._consumer.subscribe(list(k.topics), listener=_Rebalance(self))
        try:
            await start_client(self._consumer)
        except BaseException:
            await stop_client(self._producer)
            raise
        self._fetcher = BatchFetcher(
            self._consumer,
            self.ownership,
            read_committed=k.isolation_level == "read_committed",
            backoff=self._retry_policy.cap,
        )
        self.health.kafka_connected = True
        self.health.temporal_connected = True
        self.health.running = True

    async def _start_producer(self) -> None:
        # The producer of dead letters and replies, and the intake that writes with it (a
        # replay starts its own consumer after it).
        k = self.settings.kafka
        self._producer = await start_client(producer_for(k))
        deadletters = DeadLetterWriter(self._producer, k.deadletter_topic, group=k.group_id,
                                       backoff=self._retry_policy.delay, on_retry=self._dlq_retry)
        self._intake = Intake(
            self.router, self.tracker, self.dispatcher, deadletters, self.metrics,
            finished=self.redo.skips,
        )

    async def run(self) -> None:
        """Start (if needed) and consume until :meth:`stop`; then drain, commit and close."""
        if self._consumer is None:
            await self.start()
        try:
            await self._loop_until_stopped()
        except Exception as exc:
            self.error = exc
            raise
        finally:
            await self._shutdown()

    def stop(self) -> None:
        """Ask the loop to stop fetching; :meth:`run` then drains, commits and returns, within
        ``drain_timeout_s`` of this call."""
        self._clock.stop()

    def abandon(self) -> None:
        """Stop without waiting for what is in flight (a second SIGTERM): the drain ends now,
        the calls still running are cancelled (their records stay uncommitted, Kafka
        redelivers them), what finished is committed and the consumer leaves its group."""
        self._clock.abandon()

    def _started(self) -> tuple[AIOKafkaConsumer, AIOKafkaProducer, Intake]:
        if self._consumer is None or self._producer is None or self._intake is None:
            raise RuntimeError("the loom is not started: call start() or run() first")
        return self._consumer, self._producer, self._intake

    async def _loop_until_stopped(self) -> None:
        # Once asked to stop, the loop takes the rest of the batch in hand and fetches no more;
        # a record it cannot finish taking (a dead-letter write retrying against an unreachable
        # topic, submit waiting on calls Temporal does not answer) is cancelled at the stop
        # deadline, uncommitted.
        task = asyncio.create_task(self._loop(), name="loom-loop")
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                await self._clock.wait(task, timeout=self._clock.time_left())
            if not task.done():
                log.warning("the loop is still taking a record at the stop deadline: it is "
                            "abandoned, uncommitted (Kafka redelivers it)")
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                return
            await task
        finally:
            stop.cancel()
            if not task.done():  # run() itself was cancelled
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def _loop(self) -> None:
        consumer, fetcher = self._started()[0], self._fetcher
        if fetcher is None:
            raise RuntimeError("the loom is not started: call start() or run() first")
        interval = self.settings.dispatch.commit_interval_s
        while not self._stopping.is_set():
            if self.dispatcher.full:
                await self._pause_until_space(consumer)
                continue
            self.read_ahead.apply(consumer, self.tracker)  # pause partitions read far ahead
            batch = await fetcher.fetch(
                timeout_ms=min(200, int(interval * 1000)),
                max_records=min(self.dispatcher.free_slots, self.settings.kafka.max_poll_records),
            )
            await self.redo.prepare(batch)  # before a new assignment's first record is taken
            for tp, records in batch.records.items():
                self.metrics.consumed.labels(tp.topic).inc(len(records))
                epoch = batch.epochs.get(tp)
                for record in records:
                    # A rebalance may revoke the partition while this batch is being taken
                    # (submit can wait), and assign it again: either way the partition
                    # restarted at its committed offset and the rest of the batch is not ours.
                    if not self.ownership.owns(tp, epoch):
                        break
                    await self._take(tp, record)
            if time.monotonic() - self._last_commit >= interval:
                await self.commit()

    async def _pause_until_space(self, consumer: AIOKafkaConsumer) -> None:
        assigned = list(consumer.assignment())
        consumer.pause(*assigned)
        self.metrics.paused.inc()
        stop = asyncio.ensure_future(self._stopping.wait())
        space = asyncio.ensure_future(self.dispatcher.wait_for_space())
        try:
            await asyncio.wait(
                {stop, space},
                timeout=self.settings.dispatch.commit_interval_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            stop.cancel()
            space.cancel()
        # On the commit interval only: under backpressure a slot frees every few
        # milliseconds, and a commit per freed slot cost a broker round trip each time.
        if time.monotonic() - self._last_commit >= self.settings.dispatch.commit_interval_s:
            await self.commit()
        consumer.resume(*[tp for tp in assigned if tp in consumer.assignment()])

    async def _shutdown(self) -> None:
        self.health.running = False
        try:
            drained = await self._clock.run(self.dispatcher.drain(self._clock.time_left()), False)
            if not drained:
                log.warning(
                    "drain timeout: %d calls still in flight are left to redelivery",
                    self.dispatcher.in_flight,
                )
            await self.commit(force=True)
        finally:
            try:
                await self.dispatcher.close()
                if self._consumer is not None:
                    await stop_client(self._consumer)
            finally:
                # Also when stopping the consumer raised: the producer holds connections too.
                # Its flush is bounded: a dead-letter write abandoned at the stop deadline
                # would otherwise hold the exit for request_timeout_ms.
                if self._producer is not None:
                    await stop_client(self._producer, flush_timeout=max(self._clock.time_left(), 1.0))
                self.health.kafka_connected = False

    @property
    def consumer(self) -> AIOKafkaConsumer | None:
        """The aiokafka consumer once started (read-only use: lag, assignment)."""
        return self._consumer

    async def probe_kafka(self, timeout: float = 2.0) -> bool:
        """Ask the cluster for metadata; sets and returns ``health.kafka_connected``.

        aiokafka reconnects silently and an empty fetch looks the same as an idle topic, so
        readiness needs an explicit round trip to notice a broker outage.
        """
        consumer = self._consumer
        ok = False
        if consumer is not None:
            try:
                await asyncio.wait_for(consumer.topics(), timeout)
                ok = True
            except Exception as exc:  # any failure means "not connected" for readiness
                if self.health.kafka_connected:
                    log.warning("Kafka metadata probe failed: %s", exc or type(exc).__name__)
        CLIENT_ERRORS.connection("Kafka", ok)
        self.health.kafka_connected = ok
        return ok

    # --- one record ---------------------------------------------------------------------------

    async def _take(self, tp: TopicPartition, record: Record) -> None:
        await self._started()[2].take(tp, record)

    async def _call_batch(self, key: str, jobs: list[Job]) -> tuple[Outcome, Any]:
        return await self._perform(coalesced_invocation([job.invocation for job in jobs]))

    async def _perform(self, inv: Invocation) -> tuple[Outcome, Any]:
        started = time.perf_counter()
        # Span "loom route <route>", child of the event's traceparent; current during the
        # call, so the executor's header hook (or the client's interceptor) sends it on.
        with route_span(inv):
            result = await self.executor.execute(inv)
        self.metrics.call_latency.labels(inv.kind.value).observe(time.perf_counter() - started)
        self.metrics.batch_events.observe(len(inv.batch) or 1)
        self.health.temporal_connected = True
        return result

    async def _call(self, key: str, job: Job) -> tuple[Outcome, Any]:
        inv = job.invocation
        result = await self._perform(inv)
        if inv.kind is ActionKind.UPDATE_WITH_START and inv.reply_topic:
            producer = self._started()[1]
            await publish_reply(producer, inv, result[1], self.settings.kafka.group_id)
        return result

    def _on_done(self, job: Job, result: tuple[Outcome, Any]) -> None:
        self.metrics.routed.labels(job.invocation.route, result[0].value).inc()
        self._started()[2].finish(job, result[0])

    async def _on_failed(self, job: Job, exc: BaseException) -> None:
        intake = self._started()[2]
        if not self.tracker.holds(job.pending.ticket):  # revoked: its new owner takes it again
            return
        if await intake.deadletter(job.record, exc, job.invocation.route, job.invocation):
            intake.finish(job)

    def _on_retry(self, job: Job, attempt: int, exc: BaseException, delay: float) -> None:
        self.metrics.retries.labels(error_reason(exc)).inc()
        self.health.temporal_connected = False
        log.warning(
            "retrying %s for %s (attempt %d, in %.2fs): %s",
            job.invocation.kind.value,
            job.invocation.workflow_id,
            attempt,
            delay,
            exc,
        )

    def _dlq_retry(self, attempt: int, err: BaseException, delay: float) -> None:
        self.metrics.retries.labels("deadletter-write").inc()
        log.warning("dead-letter write failed (attempt %d, retry in %.2fs): %s", attempt, delay, err)

    # --- offsets ------------------------------------------------------------------------------

    async def commit(self, *, force: bool = False) -> dict[TopicPartition, int]:
        """Commit what is contiguously finished; returns the offsets committed."""
        consumer = self._consumer
        if consumer is None:
            return {}
        async with self._commit_lock:
            self._last_commit = time.monotonic()
            offsets = self.tracker.committable(with_finished=self.redo.metadata_kept is not False)
            if not offsets:
                return {}
            sent = self.redo.commit_offsets(offsets, self.tracker.finished_after)
            try:
                await consumer.commit(sent)
                await self.redo.committed(consumer, sent)
            except (CommitFailedError, KafkaError) as exc:
                # A rebalance is under way: the revocation handler commits what is ours.
                if force:
                    log.warning("final commit failed: %s", exc)
                return {}
            self.tracker.mark_committed(offsets)
            for tp, offset in offsets.items():
                self.metrics.committed.labels(tp.topic, str(tp.partition)).set(offset)
            return offsets

    async def _revoked(self, revoked: set[TopicPartition]) -> None:
        self.ownership.revoked(revoked)
        for tp in revoked:
            self.health.assigned.discard((tp.topic, tp.partition))
        self.metrics.partitions.set(len(self.health.assigned))
        offsets = await self.redo.hand_over(self._consumer, self.tracker, revoked, self.settings.kafka)
        self.metrics.revoke_partitions(
            [(tp.topic, tp.partition) for tp in revoked],
            {(tp.topic, tp.partition): offset for tp, offset in offsets.items()},
        )

    def _assigned(self, assigned: set[TopicPartition]) -> None:
        # Called after every join, with an empty set too: a member without partitions is in
        # the group all the same (readiness), and owns nothing (the metric).
        self.health.group_joined = True
        self.ownership.assigned(assigned)
        for tp in assigned:
            self.health.assigned.add((tp.topic, tp.partition))
        self.metrics.partitions.set(len(self.health.assigned))
        self.metrics.assign_partitions((tp.topic, tp.partition) for tp in assigned)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loom: Loom) -> None:
        self.loom = loom

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.loom._revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.loom._assigned(assigned)
        if self.loom.consumer is not None:  # what the last owner finished beyond its commit
            await self.loom.redo.read_metadata(self.loom.consumer, assigned)


@contextlib.asynccontextmanager
async def running(loom: Loom) -> AsyncIterator[Loom]:
    """Run ``loom`` in a background task for the body; stop, drain and commit on exit."""
    await loom.start()
    task = asyncio.create_task(loom.run(), name="loom")
    try:
        yield loom
    finally:
        loom.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await task
