"""6. Bad input, generated with hypothesis, mixed into good traffic to a running sidecar.

Every bad record must reach the dead-letter topic byte for byte with its reason, every good
record its workflow exactly once, and the sidecar must stay live and ready throughout.
``LOOM_FAULTS_SEED`` changes the generated records (default: a fixed seed, so CI is stable).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, Phase, given, seed
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from kit import Prober
from temporalio.client import Client
from temporalio.worker import Worker

from bridge.events import Event
from bridge.kafka import deadletters as deadletter
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
from faults.workload import EVENT_TYPE, SOURCE, expected_by_workflow, step_events

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.temporal]

SEED = int(os.environ.get("LOOM_FAULTS_SEED", "8"))
T = TypeVar("T")

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Bad:
    """A bad record and the dead-letter reason it must get."""

    kind: str
    key: bytes | None
    value: bytes | None
    headers: Headers
    reason: str


def _valid(entity: str = "bad", seq: int = 0, **data: Any) -> Event:
    return Event(
        id=f"bad-{entity}-{seq}", source=SOURCE, type=EVENT_TYPE,
        data={"entity": entity, "seq": seq, **data},
    )


def _binary() -> tuple[bytes | None, bytes | None, Headers]:
    return encode(_valid())


def _replace(headers: Headers, name: str, value: bytes | None) -> Headers:
    out = [(k, v) for k, v in headers if k != name]
    return out if value is None else [*out, (name, value)]


ids = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
keys = st.none() | st.binary(min_size=1, max_size=16)

random_bytes = st.builds(
    lambda key, value: Bad("random bytes", key, value, [], "decode"),
    keys,
    # Bytes that happen to be a JSON object would still miss every required attribute.
    st.binary(min_size=1, max_size=300),
)


def _truncated(cut: int, entity: str) -> Bad:
    _, body, headers = encode(_valid(entity), mode="structured")
    assert body is not None
    return Bad("truncated JSON", None, body[: max(1, cut % len(body))], headers, "decode")


truncated_json = st.builds(_truncated, st.integers(1, 10_000), ids)


def _specversion(value: bytes | None, structured: bool) -> Bad:
    if structured:
        _, body, headers = encode(_valid(), mode="structured")
        assert body is not None
        doc = json.loads(body)
        if value is None:
            del doc["specversion"]
        else:
            doc["specversion"] = value.decode("utf-8", "replace")
        return Bad("specversion", None, json.dumps(doc).encode(), headers, "decode")
    key, body, headers = _binary()
    return Bad("specversion", key, body, _replace(headers, "ce_specversion", value), "decode")


wrong_specversion = st.builds(
    _specversion,
    st.none()
    | st.sampled_from([b"0.3", b"2.0", b"", b"1", b"1.0.0", b" 1.0"])
    | st.text(min_size=1, max_size=8).filter(lambda s: s != "1.0").map(str.encode),
    st.booleans(),
)


def _missing(attribute: str, structured: bool) -> Bad:
    if structured:
        _, body, headers = encode(_valid(), mode="structured")
        assert body is not None
        doc = json.loads(body)
        del doc[attribute]
        return Bad(f"missing {attribute}", None, json.dumps(doc).encode(), headers, "decode")
    key, body, headers = _binary()
    return Bad(f"missing {attribute}", key, body, _replace(headers, f"ce_{attribute}", None), "decode")


missing_attribute = st.builds(_missing, st.sampled_from(["id", "source", "type"]), st.booleans())


def _non_utf8(name: str, junk: bytes) -> Bad:
    key, body, headers = _binary()
    return Bad("non-UTF-8 header", key, body, _replace(headers, name, b"\xff" + junk), "decode")


non_utf8_header = st.builds(
    _non_utf8,
    st.sampled_from(["ce_id", "ce_source", "ce_type", "ce_specversion", "ce_time", "content-type"]),
    st.binary(max_size=8),
)


def _duplicate(name: str, same: bool, upper: bool) -> Bad:
    key, body, headers = _binary()
    if name not in dict(headers):  # content-type: binary encode writes none for JSON data
        headers = [*headers, (name, b"application/json")]
    value = dict(headers)[name] if same else b"other"
    return Bad("duplicate header", key, body, [*headers, (name.upper() if upper else name, value)], "decode")


duplicate_header = st.builds(
    _duplicate,
    st.sampled_from(["ce_id", "ce_source", "ce_type", "ce_specversion", "content-type"]),
    st.booleans(),
    st.booleans(),
)


def _big(extra: int, entity: str) -> Bad:
    key, body, headers = encode(_valid(entity, pad="x" * (3 * 1024 * 1024 + extra)))
    return Bad("3 MB data", key, body, headers, "payload-too-large")


big_data = st.builds(_big, st.integers(0, 64 * 1024), ids)


def _content_type(kind: int, text: str) -> Bad:
    key, _, headers = _binary()
    if kind == 0:  # JSON announced, something else sent
        value = b"<xml>" + text.encode() + b"</xml>"
        headers = _replace(headers, "content-type", b"application/json")
        return Bad("wrong content-type", key, value, headers, "decode")
    if kind == 1:  # a non-JSON type: data arrives as bytes, not JSON, and fails the model
        value = f"entity={text};seq=1".encode()
        return Bad(
            "wrong content-type", key, value, _replace(headers, "content-type", b"text/plain"),
            "data-validation",
        )
    _, sbody, _ = encode(_valid(), mode="structured")
    ctype = [b"application/cloudevents+xml", b"application/cloudevents+json; charset=latin-1"][kind - 2]
    return Bad("wrong content-type", None, sbody, [("content-type", ctype)], "decode")


wrong_content_type = st.builds(_content_type, st.integers(0, 3), st.text(max_size=20))


def examples(strategy: st.SearchStrategy[T], count: int, salt: int) -> list[T]:
    """Up to ``count`` distinct-ish draws of ``strategy`` (fewer if its space is smaller)."""
    out: list[T] = []

    @hyp_settings(
        max_examples=count, database=None, phases=[Phase.generate], deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @seed(SEED * 1000 + salt)
    @given(strategy)
    def collect(value: T) -> None:
        out.append(value)

    collect()
    return out[:count]


def bad_records() -> list[Bad]:
    per_kind = size(12, 60)
    kinds = [
        random_bytes, truncated_json, wrong_specversion, missing_attribute, non_utf8_header,
        duplicate_header, wrong_content_type,
    ]
    bad: list[Bad] = []
    for salt, strategy in enumerate(kinds):
        bad += examples(strategy, per_kind, salt)
    bad += examples(big_data, size(2, 5), 99)  # 3 MB each: a few are enough
    return bad


@pytest.mark.timeout(600 if FULL else 150)
async def test_bad_input_mixed_into_good_traffic(
    temporal_client: Client,
    recorder_worker: Worker,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    sidecars: Sidecars,
    fault_results: Callable[[Row], None],
) -> None:
    started = time.monotonic()
    bad = bad_records()
    kinds = {b.kind.split(" ")[0] for b in bad}
    assert len(kinds) >= 8, kinds
    good = step_events(unique("t6"), size(20, 100), size(15, 20))
    expected = expected_by_workflow(good)
    topic, dlq = await new_topic(partitions=4), await new_topic()
    settings = fault_settings(
        bootstrap=loom_kafka_bootstrap, topic=topic, dlq=dlq, group=unique("g6"),
        temporal=temporal_client.service_client.config.target_host,
    )
    sidecar = await sidecars(settings, "s6")
    producer = await make_producer()
    # Both probes every 0.1 s, from a thread (the test's own loop is busy publishing): the
    # measurement itself, not a wait. A probe answers within 5 s (a Kubernetes probe's default
    # timeout is 1 s, but this machine runs two test workers, their servers and the sidecar on
    # 2 cores).
    health = Prober(["/livez", "/readyz"], budget=5.0)
    try:
        await sidecar.wait_ready()
        health.watch(sidecar.http_port)

        # Bad records at random places among the good ones (good order kept per entity).
        stream: list[Event | Bad] = list(good)
        rng = random.Random(SEED)
        for b in bad:
            stream.insert(rng.randrange(len(stream) + 1), b)
        futures: list[tuple[Bad, Any]] = []
        good_futures = []
        for item in stream:
            if isinstance(item, Bad):
                fut = await producer.send(topic, value=item.value, key=item.key, headers=item.headers)
                futures.append((item, fut))
            else:
                key, value, headers = encode(item)
                good_futures.append(await producer.send(topic, value=value, key=key, headers=headers))
        await asyncio.gather(*good_futures)
        where: dict[tuple[int, int], Bad] = {}
        for item, fut in futures:
            meta = await fut
            where[(meta.partition, meta.offset)] = item
        result, lag = await settle(
            temporal_client, expected, bootstrap=loom_kafka_bootstrap,
            group=settings.kafka.group_id, topic=topic, timeout=120,
        )
        health.close()
        alive = sidecar.returncode is None
    finally:
        health.close()
        await sidecar.close()
    letters = await dead_letters(loom_kafka_bootstrap, dlq)
    wrong: list[str] = []
    found: set[tuple[int, int]] = set()
    for letter in letters:
        dead = deadletter.parse_deadletter(letter)
        info = dead.info
        place = (int(info["partition"]), int(info["offset"]))
        bad_item = where.get(place)
        if bad_item is None:
            wrong.append(f"a good record was dead-lettered: {place} {info.get('reason')}")
            continue
        found.add(place)
        original = dead.original_headers
        if info["reason"] != bad_item.reason:
            wrong.append(f"{bad_item.kind}: reason {info['reason']!r}, expected {bad_item.reason!r}"
                         f" ({info.get('message', '')[:120]})")
        if letter.value != bad_item.value or letter.key != bad_item.key or original != bad_item.headers:
            wrong.append(f"{bad_item.kind}: not byte for byte")
    missing = [where[p].kind for p in where if p not in found]
    unhealthy = health.failures()
    reasons: dict[str, int] = {}
    for b in where.values():
        reasons[b.reason] = reasons.get(b.reason, 0) + 1
    fault_results(Row.measured(
        "6. hypothesis bad input mixed into good traffic", result, letters, started,
        f"{len(bad)} bad records ({', '.join(f'{k} {v}' for k, v in sorted(reasons.items()))}), "
        f"all dead-lettered with their reason: {not missing and not wrong}; "
        f"{len(health.answers)} health probes, all 200: {not unhealthy}",
        passed=result.clean and not missing and not wrong and not unhealthy,
        sent=len(good) + len(bad),
    ))
    assert result.clean, result
    assert lag == 0
    assert not missing, f"bad records not dead-lettered: {missing}"
    assert not wrong, wrong[:10]
    assert len(letters) == len(bad)
    assert alive and health.answers and not unhealthy, unhealthy[:5]
