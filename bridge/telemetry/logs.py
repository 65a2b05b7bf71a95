"""Structured logs: ``key=value`` text for people, one JSON object per line for machines.

``configure_logging(level, json_lines)`` installs one handler on the root logger writing to
stderr. Fields passed with ``extra={"fields": {...}}`` become JSON members (or ``k=v`` pairs
in text mode), so a dead-letter or the start-up summary is searchable without regexes. A JSON
line written while an OpenTelemetry span is current carries its ``trace_id`` and ``span_id``
(the W3C hex forms), so logs and traces join.
Payload bodies are never logged at INFO: callers log identities (topic, partition, offset,
route, event id), not ``data``.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from opentelemetry import trace

__all__ = [
    "CLIENT_ERRORS",
    "FIELDS",
    "DeadLetterFields",
    "JsonFormatter",
    "RepeatedErrors",
    "TextFormatter",
    "configure_logging",
]

#: Name of the ``extra`` member carrying structured fields: ``log.info(msg, extra={FIELDS: {...}})``.
FIELDS = "fields"

_HANDLER_NAME = "loom"


def _fields(record: logging.LogRecord) -> Mapping[str, Any]:
    fields = getattr(record, FIELDS, None)
    return fields if isinstance(fields, Mapping) else {}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts``, ``level``, ``logger``, ``msg``, ``trace_id`` and
    ``span_id`` when a span is current, fields, ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a single line of JSON."""
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        # Formatting runs in the logging call's thread and context: the current span is the
        # one the line was written in.
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            out["trace_id"] = trace.format_trace_id(span.trace_id)
            out["span_id"] = trace.format_span_id(span.span_id)
        for key, value in _fields(record).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        # default=str: a field value that is not JSON (a Path, an enum) must not lose the line.
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time level logger: message k=v ...`` on one line (tracebacks follow)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` with its fields appended as ``k=v`` pairs."""
        text = super().format(record)
        fields = _fields(record)
        if not fields:
            return text
        pairs = " ".join(f"{k}={_text(v)}" for k, v in fields.items())
        head, sep, tail = text.partition("\n")
        return f"{head} {pairs}{sep}{tail}"


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if (not text or " " in text) else text


class DeadLetterFields(logging.Filter):
    """Adds structured fields to the consumer's one line per dead-letter.

    :class:`bridge.sidecar.loop.Loom` logs ``"dead-lettered %s[%d]@%d route=%s reason=%s: %s"``
    with (topic, partition, offset, route, reason, error); this filter turns those arguments
    into fields (``event=dead-letter``, ``topic``, ``partition``, ``offset``, ``route``,
    ``reason``) so JSON logs can be queried by reason without parsing the message.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Enrich a dead-letter record; never drops anything."""
        args = record.args
        if (
            isinstance(record.msg, str)
            and record.msg.startswith("dead-lettered ")
            and isinstance(args, tuple)
            and len(args) == 6
            and not _fields(record)
        ):
            topic, partition, offset, route, reason, _ = args
            setattr(record, FIELDS, {
                "event": "dead-letter", "topic": topic, "partition": partition,
                "offset": offset, "route": route, "reason": reason,
            })
        return True


class RepeatedErrors(logging.Filter):
    """Summarises a client library's repeated warnings and errors: one line per kind per
    interval, with a count.

    A broker outage makes aiokafka log every failed reconnect, metadata and coordinator
    request (about 2,000 ERROR lines for a 25 s cut). The first record of a kind (its logger
    and message template) passes; the others within ``interval`` seconds are counted and
    dropped; the first one after the interval passes with ``[N more like it in the last T s]``
    appended. :meth:`settle` ends every window (the connection is back) and says how many
    lines were held back.

    Args:
        prefixes: Logger names (and their children) summarised; others pass untouched.
        interval: Seconds of one window.
        clock: Monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        prefixes: tuple[str, ...] = ("aiokafka",),
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._prefixes = prefixes
        self._interval = interval
        self._clock = clock
        # (logger, template) -> [window start, lines held back in it]
        self._windows: dict[tuple[str, str], list[float]] = {}
        self._lock = threading.Lock()  # aiokafka and the SDK log from other threads too

    def _summarised(self, name: str) -> bool:
        return any(name == p or name.startswith(p + ".") for p in self._prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        """Pass the first record of its kind per interval; hold back (count) the others."""
        if record.levelno < logging.WARNING or not self._summarised(record.name):
            return True
        key = (record.name, str(record.msg))
        now = self._clock()
        with self._lock:
            window = self._windows.get(key)
            if window is not None and now - window[0] < self._interval:
                window[1] += 1
                return False
            held = 0 if window is None else int(window[1])
            since = 0.0 if window is None else now - window[0]
            self._windows[key] = [now, 0]
        if held:
            record.msg = f"{record.msg} [{held} more like it in the last {since:.0f} s]"
        return True

    def settle(self) -> int:
        """End every window; returns how many lines were held back and not yet told."""
        with self._lock:
            held = int(sum(window[1] for window in self._windows.values()))
            self._windows.clear()
        return held


#: The filter :func:`configure_logging` installs on aiokafka's records; the sidecar settles
#: it when Kafka answers again.
CLIENT_ERRORS = RepeatedErrors()


def configure_logging(
    level: str = "INFO", *, json_lines: bool = False, stream: TextIO | None = None
) -> None:
    """Install the loom's handler on the root logger (replacing an earlier one).

    Args:
        level: Root level name (``DEBUG``, ``INFO``, ...).
        json_lines: One JSON object per line instead of text.
        stream: Where to write (stderr by default).
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    if json_lines:  # the text line already reads "... route=R reason=X"
        handler.addFilter(DeadLetterFields())
    handler.addFilter(CLIENT_ERRORS)
    root.addHandler(handler)
    root.setLevel(level)
    # aiokafka logs every reconnect at INFO/ERROR; keep it at WARNING unless debugging.
    if level != "DEBUG":
        logging.getLogger("aiokafka").setLevel(logging.WARNING)
