"""``loom replay`` over a past window: dry run, first replay, and replays of the same window.

Run: ``.venv/bin/python -m bench.bench_replay [events] [workflows]``. Starts its own embedded
broker and in-memory dev server with one worker. The topic (4 partitions) holds ``events``
records two hours old (the window), as many three hours old (before it) and a tenth one hour
old (after it). Prints, for the dry run and three replays (the first; again, asking each
workflow what it saw; again without asking, the inboxes drop the repeats), what was routed
and how long it took.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

from aiokafka import AIOKafkaProducer
from temporalio import workflow
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from bridge.actions import SignalWithStart
from bridge.dev import EmbeddedKafka, EmbeddedTemporal, create_topic
from bridge.events import Event
from bridge.kafka.binding import encode
from bridge.routing import Match, Route, Router
from bridge.settings import LoomSettings
from bridge.sidecar.replay import Replay, preview
from bridge.sidecar.window import Window
from bridge.workflow import LoomWorkflow

HOUR = 3_600_000
MINUTE = 60_000


@workflow.defn(name="BenchReplaySink", sandboxed=False)
class Sink(LoomWorkflow):
    """Takes every event its inbox lets through."""

    @workflow.run
    async def run(self) -> None:
        while True:
            await workflow.wait_condition(lambda: len(self.inbox) > 0)
            self.inbox.take()


async def _publish(bootstrap: str, topic: str, count: int, workflows: int, ts: int, tag: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        sent = []
        for i in range(count):
            event = Event(id=f"{tag}-{i}", source="bench://replay", type="order.step",
                          data={"n": i}, extensions={"partitionkey": f"o{i % workflows}"})
            key, value, headers = encode(event)
            sent.append(await producer.send(topic, value=value, key=key, headers=headers,
                                            timestamp_ms=ts))
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def main(events: int, workflows: int) -> None:
    async with EmbeddedKafka() as kafka, EmbeddedTemporal() as temporal:
        topic, dlq = "orders", "orders-dlq"
        await create_topic(kafka.bootstrap, topic, 4)
        await create_topic(kafka.bootstrap, dlq, 1)
        now = int(time.time() * 1000)
        for count, age, tag in ((events, 3, "before"), (events, 2, "in"), (events // 10, 1, "after")):
            await _publish(kafka.bootstrap, topic, count, workflows, now - age * HOUR, tag)
        client = await Client.connect(temporal.address, data_converter=pydantic_data_converter)
        router = Router([Route("step", match=Match(type="order.step"), action=SignalWithStart(
            workflow="BenchReplaySink", task_queue="bench-replay",
            workflow_id="order-{ext.partitionkey}"))])
        settings = LoomSettings.model_validate({
            "routes": "unused:router",
            "kafka": {"bootstrap": kafka.bootstrap, "topics": [topic], "deadletter_topic": dlq},
            "temporal": {"address": temporal.address},
        })
        window = Window(now - 2 * HOUR - MINUTE, now - 2 * HOUR + MINUTE)
        started = time.perf_counter()
        seen = await preview(settings, router, [topic], window, lateness_ms=MINUTE)
        print(f"dry run: {seen.routes['step'].events} events for "
              f"{len(seen.routes['step'].workflows)} workflows, {seen.read} offsets read: "
              f"{time.perf_counter() - started:.2f}s")
        async with Worker(client, task_queue="bench-replay", workflows=[Sink]):
            for label, ask in (("first", True), ("again, asking", True), ("again, not asking", False)):
                job = Replay(router, client, settings, topics=[topic], window=window,
                             group=f"bench-replay-{uuid.uuid4().hex[:6]}", lateness_ms=MINUTE,
                             check_seen=ask)
                started = time.perf_counter()
                await job.run()
                took = time.perf_counter() - started
                s = job.summary()
                print(f"replay {label}: routed {s.routed}, duplicates {s.duplicates}, "
                      f"{s.read} offsets read, complete {s.complete}: {took:.2f}s, "
                      f"{events / took:.0f} events/s")


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    asyncio.run(main(*(args + [1000, 100][len(args):])))
