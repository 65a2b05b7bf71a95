"""The dead-letter topic refuses records: for good (too large for it), or for now (unreachable).

The first scenario runs the sidecar in this process; the second runs ``loom run`` to send it
SIGTERM.

- A record that the dead-letter topic will never take (here: over the producer's
  ``max_request_size`` of 1 MiB, as a broker's ``message.max.bytes`` would refuse it; the
  embedded broker enforces no topic limit) is written headers-only, and the line goes on.
- While the dead-letter topic cannot be reached (the broker resets every connection that
  sends it a record), the write is retried; SIGTERM then still exits within the drain
  timeout, the record stays uncommitted, and after a restart it is dead-lettered: nothing
  lost.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from kit import FAST_GROUP, eventually
from recorder import publish
from temporalio.client import Client
from temporalio.worker import Worker

from bridge.dev import EmbeddedKafka, create_topic, free_port
from bridge.events import Event
from bridge.kafka import deadletters as dl
from bridge.kafka.binding import encode
from bridge.kafka.clients import start_client, stop_client
from bridge.sidecar.loop import Loom, running
from faults.harness import (
    FULL,
    Row,
    Sidecars,
    dead_letters,
    fault_settings,
    group_offsets,
    settle,
    size,
    unique,
)
from faults.proxy import FaultProxy
from faults.workload import EVENT_TYPE, SOURCE, expected_by_workflow, make_router, step_events

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.temporal]

TIMEOUT = 600 if FULL else 150
MIB = 1024 * 1024


@pytest.mark.timeout(TIMEOUT)
async def test_deadletter_topic_refuses_records_too_large_for_it(
    temporal_client: Client,
    recorder_worker: Worker,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    task_queue: str,
    fault_results: Callable[[Row], None],
) -> None:
    started = time.monotonic()
    topic, dlq = await new_topic(partitions=4), await new_topic()
    good = step_events(unique("t10"), size(10, 60), size(8, 20))
    expected = expected_by_workflow(good)
    settings = fault_settings(
        bootstrap=loom_kafka_bootstrap, topic=topic, dlq=dlq, group=unique("g10"),
        temporal=temporal_client.service_client.config.target_host,
        kafka={**FAST_GROUP, "producer": {"max_request_size": MIB}},
    )
    # Two kinds of records over 1 MiB: undecodable bytes, and valid events over Temporal's
    # 2 MB payload limit (their dead-letter write carries the whole record, as it must).
    big: list[tuple[bytes | None, bytes, list[tuple[str, bytes]], str]] = []
    for i in range(size(2, 5)):
        big.append((None, b"not a cloudevent " * (MIB // 16), [], "decode"))
        event = Event(id=f"big-{i}", source=SOURCE, type=EVENT_TYPE,
                      data={"entity": f"big-{i}", "seq": 0, "pad": "x" * (3 * MIB)})
        key, value, headers = encode(event)
        assert value is not None
        big.append((key, value, headers, "payload-too-large"))
    loom = Loom(make_router(task_queue), temporal_client, settings)
    producer = await make_producer()
    async with running(loom):
        where: dict[tuple[int, int], str] = {}
        step = max(1, len(good) // (len(big) + 1))
        for n, (key, value, headers, reason) in enumerate(big):
            await publish(producer, topic, good[n * step : (n + 1) * step])
            meta = await producer.send_and_wait(topic, value=value, key=key, headers=headers)
            where[(meta.partition, meta.offset)] = reason
        await publish(producer, topic, good[len(big) * step :])
        result, lag = await settle(
            temporal_client, expected, bootstrap=loom_kafka_bootstrap,
            group=settings.kafka.group_id, topic=topic, timeout=90,
        )
        alive = loom.error is None and loom.health.ready
    letters = [dl.parse_deadletter(r) for r in await dead_letters(loom_kafka_bootstrap, dlq)]
    wrong = []
    for letter in letters:
        place = (int(letter.info["partition"]), int(letter.info["offset"]))
        if where.get(place) != letter.info["reason"]:
            wrong.append(f"{place}: {letter.info['reason']}, expected {where.get(place)}")
        if not letter.body_omitted or not letter.info["write-error"].startswith("MessageSizeTooLarge"):
            wrong.append(f"{place}: not headers-only: {dict(letter.info)}")
        if letter.info["topic"] != topic or letter.record.value:
            wrong.append(f"{place}: coordinates or body wrong")
    fault_results(Row.measured(
        "14. dead-letter topic refuses records too large for it (1 MiB)", result, letters, started,
        f"{len(big)} records of 1-3 MB: each written headers-only (loom-dlq-body: omitted, "
        f"the refusal and the original's coordinates): {not wrong and len(letters) == len(big)}; "
        f"ready at the end: {alive}",
        passed=result.clean and lag == 0 and not wrong and len(letters) == len(big) and alive,
        sent=len(good) + len(big),
    ))
    assert result.clean, result
    assert lag == 0
    assert not wrong, wrong
    assert len(letters) == len(big)
    assert alive, loom.error


PUBLISHER = "loom-faults-publisher"


@pytest.mark.timeout(TIMEOUT)
async def test_sigterm_while_the_deadletter_topic_is_unreachable(
    temporal_client: Client,
    recorder_worker: Worker,
    task_queue: str,
    sidecars: Sidecars,
    fault_results: Callable[[Row], None],
) -> None:
    started = time.monotonic()
    drain_timeout = 2.0
    broker_port = free_port()
    events = step_events(unique("t11"), 2, 5)
    expected = expected_by_workflow(events)
    async with FaultProxy(broker_port) as proxy:
        # Clients reconnect to the advertised address: the broker must advertise the proxy.
        async with EmbeddedKafka(port=broker_port, advertised_port=proxy.port) as kafka:
            topic, dlq = unique("faults-t11"), unique("faults-dlq11")
            await create_topic(kafka.bootstrap, topic, partitions=1)
            await create_topic(kafka.bootstrap, dlq)
            settings = fault_settings(
                bootstrap=proxy.address, topic=topic, dlq=dlq, group=unique("g11"),
                temporal=temporal_client.service_client.config.target_host,
                drain_timeout_s=drain_timeout, kafka=FAST_GROUP,
            )
            group = settings.kafka.group_id
            producer = await start_client(AIOKafkaProducer(
                bootstrap_servers=proxy.address, client_id=PUBLISHER, enable_idempotence=False
            ))
            try:
                # Every record sent by anyone but the test's publisher is refused: the
                # sidecar reads and commits, but cannot write to the dead-letter topic.
                proxy.refuse = lambda api_key, client_id: api_key == 0 and client_id != PUBLISHER
                first = await sidecars(settings, "s11")
                await first.wait_ready()
                await publish(producer, topic, events[:5])
                bad = await producer.send_and_wait(topic, value=b"\xff not a cloudevent")
                await publish(producer, topic, events[5:])
                def refused_writes() -> int:
                    first.check_running()
                    return proxy.stats.refused_requests

                await eventually(refused_writes, until=lambda n: n >= 3, timeout=60,
                                 interval=0.05, what="the dead-letter write refused, retried")
                first.send(signal.SIGTERM)
                term_at = time.monotonic()
                code = await first.wait(drain_timeout + 15)
                exit_after = time.monotonic() - term_at
                assert code is not None, f"still running {drain_timeout + 15:.0f}s after SIGTERM"
                # Committed: the five records before the bad one, not the bad one.
                at_stop = await group_offsets(kafka.bootstrap, group, topic)
                refused = proxy.stats.refused_requests
                proxy.refuse = None  # the dead-letter topic is back: restart (in this process)
                async with running(Loom(make_router(task_queue), temporal_client, settings)):
                    result, lag = await settle(
                        temporal_client, expected, bootstrap=kafka.bootstrap,
                        group=group, topic=topic, timeout=60,
                    )
            finally:
                await stop_client(producer)
            letters = [dl.parse_deadletter(r) for r in await dead_letters(kafka.bootstrap, dlq)]
    placed = [(int(d.info["offset"]), d.info["reason"], d.body_omitted) for d in letters]
    fault_results(Row.measured(
        "15. SIGTERM while the dead-letter topic is unreachable, restarted", result, letters,
        started,
        f"exit code {code} {exit_after:.1f} s after SIGTERM (drain timeout {drain_timeout:.0f} s) "
        f"after {refused} refused writes; committed at the stop {at_stop} (offset of the bad record: "
        f"{bad.offset}); after the restart it was dead-lettered: {placed}",
        passed=result.clean and code == 0 and exit_after <= drain_timeout + 5
        and at_stop == ({0: 5}, {0: 11}) and placed == [(bad.offset, "decode", False)] and lag == 0,
        sent=len(events) + 1,
    ))
    assert code == 0, first.tail()
    assert exit_after <= drain_timeout + 5, exit_after
    assert at_stop == ({0: 5}, {0: 11})  # nothing at or after the bad record was committed
    assert placed == [(bad.offset, "decode", False)]
    assert result.clean, result
    assert lag == 0
