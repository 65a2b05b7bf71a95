"""Log lines: JSON for machines (with the current span's ids), text for people."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from bridge.telemetry.logs import configure_logging


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
