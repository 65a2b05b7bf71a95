"""The tests' kit itself: waiting, settings as environment, the topic reader."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from kit import eventually, loom_settings, settings_as_env

from bridge.settings import LoomSettings
from bridge.testing import read_records


async def test_eventually_returns_the_first_value_that_holds() -> None:
    values = iter(range(100))
    assert await eventually(lambda: next(values), until=lambda n: n >= 3, timeout=5,
                            interval=0.001) == 3

    async def probe() -> str:
        return "ready"

    assert await eventually(probe, timeout=5) == "ready"


async def test_eventually_fails_with_the_last_value_seen() -> None:
    values = iter(range(1000))
    with pytest.raises(AssertionError, match=r"the count: not true after 0.05s; last: \d+"):
        await eventually(lambda: next(values), until=lambda n: n < 0, timeout=0.05,
                         interval=0.001, what="the count")


async def test_a_probe_that_asserts_is_not_ready_yet() -> None:
    calls = 0

    def probe() -> int:
        nonlocal calls
        calls += 1
        assert calls >= 3, f"only {calls} calls"
        return calls

    assert await eventually(probe, timeout=5, interval=0.001) == 3
    with pytest.raises(AssertionError, match=r"last: AssertionError\('never'\)"):
        await eventually(_never, timeout=0.02, interval=0.001)


def _never() -> bool:
    raise AssertionError("never")


async def test_any_other_error_fails_at_once_not_at_the_timeout() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def broken() -> None:
        raise RuntimeError("the workflow failed")

    with pytest.raises(RuntimeError, match="the workflow failed"):
        await eventually(broken, timeout=60)
    assert loop.time() - started < 5


def test_settings_as_env_gives_a_process_the_same_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = loom_settings(
        "127.0.0.1:9092", ["a", "b"], "a.dlq", routes="app.routes:router",
        http_port=8123, log_json=True, unmatched="skip",
        kafka={"sasl_password": "s3cret", "producer": {"linger_ms": 1}},
        temporal={"address": "127.0.0.1:7233", "namespace": "ns"},
        emit={"topic_map": {"order.*": "orders.out"}},
        dispatch={"max_in_flight": 3},
    )
    env = settings_as_env(settings)
    assert env["LOOM_ROUTES"] == "app.routes:router"
    assert env["LOOM_KAFKA__TOPICS"] == '["a", "b"]'
    assert env["LOOM_KAFKA__SASL_PASSWORD"] == "s3cret"
    monkeypatch.chdir(tmp_path)  # no .env file
    for name in [n for n in os.environ if n.startswith("LOOM_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert LoomSettings() == settings


@pytest.mark.kafka
async def test_read_records_reads_to_the_end_with_or_without_a_count(
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
) -> None:
    empty, topic = await new_topic(), await new_topic(partitions=2)
    assert await read_records(loom_kafka_bootstrap, empty, timeout=10) == []
    producer = await make_producer()
    values = [uuid.uuid4().bytes for _ in range(5)]
    for n, value in enumerate(values):
        await producer.send_and_wait(topic, value, partition=n % 2)
    everything = await read_records(loom_kafka_bootstrap, topic, timeout=10)
    assert sorted(r.value or b"" for r in everything) == sorted(values)
    # With a count: the rest already written comes too (a check for "exactly n" can fail).
    assert len(await read_records(loom_kafka_bootstrap, topic, count=1, timeout=10)) == 5
    # Records sent together travel in one batch: the reader still reads to its last record.
    batched, lingering = await new_topic(), await make_producer(linger_ms=200)
    sends = [await lingering.send(batched, value) for value in values]
    await asyncio.gather(*sends)
    assert len(await read_records(loom_kafka_bootstrap, batched, timeout=10)) == 5
