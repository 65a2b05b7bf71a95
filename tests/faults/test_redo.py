"""Finished work outlives a crash: two SIGKILLs while a backlog with poison records drains.

Coalescing is on and the consumer reads far ahead, so at a SIGKILL much beyond the commit
point is finished: records delivered and records dead-lettered. A restart redoes them. The
workflows stay exact (the inbox drops repeats), but a poison record dead-lettered again is a
second page and a second re-drive for an operator: the dead-letter topic must hold each
poison record exactly once (issue 23).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from kit import LoomProcess, eventually, metric_value
from recorder import publish
from temporalio.client import Client
from temporalio.worker import Worker

from bridge.events import Event
from bridge.kafka import deadletters as dl
from faults.harness import (
    FULL,
    Row,
    Sidecars,
    consumed,
    dead_letters,
    fault_settings,
    settle,
    size,
    unique,
)
from faults.proxy import FaultProxy
from faults.workload import SOURCE, STRICT_TYPE, expected_by_workflow, step_events

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.temporal]

TIMEOUT = 600 if FULL else 150
PARTITIONS = 4


def _poison(n: int) -> Event:
    # Dead-lettered at intake (reason internal): the route's own validator raises on "boom-*".
    return Event(id=f"boom-{n}", source=SOURCE, type=STRICT_TYPE,
                 data={"entity": f"boom-{n}", "seq": 0})


async def _draining(sidecar: LoomProcess, letters_at_least: float, timeout: float = 60) -> str:
    """Wait until the sidecar coalesced calls, has calls in flight and wrote dead letters
    (which a kill then leaves beyond the commit point); returns the scrape."""

    async def scrape() -> str:
        sidecar.check_running()  # an exit fails the wait at once
        return await sidecar.metrics()

    def mid_drain(text: str) -> bool:
        calls = metric_value(text, "loom_batch_events_count")
        per_call = metric_value(text, "loom_batch_events_sum") / calls if calls else 0.0
        return (per_call > 1 and metric_value(text, "loom_in_flight") >= 1
                and metric_value(text, "loom_events_deadlettered_total") >= letters_at_least)

    return await eventually(scrape, until=mid_drain, timeout=timeout, interval=0.01,
                            what=f"{sidecar.name} coalescing, dead-lettering, calls in flight")


@pytest.mark.timeout(TIMEOUT)
async def test_two_sigkills_with_poison_records_dead_letter_each_once(
    temporal_client: Client,
    recorder_worker: Worker,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    sidecars: Sidecars,
    fault_results: Callable[[Row], None],
) -> None:
    """1p. Two SIGKILLs while a backlog with poison records drains (coalescing on): dead
    letters == poison records (distinct origins and total letters), workflows 0 lost, 0
    duplicated, 0 out of order."""
    started = time.monotonic()
    good = step_events(unique("t1p"), size(40, 100), size(20, 50))
    poison = [_poison(n) for n in range(len(good) // 10)]
    # Poison spread evenly through the backlog: each kill leaves some behind the commit point.
    every = len(good) // len(poison)
    stream = [e for i, event in enumerate(good)
              for e in ([event, poison[i // every]] if i % every == every - 1 else [event])]
    assert sum(e.type == STRICT_TYPE for e in stream) == len(poison)
    expected = expected_by_workflow(good)
    topic, dlq = await new_topic(partitions=PARTITIONS), await new_topic()
    settings = fault_settings(
        bootstrap=loom_kafka_bootstrap, topic=topic, dlq=dlq, group=unique("g1p"),
        temporal=temporal_client.service_client.config.target_host,
        routes="faults.workload:coalesced_router",
    )
    producer = await make_producer()
    await publish(producer, topic, stream)  # the whole backlog first: the loom reads ahead
    sidecar = await sidecars(settings, "s1p-0")
    await sidecar.wait_ready()
    read = 0  # records taken by the killed sidecars (scraped just before each kill)
    for n in range(2):
        # The first kill once a quarter of the poison is dead-lettered; the second whenever
        # calls are in flight (the restarted loom may have no poison left to write).
        scrape = await _draining(sidecar, letters_at_least=len(poison) // 4 if n == 0 else 0)
        read += consumed(scrape)
        await sidecar.kill()  # SIGKILL: no drain, no commit
        assert sidecar.returncode == -signal.SIGKILL
        sidecar = await sidecars(settings, f"s1p-{n + 1}")
        await sidecar.wait_ready()
    result, lag = await settle(
        temporal_client, expected, bootstrap=loom_kafka_bootstrap,
        group=settings.kafka.group_id, topic=topic, timeout=TIMEOUT / 2,
    )
    final = await sidecar.metrics()
    read += consumed(final)
    skipped = metric_value(final, "loom_redo_skipped_total")
    letters = [dl.parse_deadletter(r) for r in await dead_letters(loom_kafka_bootstrap, dlq)]
    origins = {(int(x.info["partition"]), int(x.info["offset"])) for x in letters}
    redone = read - len(stream)
    repeated = len(letters) - len(origins)
    fault_results(Row.measured(
        "1p. sidecar SIGKILLed twice while a backlog with poison records drains (coalescing)",
        result, letters, started,
        f"{len(poison)} poison records, {len(letters)} dead letters ({repeated} repeated), "
        f"{redone} records read again (consumed twice), {skipped:.0f} skipped as finished",
        passed=result.clean and len(letters) == len(origins) == len(poison),
        sent=len(stream), redone=redone,
    ))
    assert result.clean, result
    assert lag == 0
    assert len(origins) == len(poison), "every poison record is dead-lettered"
    assert len(letters) == len(poison), f"{repeated} poison records dead-lettered again"
    assert {x.info["reason"] for x in letters} == {"internal"}
    # The measurement is real: the kills did make the loom redo records.
    assert redone > 0



@pytest.mark.timeout(TIMEOUT)
async def test_a_join_mid_backlog_redoes_at_most_the_records_in_flight(
    temporal_client: Client,
    recorder_worker: Worker,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    sidecars: Sidecars,
    fault_results: Callable[[Row], None],
) -> None:
    """4j. A second sidecar joins while the first drains a backlog (coalescing on): the
    revoked partitions are handed over with nothing finished left to redo but what was in
    flight; 0 lost, 0 duplicated, 0 out of order."""
    started = time.monotonic()
    events = step_events(unique("t4j"), size(40, 100), size(60, 60))
    expected = expected_by_workflow(events)
    topic, dlq = await new_topic(partitions=PARTITIONS), await new_topic()
    host, _, port = temporal_client.service_client.config.target_host.rpartition(":")
    async with FaultProxy(int(port), host) as proxy:
        settings = fault_settings(
            bootstrap=loom_kafka_bootstrap, topic=topic, dlq=dlq, group=unique("g4j"),
            temporal=proxy.address, routes="faults.workload:coalesced_router",
            # Calls of 4 events, 8 at a time, slowed below: the backlog outlasts the join.
            dispatch={"max_in_flight": 8, "batch_max_events": 4},
            # The embedded broker answers a join in about half the session timeout: 3 s (the
            # revocation's drain gets 3 s at most too).
            kafka={"session_timeout_ms": 6000},
        )
        await publish(await make_producer(), topic, events)
        proxy.latency = 0.1  # each way: 160 events/s at most until the second has joined
        first = await sidecars(settings, "s4j-first")
        await first.wait_ready()
        await _draining(first, letters_at_least=0)
        # The records in flight in the first member around the join, at most (sampled until
        # the second is in the group: the rebalance happens in between).
        in_flight: list[float] = []

        async def sample() -> bool:
            in_flight.append(metric_value(await first.metrics(), "loom_in_flight"))
            return second.returncode is None and await second.probe("/readyz", 5) == 200

        second = await sidecars(settings, "s4j-second")
        await eventually(sample, timeout=60, interval=0.05, what="the second member in the group")

        async def routed_by_second() -> float:
            second.check_running()
            return metric_value(await second.metrics(), "loom_events_routed_total")

        await eventually(routed_by_second, timeout=60, what="the second member routing")
        proxy.latency = 0.0
        result, lag = await settle(
            temporal_client, expected, bootstrap=loom_kafka_bootstrap,
            group=settings.kafka.group_id, topic=topic, timeout=TIMEOUT / 2,
        )
    routed = [metric_value(await s.metrics(), "loom_events_routed_total") for s in (first, second)]
    assert first.returncode is None, first.tail()
    letters = await dead_letters(loom_kafka_bootstrap, dlq)
    redone = int(sum(routed)) - len(events)  # calls that delivered a record a second time
    fault_results(Row.measured(
        "4j. second sidecar joins mid-backlog (coalescing)", result, letters, started,
        f"0 repeated dead letters (none expected: no bad input), {redone} records redone, at "
        f"most {max(in_flight):.0f} in flight in the first member around the join; the second "
        f"routed {routed[1]:.0f}",
        passed=result.clean and not letters and redone <= max(in_flight), redone=redone,
    ))
    assert result.clean, result
    assert lag == 0
    assert not letters
    assert redone <= max(in_flight), f"{redone} redone, {max(in_flight)} in flight"
