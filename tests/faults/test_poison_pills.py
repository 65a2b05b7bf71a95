"""Poison pills: records that stopped the line before, mixed into good traffic to ``loom run``.

Each class used to stop the sidecar, and every restart (and every other member of the group
taking the partition over) stopped on the same record again:

- structured records whose ``id``, ``source``, an extension name or ``data`` hold a
  JSON-escaped lone surrogate (``"\\udc80"``): valid JSON, text no UTF-8 encoder accepts;
- a record whose header *name* is not UTF-8: aiokafka cannot parse it (every ``getmany``
  raises) and it shares its batch with good records;
- a route whose own code raises (a pydantic validator raising ``LookupError``).

Every poison record must reach the dead-letter topic with its reason, every good record its
workflow exactly once, and the sidecar must stay live and ready throughout.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from kit import FAST_GROUP, Prober, eventually
from rawkafka import batch, produce_batch
from recorder import query_all
from temporalio.client import Client
from temporalio.worker import Worker

from bridge.events import Event
from bridge.kafka import deadletters as dl
from bridge.kafka.binding import encode
from faults.harness import (
    FULL,
    Row,
    Sidecars,
    dead_letters,
    fault_settings,
    settle,
    size,
    unique,
)
from faults.workload import EVENT_TYPE, SOURCE, STRICT_TYPE, expected_by_workflow, step_events

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.temporal]

SEED = int(os.environ.get("LOOM_FAULTS_SEED", "8"))
PARTITIONS = 4
STRUCTURED = [("content-type", b"application/cloudevents+json")]


@dataclass(frozen=True)
class Pill:
    kind: str
    value: bytes | None
    headers: list[tuple[str, bytes]]
    reason: str


def _json(n: int, **members: str) -> bytes:
    # Written by hand: the escapes stay exactly as a producer in another language sends them.
    doc = {"specversion": '"1.0"', "id": f'"pill-{n}"', "source": f'"{SOURCE}"',
           "type": f'"{EVENT_TYPE}"', "data": f'{{"entity":"pill-{n}","seq":0}}', **members}
    return ("{" + ",".join(f'"{k}":{v}' for k, v in doc.items()) + "}").encode("ascii")


def _pills(n: int) -> list[Pill]:
    _, strict, strict_headers = encode(Event(
        id=f"boom-{n}", source=SOURCE, type=STRICT_TYPE, data={"entity": f"boom-{n}", "seq": 0}
    ))
    return [
        Pill("surrogate in id", _json(n, id=f'"pill-{n}\\udc80"'), STRUCTURED, "decode"),
        Pill("surrogate in source", _json(n, source='"test://\\udcff"'), STRUCTURED, "decode"),
        Pill("surrogate extension name", _json(n, **{f"x{n}\\udc80": '"1"'}), STRUCTURED, "decode"),
        Pill("surrogate in data", _json(n, data=f'{{"entity":"pill\\ud800-{n}","seq":0}}'),
             STRUCTURED, "decode"),
        Pill("route code raises", strict, strict_headers, "internal"),
    ]


def _raw(event: Event) -> tuple[bytes | None, bytes | None, list[tuple[bytes, bytes | None]]]:
    key, value, headers = encode(event)
    return key, value, [(name.encode(), val) for name, val in headers]


async def _delivered(client: Client, expected: dict[str, list[str]]) -> bool:
    seen = await query_all(client, expected)
    return all(len(set(seen[w])) >= len(ids) for w, ids in expected.items())


@pytest.mark.timeout(600 if FULL else 150)
async def test_poison_pills_mixed_into_good_traffic(
    temporal_client: Client,
    recorder_worker: Worker,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    sidecars: Sidecars,
    fault_results: Callable[[Row], None],
) -> None:
    started = time.monotonic()
    prefix = unique("t8")
    per_class = size(3, 10)
    good = step_events(prefix, size(20, 100), size(10, 20))
    pills = [p for n in range(per_class) for p in _pills(n)]
    # Unparseable records travel in a raw batch between two good records of their own
    # entity (one per partition, so their order holds), sent only that way.
    pads = {p: step_events(f"{prefix}-raw{p}", 1, 2 * per_class) for p in range(PARTITIONS)}
    expected = expected_by_workflow([*good, *(e for events in pads.values() for e in events)])
    topic, dlq = await new_topic(partitions=PARTITIONS), await new_topic()
    settings = fault_settings(
        bootstrap=loom_kafka_bootstrap, topic=topic, dlq=dlq, group=unique("g8"),
        temporal=temporal_client.service_client.config.target_host, kafka=FAST_GROUP,
    )
    sidecar = await sidecars(settings, "s8")
    producer = await make_producer()
    # Both probes every 0.1 s, from a thread (the test's own loop is busy publishing): the
    # measurement itself, not a wait. A probe answers within 5 s (a Kubernetes probe's default
    # timeout is 1 s, but this machine runs two test workers, their servers and the sidecar on
    # 2 cores).
    health = Prober(["/livez", "/readyz"], budget=5.0)
    try:
        await sidecar.wait_ready()
        health.watch(sidecar.http_port)

        stream: list[Event | Pill | int] = list(good)
        rng = random.Random(SEED)
        unreadable = [p for p in range(PARTITIONS) for _ in range(per_class)]
        inserts: list[Pill | int] = [*pills, *unreadable]
        for insert in inserts:
            stream.insert(rng.randrange(len(stream) + 1), insert)
        where: dict[tuple[int, int], str] = {}
        raw_headers: dict[tuple[int, int], list[tuple[bytes, bytes]]] = {}
        futures: list[tuple[Pill, Any]] = []
        sent_raw = dict.fromkeys(range(PARTITIONS), 0)
        pending = []
        for item in stream:
            if isinstance(item, Pill):
                fut = await producer.send(topic, value=item.value, headers=item.headers)
                futures.append((item, fut))
            elif isinstance(item, int):  # a raw batch: pad, unparseable record, pad
                partition, k = item, sent_raw[item]
                sent_raw[item] += 1
                before, after = pads[partition][2 * k], pads[partition][2 * k + 1]
                key, value, headers = _raw(before)
                bad_headers = [*headers, (b"\xff\xfebad", b"1")]
                base = await produce_batch(loom_kafka_bootstrap, topic, partition, batch(
                    [_raw(before), (key, b"unreadable", bad_headers), _raw(after)]
                ))
                where[(partition, base + 1)] = "unreadable"
                raw_headers[(partition, base + 1)] = [(n, v or b"") for n, v in bad_headers]
            else:
                key, value, encoded = encode(item)
                pending.append(await producer.send(topic, value=value, key=key, headers=encoded))
        await asyncio.gather(*pending)
        for pill, fut in futures:
            meta = await fut
            where[(meta.partition, meta.offset)] = pill.reason
        async def delivered() -> bool:
            sidecar.check_running()  # the sidecar dying fails the wait at once
            return await _delivered(temporal_client, expected)

        await eventually(delivered, timeout=120, interval=0.3, what="every good event delivered")
        result, lag = await settle(
            temporal_client, expected, bootstrap=loom_kafka_bootstrap,
            group=settings.kafka.group_id, topic=topic, timeout=120,
        )
        health.close()
        alive = sidecar.returncode is None
    finally:
        health.close()
        await sidecar.close()
    letters = [dl.parse_deadletter(r) for r in await dead_letters(loom_kafka_bootstrap, dlq)]
    wrong: list[str] = []
    found: set[tuple[int, int]] = set()
    for letter in letters:
        place = (int(letter.info["partition"]), int(letter.info["offset"]))
        reason = where.get(place)
        if reason is None:
            wrong.append(f"a good record was dead-lettered: {place} {dict(letter.info)}")
            continue
        found.add(place)
        if letter.info["reason"] != reason:
            wrong.append(f"{place}: reason {letter.info['reason']}, expected {reason}: "
                         f"{letter.info.get('message', '')[:120]}")
        if place in raw_headers and letter.raw_headers != raw_headers[place]:
            wrong.append(f"{place}: headers not carried byte for byte")
    missing = sorted(set(where) - found)
    unhealthy = health.failures()
    count = {r: list(where.values()).count(r) for r in sorted(set(where.values()))}
    fault_results(Row.measured(
        "12. poison pills mixed into good traffic (loom run)", result, letters, started,
        f"{len(where)} poison records: lone surrogates in id, source, extension name, data "
        f"({4 * per_class}); header name not UTF-8, aiokafka cannot parse ({len(unreadable)}); "
        f"route code raising ({per_class}); dead-lettered {count}: "
        f"{not missing and not wrong}; {len(health.answers)} health probes, all 200: {not unhealthy}",
        passed=result.clean and lag == 0 and not missing and not wrong and alive and not unhealthy,
        sent=len(good) + 2 * len(unreadable) + len(where),
    ))
    assert alive, sidecar.tail()
    assert result.clean, result
    assert lag == 0
    assert not missing, f"not dead-lettered: {missing}"
    assert not wrong, wrong[:10]
    assert len(letters) == len(where)
    assert health.answers and not unhealthy, unhealthy[:5]
