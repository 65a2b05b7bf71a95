"""A backlog past the byte bound on a route that does not coalesce (issue 21).

The route names its workflow (``SignalWithStart(workflow="RecorderWorkflow", ...)``, as a team
with Go or Java workflows writes it): every event is its own call, so the dispatcher's byte
bound (``max_buffered_bytes``) is reached long before the backlog is taken. Records of
unequal sizes make a finish that leaves the bound crossed common. Before the fix, a submitter
waiting there spun on a set event: the loop froze at 100% CPU, probes went unanswered and
SIGTERM was ignored.

The sidecar runs as users run it (``loom run``, a subprocess) against the real servers, and a
probe asks ``/healthz`` every 100 ms throughout, each answer within 1 s.
"""

from __future__ import annotations

import dataclasses
import random
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from kit import Prober, eventually, metric_value
from recorder import publish
from temporalio.client import Client
from temporalio.worker import Worker

from bridge.events import Event
from faults.harness import Row, Sidecars, dead_letters, fault_settings, settle, size, unique
from faults.workload import expected_by_workflow, step_events

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.temporal]

PROBE_BUDGET_S = 1.0
#: What a kubelet and a Prometheus scrape ask.
PATHS = ("/livez", "/metrics")


def _uneven(events: list[Event], seed: int) -> list[Event]:
    """The same events with pads of random length: the records' sizes differ."""
    rng = random.Random(seed)
    return [
        dataclasses.replace(e, data={**e.data, "pad": "x" * rng.randrange(0, 3000)})
        for e in events
    ]


@pytest.mark.timeout(300)
async def test_backlog_past_the_byte_bound_drains_with_probes_answered(
    temporal_client: Client,
    recorder_worker: Worker,
    loom_kafka_bootstrap: str,
    new_topic: Callable[..., Awaitable[str]],
    make_producer: Callable[..., Awaitable[Any]],
    sidecars: Sidecars,
    fault_results: Callable[[Row], None],
) -> None:
    """16. A backlog past the byte bound on a route that does not coalesce: drained, 0 lost,
    0 duplicated, probes answered within 1 s throughout, SIGTERM obeyed within the drain
    timeout."""
    started = time.monotonic()
    drain_timeout = 10.0
    entities, per_entity = size(50, 500), size(30, 60)
    topic, dlq = await new_topic(partitions=2), await new_topic()
    events = _uneven(step_events(unique("t16"), entities, per_entity), seed=16)
    expected = expected_by_workflow(events)
    settings = fault_settings(
        bootstrap=loom_kafka_bootstrap, topic=topic, dlq=dlq, group=unique("g16"),
        temporal=temporal_client.service_client.config.target_host,
        max_in_flight=16, drain_timeout_s=drain_timeout,
        # About 30 records of 4-10 KB held: the backlog is many times the bound.
        dispatch={"max_buffered_bytes": 200_000},
    )
    producer = await make_producer()
    await publish(producer, topic, events)  # the whole backlog is there before the start

    prober = Prober(PATHS, budget=PROBE_BUDGET_S)
    try:
        sidecar = await sidecars(settings, "s16-0")
        await sidecar.wait_ready()
        prober.watch(sidecar.http_port)

        async def delivered() -> float:
            sidecar.check_running()
            return metric_value(await sidecar.metrics(), "loom_events_routed_total")

        # Past the byte bound many times over, then stopped mid-backlog.
        await eventually(delivered, until=lambda n: n >= len(events) // 3, timeout=120,
                         interval=0.2, what="a third of the backlog delivered")
        prober.watch(None)
        sidecar.send(signal.SIGTERM)
        term_at = time.monotonic()
        code = await sidecar.wait(drain_timeout + 15)
        exit_after = time.monotonic() - term_at
        assert code is not None, f"still running after SIGTERM:\n{sidecar.tail(60)}"

        restarted = await sidecars(settings, "s16-1")
        await restarted.wait_ready()
        prober.watch(restarted.http_port)
        result, lag = await settle(
            temporal_client, expected, bootstrap=loom_kafka_bootstrap,
            group=settings.kafka.group_id, topic=topic, timeout=180,
        )
    finally:
        prober.close()
    letters = await dead_letters(loom_kafka_bootstrap, dlq)
    fault_results(Row.measured(
        "16. backlog past the byte bound, non-coalescing route", result, letters, started,
        f"{len(prober.answers)} probes, slowest {prober.slowest * 1000:.0f} ms, "
        f"{len(prober.failures())} unanswered in 1 s; SIGTERM: exit {code} after {exit_after:.1f} s",
        passed=result.clean and not prober.failures() and code == 0,
    ))
    assert not prober.failures(), f"probes unanswered within 1 s: {prober.failures()[:10]}"
    assert len(prober.answers) > 10
    assert code == 0, sidecar.tail()
    assert exit_after <= drain_timeout + 5
    assert result.clean, result
    assert lag == 0
    assert not letters
