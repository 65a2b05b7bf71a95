"""Points in time on the command line (``loom replay --from``, ``loom dlq redrive --since``).

A TIME is one of:

- ``now``;
- relative to now, in the past: ``-90s``, ``-15m``, ``-2h``, ``-1d``, ``-1w``, or combined
  (``-1h30m``);
- ISO-8601: ``2025-06-01T14:00:00Z``, ``2025-06-01T14:00+02:00``, ``2025-06-01 14:00``,
  ``2025-06-01`` (midnight). Without a UTC offset the time is the machine's local time.

Kafka timestamps are milliseconds since the epoch, so a TIME resolves to that. A DURATION
(``loom replay --lateness``) is ``0`` or the same units without the minus: ``90s``, ``5m``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

__all__ = ["TIME_HELP", "TimeFormatError", "format_ms", "parse_duration", "parse_time"]

TIME_HELP = "ISO-8601 (2025-06-01T14:00Z; local time without an offset), -2h / -30m / -1d12h, or now"

_UNITS = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
_RELATIVE = re.compile(r"-((?:\d+(?:\.\d+)?[wdhms])+)")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[wdhms])+")
_PART = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")


class TimeFormatError(ValueError):
    """A TIME that is none of the accepted forms."""


def parse_time(text: str, now: datetime | None = None) -> int:
    """Milliseconds since the epoch of ``text`` (see the module's forms).

    Args:
        text: The TIME as given.
        now: The reference of relative times and ``now`` (the current time when None): one
            command reads the clock once, so ``--from -2h --to -1h`` is one hour exactly.

    Raises:
        TimeFormatError: ``text`` is none of the accepted forms.
    """
    value = text.strip()
    reference = now or datetime.now(UTC)
    if value.lower() == "now":
        return _ms(reference)
    relative = _RELATIVE.fullmatch(value.lower())
    if relative:
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(relative.group(1)))
        return _ms(reference - timedelta(seconds=seconds))
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise TimeFormatError(
            f"{text!r} is not a time: use ISO-8601 (2025-06-01T14:00:00Z), a time ago "
            f"(-2h, -30m, -1d12h) or now"
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # the machine's local time
    return _ms(moment)


def parse_duration(text: str) -> int:
    """Milliseconds of a DURATION: ``0``, ``90s``, ``5m``, ``1h30m``...

    Raises:
        TimeFormatError: ``text`` is not a duration.
    """
    value = text.strip().lower()
    if value == "0":
        return 0
    if not _DURATION.fullmatch(value):
        raise TimeFormatError(f"{text!r} is not a duration: use 0, 90s, 5m, 1h30m, 1d")
    return round(sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(value)) * 1000)


def format_ms(ms: int) -> str:
    """A Kafka timestamp as ISO-8601 in UTC, to the second (``2025-06-01T12:00:00Z``)."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
