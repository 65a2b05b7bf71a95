"""Routes bound to topics, end to end: a sidecar consuming two topics routes each record by
the topic it came from, and warns at start about a bound topic it does not consume."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from kit import FAST_GROUP, check_loop, eventually, loom_settings
from recorder import RecorderWorkflow, publish, query_all
from temporalio.client import Client

from bridge.actions import SignalWithStart
from bridge.events import Event
from bridge.kafka.deadletters import parse_deadletter
from bridge.routing import Match, Route, Router
from bridge.sidecar.loop import Loom
from bridge.sidecar.metrics import metric_total
from bridge.sidecar.process import Sidecar
from bridge.testing import loom_worker, read_records

pytestmark = [pytest.mark.kafka, pytest.mark.temporal]


def step(event_id: str, entity: str, type_: str = "test.step") -> Event:
    return Event(id=event_id, source="test://shop", type=type_, data={"entity": entity},
                 extensions={"partitionkey": entity})


async def test_two_topics_each_record_reaches_the_routes_bound_to_its_topic(
    temporal_client: Client,
    task_queue: str,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    orders, returns, dlq = await new_topic(), await new_topic(prefix="returns"), await new_topic()

    def to(prefix: str) -> SignalWithStart:
        return SignalWithStart(workflow=RecorderWorkflow, task_queue=task_queue,
                               workflow_id=prefix + "-{data.entity}")

    router = Router([
        Route("orders-only", Match(type="test.step", topic=orders), to("orders")),
        Route("returns-only", Match(type="test.step", topic="returns-*"), to("returns")),
        Route("any-topic", Match(type="test.step"), to("any")),
        Route("elsewhere", Match(type="test.other", topic=["nowhere", orders]), to("other")),
    ])
    settings = loom_settings(loom_kafka_bootstrap, [orders, returns], dlq, kafka=FAST_GROUP)
    entity = uuid.uuid4().hex[:8]
    on_orders = [step("o-1", entity), step("o-2", entity), step("x-1", entity, "test.other")]
    on_returns = [step("r-1", entity), step("x-2", entity, "test.other")]
    producer = await make_producer()
    await publish(producer, orders, on_orders)
    await publish(producer, returns, on_returns)
    sidecar = Sidecar(settings, router, client=temporal_client)
    caplog.set_level(logging.WARNING, logger="loom.sidecar")
    async with loom_worker(temporal_client, task_queue=task_queue, workflows=[RecorderWorkflow]):
        task = asyncio.create_task(sidecar.run())

        def all_taken() -> Loom:
            # Every record taken and finished (routed or dead-lettered): the counts are final.
            if task.done():
                raise RuntimeError(f"the sidecar ended: {task.result()}")
            loom = sidecar.loom
            assert loom is not None, "no loop yet"
            check_loop(loom)
            consumed, in_flight = metric_total(loom.metrics.consumed), loom.tracker.in_flight()
            assert (consumed, in_flight) == (5, 0), f"consumed {consumed}, in flight {in_flight}"
            return loom

        try:
            loom = await eventually(all_taken, timeout=60, what="the five records taken")
            letters = [parse_deadletter(r) for r in await read_records(
                loom_kafka_bootstrap, dlq, count=1)]
            seen = await query_all(temporal_client, [
                f"{prefix}-{entity}" for prefix in ("orders", "returns", "any", "other")])
        finally:
            sidecar.stop()
            with contextlib.suppress(asyncio.CancelledError):
                assert await task == 0
    assert seen[f"orders-{entity}"] == ["o-1", "o-2"]
    assert seen[f"returns-{entity}"] == ["r-1"]  # bound by a glob
    assert sorted(seen[f"any-{entity}"]) == ["o-1", "o-2", "r-1"]  # unbound: both topics
    assert seen[f"other-{entity}"] == ["x-1"]
    # test.other on the returns topic: its only route is bound elsewhere, so it is unmatched.
    assert [(d.info["reason"], d.info["topic"], dict(d.record.headers)["ce_id"])
            for d in letters] == [("unmatched", returns, b"x-2")]
    assert metric_total(loom.metrics.routed) == 7
    warnings = [r.getMessage() for r in caplog.records if r.name == "loom.sidecar"]
    assert [w for w in warnings if "bound to topic" in w] == [
        f"route 'elsewhere' is bound to topic 'nowhere', which is not consumed "
        f"(LOOM_KAFKA__TOPICS={orders},{returns}): it never matches there"
    ]
