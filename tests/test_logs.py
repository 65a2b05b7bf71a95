"""Log lines: JSON for machines (with the current span's ids), text for people."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from bridge.telemetry.logs import CLIENT_ERRORS, RepeatedErrors, configure_logging


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    configure_logging("INFO", json_lines=True, stream=stream)
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            if handler.get_name() == "loom":
                root.removeHandler(handler)
        root.setLevel(level)


def test_json_lines_carry_the_current_span(json_log: io.StringIO) -> None:
    log = logging.getLogger("loom.test")
    tracer = TracerProvider().get_tracer("test")  # an SDK tracer, not the global one
    log.info("before")
    with tracer.start_as_current_span("work") as span:
        log.info("inside", extra={"fields": {"route": "r"}})
        context = span.get_span_context()
    log.info("after")
    before, inside, after = (json.loads(line) for line in json_log.getvalue().splitlines())
    assert inside["trace_id"] == f"{context.trace_id:032x}"
    assert inside["span_id"] == f"{context.span_id:016x}"
    assert inside["route"] == "r" and inside["msg"] == "inside"
    # No span, no ids (not zeros): the same lines would show them if they were there.
    assert "trace_id" not in before and "span_id" not in before
    assert "trace_id" not in after and "span_id" not in after


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _record(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_repeated_client_errors_are_one_line_per_kind_per_interval_with_a_count() -> None:
    clock = Clock()
    summary = RepeatedErrors(prefixes=("aiokafka",), interval=10.0, clock=clock)
    passed: list[str] = []

    def log(name: str, msg: str, *args: object, level: int = logging.ERROR) -> None:
        record = _record(name, msg, *args, level=level)
        if summary.filter(record):
            passed.append(record.getMessage())

    for n in range(500):  # a broker cut: the same two kinds, over and over, 25 s long
        clock.now = 100.0 + n * 0.05
        log("aiokafka", "Unable connect to node with id %s: %s", n % 3, "refused")
        log("aiokafka.consumer.group_coordinator", "Error sending JoinGroupRequest_v5 to node")
        log("aiokafka", "debug noise", level=logging.INFO)  # below WARNING: untouched
        log("loom", "our own line %s", n)  # not the client's: untouched
    own = [line for line in passed if line.startswith("our own")]
    noise = [line for line in passed if line == "debug noise"]
    client = [line for line in passed if line not in own and line not in noise]
    assert len(own) == 500 and len(noise) == 500
    # 25 s of errors in 10 s windows: each kind passes at 0 s, 10 s and 20 s.
    assert len(client) == 6, client
    assert client[0] == "Unable connect to node with id 0: refused"
    assert client[2].endswith("[199 more like it in the last 10 s]"), client[2]
    # The connection is back: the windows end, and the count of what was held back is told.
    # Held back in the last windows (20 s to 25 s), told by no line yet: 99 of each kind.
    assert summary.settle() == 2 * 99
    assert summary.settle() == 0
    log("aiokafka", "Unable connect to node with id %s: %s", 1, "refused")
    assert passed[-1] == "Unable connect to node with id 1: refused"  # a new outage: at once


def test_configure_logging_summarises_the_kafka_clients_repeats() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    CLIENT_ERRORS.settle()
    configure_logging("INFO", stream=stream)
    try:
        for _ in range(100):
            logging.getLogger("aiokafka.conn").error("Unable connect to node with id %s", 1)
        lines = stream.getvalue().splitlines()
        assert len(lines) == 1 and "Unable connect to node with id 1" in lines[0]
        assert CLIENT_ERRORS.settle() == 99
    finally:
        for handler in list(root.handlers):
            if handler.get_name() == "loom":
                root.removeHandler(handler)
        root.setLevel(level)
