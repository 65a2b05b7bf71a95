"""The loom's rules plugged into the ``cloudevents`` 2.x SDK's two extension points.

A ``Format`` (:class:`LoomFormat`: how ``data`` and the structured body are read and written)
and an event factory (:func:`make_event`: how attributes are validated, inventing nothing).
The rules themselves are described in :mod:`bridge.kafka.binding`, which uses them.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import datetime
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.exceptions import CloudEventValidationError
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from bridge.events import CORE_ATTRIBUTES
from bridge.events import parse_time as parse_rfc3339
from bridge.exceptions import DecodeError

REQUIRED = ("id", "source", "type")


class StrictEvent(CloudEvent):
    """The SDK's v1.0 event with its validation, minus the ``id``/``time`` it would invent."""

    # Sets the SDK's private fields as its own __init__ does (pinned: cloudevents>=2.2,<3).

    def __init__(
        self, attributes: dict[str, Any], data: dict[str, Any] | str | bytes | None = None
    ) -> None:
        self._validate_attribute(attributes=attributes)
        self._attributes = attributes
        self._data = data


def make_event(attributes: dict[str, Any], data: Any, time: datetime | None = None) -> BaseCloudEvent:
    # Checked here first so the common failures get a short message instead of the SDK's
    # aggregated validation report.
    spec = attributes.get("specversion")
    if spec is None:
        raise DecodeError("missing required attribute 'specversion'")
    if not isinstance(spec, str):
        raise DecodeError(f"attribute 'specversion' is not a string: {spec!r}")
    if spec != "1.0":
        raise DecodeError(f"specversion {spec!r} not supported (expected 1.0)")
    for name in REQUIRED:
        if name not in attributes:
            raise DecodeError(f"missing required attribute {name!r}")
    if time is not None:
        attributes["time"] = time
    try:
        return StrictEvent(attributes, data)
    except CloudEventValidationError as exc:
        raise DecodeError(validation_message(exc)) from None


def validation_message(exc: CloudEventValidationError) -> str:
    parts = [f"{name}: {errors[0]}" for name, errors in exc.errors.items() if errors]
    return "invalid attributes: " + "; ".join(parts)


def is_json(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media in ("application/json", "text/json") or media.endswith("+json")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise ValueError(f"duplicate member {name!r}")
            seen.add(name)
    return obj


# Built once: ``json.loads`` with keyword arguments builds a new decoder on every call.
_DATA_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_ENVELOPE_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_members, parse_constant=_reject_constant
)


def loads(text: str, *, envelope: bool) -> Any:
    return (_ENVELOPE_DECODER if envelope else _DATA_DECODER).decode(text)


# A JSON escape of a surrogate (``\ud800``-``\udfff``). Text decoded from UTF-8 bytes never
# holds a surrogate, so JSON escapes are the only way one gets in; a lone one (not half of a
# pair) makes a str that no UTF-8 encoder accepts: request ids, Temporal payloads and Kafka
# headers would all raise on it later, far from the record.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def check_unicode(text: str, value: Any, what: str) -> None:
    """Raise :class:`DecodeError` if ``value`` (parsed from the JSON ``text``) holds a string
    that cannot be encoded as UTF-8 (a lone surrogate); ``what`` names it ("data", or None for
    the structured envelope, whose members are attributes)."""
    if _SURROGATE_ESCAPE.search(text) is None:
        return  # the common case costs one scan of the text
    problem = _lone_surrogate(value, what)
    if problem is not None:
        raise DecodeError(f"{problem} is not valid Unicode (lone surrogate)")


def _lone_surrogate(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        return None if is_unicode(value) else path
    if isinstance(value, dict):
        for name, member in value.items():
            if not is_unicode(name):
                return f"{path} member name {name!a}"
            found = _lone_surrogate(member, f"{path}.{name}")
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _lone_surrogate(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def _envelope_surrogate(obj: dict[str, Any]) -> str | None:
    for name, value in obj.items():
        if not is_unicode(name):
            return f"extension name {name!a}"
        if name in ("data", "data_base64"):
            found = _lone_surrogate(value, name)
        elif name in CORE_ATTRIBUTES:
            found = None if _lone_surrogate(value, name) is None else f"attribute {name!r}"
        else:
            found = None if _lone_surrogate(value, name) is None else f"extension {name!r}"
        if found is not None:
            return found
    return None


def is_unicode(text: str) -> bool:
    """Whether ``text`` can be encoded as UTF-8 (holds no lone surrogate)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def dumps(value: Any) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except TypeError as exc:  # encode() has one failure type for its callers
        raise ValueError(f"data is not JSON-serializable: {exc}") from None


class LoomFormat(JSONFormat):
    """JSON event format with the loom's data rules (see the module docstring)."""

    def __init__(self, *, has_value: bool = True) -> None:
        # The SDK passes ``bytes`` to ``read_data`` even for a record without value; the
        # instance used for such records knows the value was absent.
        self._has_value = has_value

    def read_data(self, body: bytes, datacontenttype: str | None) -> Any:
        if not self._has_value:
            return None
        if datacontenttype is not None and not is_json(datacontenttype):
            return bytes(body)
        if not body:
            return None
        try:
            text = body.decode("utf-8")
            data = loads(text, envelope=False)
        except (ValueError, RecursionError) as exc:
            if datacontenttype is None:
                return bytes(body)  # undeclared and not JSON: opaque bytes
            raise DecodeError(
                f"data is not valid JSON (content-type {datacontenttype!r}): {short(exc)}"
            ) from None
        check_unicode(text, data, "data")
        return data

    def read(self, event_factory: Any, data: str | bytes) -> BaseCloudEvent:
        raw = data.encode("utf-8") if isinstance(data, str) else data
        if not raw:
            raise DecodeError("structured body is empty")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("structured body is not valid UTF-8") from None
        try:
            obj = loads(text, envelope=True)
        except (ValueError, RecursionError) as exc:
            raise DecodeError(f"structured body is not valid JSON: {short(exc)}") from None
        if not isinstance(obj, dict):
            raise DecodeError("structured body is not a JSON object")
        if _SURROGATE_ESCAPE.search(text) is not None:
            problem = _envelope_surrogate(obj)
            if problem is not None:
                raise DecodeError(f"{problem} is not valid Unicode (lone surrogate)")
        attributes = {name: value for name, value in obj.items() if value is not None}
        event_data = structured_data(attributes)
        for name, value in attributes.items():
            if name not in CORE_ATTRIBUTES and not isinstance(value, str | int):
                raise DecodeError(f"extension {name!r} has unsupported type {type(value).__name__}")
        time = attributes.get("time")
        if time is not None:
            if not isinstance(time, str):
                raise DecodeError("attribute 'time' is not a string")
            attributes["time"] = parse_time(time)
        return (event_factory or make_event)(attributes, event_data)

    def write_data(self, data: Any, datacontenttype: str | None) -> bytes:
        if data is None:
            return b""
        if isinstance(data, bytes | bytearray):
            return bytes(data)
        if datacontenttype is None or is_json(datacontenttype):
            return dumps(data).encode("utf-8")
        if isinstance(data, str):
            return data.encode("utf-8")
        raise ValueError(
            f"data of type {type(data).__name__} cannot be encoded as {datacontenttype!r}; "
            "pass bytes or str"
        )

    def write(self, event: BaseCloudEvent) -> bytes:
        body: dict[str, Any] = {}
        for name, value in event.get_attributes().items():
            body[name] = json_attribute(value)
        data = event.get_data()
        if isinstance(data, bytes | bytearray):
            body["data_base64"] = base64.b64encode(data).decode("ascii")
        elif data is not None:
            ctype = event.get_datacontenttype()
            if ctype is not None and not is_json(ctype) and not isinstance(data, str):
                raise ValueError(
                    f"data of type {type(data).__name__} cannot be encoded as {ctype!r}; "
                    "pass bytes or str"
                )
            body["data"] = data
        return dumps(body).encode("utf-8")


def structured_data(attributes: dict[str, Any]) -> Any:
    """Pop ``data``/``data_base64`` from a structured body and apply the data rules."""
    if "data" in attributes and "data_base64" in attributes:
        raise DecodeError("structured body has both 'data' and 'data_base64'")
    if "data_base64" in attributes:
        encoded = attributes.pop("data_base64")
        if not isinstance(encoded, str):
            raise DecodeError("'data_base64' is not a string")
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise DecodeError("'data_base64' is not valid base64") from None
    data = attributes.pop("data", None)
    ctype = attributes.get("datacontenttype")
    if isinstance(data, str) and isinstance(ctype, str) and not is_json(ctype):
        return data.encode("utf-8")
    return data


class LeapTime(datetime):
    """A leap second clamped to ``:59.999999``, carrying its text through the SDK's event.

    ``event_from_sdk`` turns it back into a plain ``datetime`` and ``Event.time_text``.
    """

    text: str


def parse_time(text: str) -> datetime:
    try:
        parsed, leap_text = parse_rfc3339(text)
    except ValueError as exc:
        raise DecodeError(f"attribute 'time' is not an RFC 3339 timestamp: {short(exc)}") from None
    if leap_text is None:
        return parsed
    p = parsed
    leap = LeapTime(p.year, p.month, p.day, p.hour, p.minute, p.second, p.microsecond, p.tzinfo)
    leap.text = leap_text
    return leap


def short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


FORMAT = LoomFormat()
FORMAT_NO_VALUE = LoomFormat(has_value=False)


def json_attribute(value: Any) -> Any:
    if isinstance(value, datetime):
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value
