"""CloudEvents Kafka protocol binding (spec 1.0.2) on top of the ``cloudevents`` 2.x SDK.

``decode`` turns a consumed Kafka ``Record`` into an ``Event``; ``encode`` turns an ``Event``
into the key, value and headers of a Kafka record. Both go through the SDK's Kafka binding
(``cloudevents.core.bindings.kafka``) and plug the loom's rules into its two extension
points: a ``Format`` (how ``data`` and the structured body are read and written) and an event
factory (how attributes are validated).

Decisions (the binding spec leaves them open or the SDK differs from it):

* **Mode.** A ``content-type`` starting with ``application/cloudevents`` (any case) means
  structured mode (spec 3); only ``application/cloudevents+json`` is supported. Otherwise any
  ``ce_`` header means binary mode. A record with neither ``ce_`` headers nor ``content-type``
  is read as structured JSON (spec 3.3.1 makes the header optional in structured mode).
* **Headers.** Names are matched case-insensitively; a repeated ``ce_*`` or ``content-type``
  header (or ``ce_datacontenttype`` next to ``content-type``) is an error, since which one
  wins would be arbitrary. Headers that are not CloudEvents headers are ignored, whatever
  their bytes.
* **Data, binary mode.** A JSON ``content-type`` (``application/json``, ``text/json``,
  ``*/*+json``, any parameters) means ``data`` is the parsed JSON value and must be valid
  JSON (an empty value is no data). Without ``content-type``, a value that parses as JSON is
  JSON data (the JSON format's default) and anything else is kept as ``bytes``. Any other
  content type keeps the value as ``bytes``. A record without value (``None``) is an event
  without data (spec 3.2.2); without CloudEvents headers it is a tombstone and an error.
* **Data, structured mode.** ``data`` is the JSON member as it is, ``data_base64`` gives
  ``bytes``; with a non-JSON ``datacontenttype`` a string ``data`` becomes its UTF-8 bytes, so
  text payloads arrive as ``bytes`` in both modes. Attributes whose value is ``null`` are
  treated as absent. Duplicate object members are an error (``id``/``source`` must not be
  ambiguous). ``NaN``/``Infinity`` are not JSON and are refused in both directions.
* **Key.** The Kafka key never fills ``partitionkey``: the spec (3.1) forbids a key mapping
  from adding attributes, so a decoded event carries exactly the attributes of the record.
  ``encode`` sets the key from ``partitionkey`` (UTF-8), which stays in the event as well.
* **No invented attributes.** The SDK's ``CloudEvent`` invents ``id`` and ``time`` when they
  are absent; the loom's factory validates with the SDK's rules but invents nothing.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Literal

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import kafka as sdk_kafka
from cloudevents.core.exceptions import CloudEventValidationError
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from bridge.events import CORE_ATTRIBUTES, Event
from bridge.exceptions import DecodeError

__all__ = ["STRUCTURED_CONTENT_TYPE", "Record", "decode", "encode"]

#: Content type of structured-mode records written by :func:`encode`.
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"

_CE_PREFIX = "ce_"
_CONTENT_TYPE = "content-type"
_CE_DATACONTENTTYPE = "ce_datacontenttype"
_CE_TIME = "ce_time"
_UTF8_CHARSETS = frozenset({"utf-8", "utf8"})
_REQUIRED = ("id", "source", "type")


@dataclass(frozen=True, slots=True)
class Record:
    """A consumed Kafka record, as the consumer, the decoder and the dead-letter writer see it.

    Attributes:
        topic: Topic the record was read from.
        partition: Partition of the record.
        offset: Offset of the record in its partition.
        key: Raw key bytes, or None.
        value: Raw value bytes, or None (a tombstone, or a binary-mode event without data).
        headers: Headers in wire order; names may repeat.
        timestamp: Record timestamp in milliseconds since the epoch, if known.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp: int | None = None

    @classmethod
    def from_aiokafka(cls, rec: Any) -> Record:
        """Build from an aiokafka ``ConsumerRecord`` read without key/value deserializers.

        A header whose value is null on the wire becomes ``b""``.
        """
        return cls(
            topic=rec.topic,
            partition=rec.partition,
            offset=rec.offset,
            key=None if rec.key is None else bytes(rec.key),
            value=None if rec.value is None else bytes(rec.value),
            headers=tuple((name, b"" if val is None else bytes(val)) for name, val in rec.headers),
            timestamp=rec.timestamp,
        )


# --- the SDK's extension points ------------------------------------------------------------


class _Strict(CloudEvent):
    """The SDK's v1.0 event with its validation, minus the ``id``/``time`` it would invent."""

    # Sets the SDK's private fields as its own __init__ does (pinned: cloudevents>=2.2,<3).

    def __init__(
        self, attributes: dict[str, Any], data: dict[str, Any] | str | bytes | None = None
    ) -> None:
        self._validate_attribute(attributes=attributes)
        self._attributes = attributes
        self._data = data


def sdk_event(attributes: dict[str, Any], data: Any) -> BaseCloudEvent:
    """The SDK's v1.0 ``CloudEvent`` with exactly these attributes (validated by the SDK)."""
    return _Strict(dict(attributes), data)


def _factory(attributes: dict[str, Any], data: Any, time: datetime | None = None) -> BaseCloudEvent:
    # Checked here first so the common failures get a short message instead of the SDK's
    # aggregated validation report.
    spec = attributes.get("specversion")
    if spec is None:
        raise DecodeError("missing required attribute 'specversion'")
    if not isinstance(spec, str):
        raise DecodeError(f"attribute 'specversion' is not a string: {spec!r}")
    if spec != "1.0":
        raise DecodeError(f"specversion {spec!r} not supported (expected 1.0)")
    for name in _REQUIRED:
        if name not in attributes:
            raise DecodeError(f"missing required attribute {name!r}")
    if time is not None:
        attributes["time"] = time
    try:
        return _Strict(attributes, data)
    except CloudEventValidationError as exc:
        raise DecodeError(_validation_message(exc)) from None


def _validation_message(exc: CloudEventValidationError) -> str:
    parts = [f"{name}: {errors[0]}" for name, errors in exc.errors.items() if errors]
    return "invalid attributes: " + "; ".join(parts)


def _is_json(content_type: str) -> bool:
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


def _loads(text: str, *, envelope: bool) -> Any:
    return (_ENVELOPE_DECODER if envelope else _DATA_DECODER).decode(text)


def _dumps(value: Any) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except TypeError as exc:  # encode() has one failure type for its callers
        raise ValueError(f"data is not JSON-serializable: {exc}") from None


class _LoomFormat(JSONFormat):
    """JSON event format with the loom's data rules (see the module docstring)."""

    def __init__(self, *, has_value: bool = True) -> None:
        # The SDK passes ``bytes`` to ``read_data`` even for a record without value; the
        # instance used for such records knows the value was absent.
        self._has_value = has_value

    def read_data(self, body: bytes, datacontenttype: str | None) -> Any:
        if not self._has_value:
            return None
        if datacontenttype is not None and not _is_json(datacontenttype):
            return bytes(body)
        if not body:
            return None
        try:
            return _loads(body.decode("utf-8"), envelope=False)
        except (ValueError, RecursionError) as exc:
            if datacontenttype is None:
                return bytes(body)  # undeclared and not JSON: opaque bytes
            raise DecodeError(
                f"data is not valid JSON (content-type {datacontenttype!r}): {_short(exc)}"
            ) from None

    def read(self, event_factory: Any, data: str | bytes) -> BaseCloudEvent:
        raw = data.encode("utf-8") if isinstance(data, str) else data
        if not raw:
            raise DecodeError("structured body is empty")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("structured body is not valid UTF-8") from None
        try:
            obj = _loads(text, envelope=True)
        except (ValueError, RecursionError) as exc:
            raise DecodeError(f"structured body is not valid JSON: {_short(exc)}") from None
        if not isinstance(obj, dict):
            raise DecodeError("structured body is not a JSON object")
        attributes = {name: value for name, value in obj.items() if value is not None}
        event_data = _structured_data(attributes)
        for name, value in attributes.items():
            if name not in CORE_ATTRIBUTES and not isinstance(value, str | int):
                raise DecodeError(f"extension {name!r} has unsupported type {type(value).__name__}")
        time = attributes.get("time")
        if time is not None:
            if not isinstance(time, str):
                raise DecodeError("attribute 'time' is not a string")
            attributes["time"] = _parse_time(time)
        return (event_factory or _factory)(attributes, event_data)

    def write_data(self, data: Any, datacontenttype: str | None) -> bytes:
        if data is None:
            return b""
        if isinstance(data, bytes | bytearray):
            return bytes(data)
        if datacontenttype is None or _is_json(datacontenttype):
            return _dumps(data).encode("utf-8")
        if isinstance(data, str):
            return data.encode("utf-8")
        raise ValueError(
            f"data of type {type(data).__name__} cannot be encoded as {datacontenttype!r}; "
            "pass bytes or str"
        )

    def write(self, event: BaseCloudEvent) -> bytes:
        body: dict[str, Any] = {}
        for name, value in event.get_attributes().items():
            body[name] = _json_attribute(value)
        data = event.get_data()
        if isinstance(data, bytes | bytearray):
            body["data_base64"] = base64.b64encode(data).decode("ascii")
        elif data is not None:
            ctype = event.get_datacontenttype()
            if ctype is not None and not _is_json(ctype) and not isinstance(data, str):
                raise ValueError(
                    f"data of type {type(data).__name__} cannot be encoded as {ctype!r}; "
                    "pass bytes or str"
                )
            body["data"] = data
        return _dumps(body).encode("utf-8")


def _structured_data(attributes: dict[str, Any]) -> Any:
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
    if isinstance(data, str) and isinstance(ctype, str) and not _is_json(ctype):
        return data.encode("utf-8")
    return data


def _parse_time(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise DecodeError(f"attribute 'time' is not an RFC 3339 timestamp: {_short(exc)}") from None
    return parsed


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


_FORMAT = _LoomFormat()
_FORMAT_NO_VALUE = _LoomFormat(has_value=False)


# --- decode ----------------------------------------------------------------------------------


def decode(record: Record) -> Event:
    """Decode a Kafka record into an ``Event`` (binary or structured content mode).

    Args:
        record: The consumed record; headers, key and value are read, nothing is modified.

    Returns:
        The event, carrying exactly the attributes present in the record.

    Raises:
        DecodeError: The record is not a valid CloudEvent; the message names the reason.
    """
    ce_headers: dict[str, bytes] = {}
    content_type: bytes | None = None
    for name, value in record.headers:
        lname = name.lower()
        if lname.startswith(_CE_PREFIX):
            if lname in ce_headers:
                raise DecodeError(f"duplicate header {name!r}")
            ce_headers[lname] = value
        elif lname == _CONTENT_TYPE:
            if content_type is not None:
                raise DecodeError(f"duplicate header {name!r}")
            content_type = value
    if content_type is not None and _CE_DATACONTENTTYPE in ce_headers:
        raise DecodeError("duplicate header 'ce_datacontenttype' (content-type is also set)")

    ctype: str | None = None
    if content_type is not None:
        try:
            ctype = content_type.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("header 'content-type' is not valid UTF-8") from None

    if ctype is not None and _is_structured_type(ctype):
        _check_structured_content_type(ctype)
        return _decode_structured(record)
    if ce_headers:
        return _decode_binary(record, ce_headers, content_type)
    if ctype is None:
        if not record.value and not record.headers:
            raise DecodeError("empty record")
        if record.value is None:
            raise DecodeError("tombstone record (no value and no CloudEvents headers)")
        return _decode_structured(record)
    raise DecodeError(
        f"not a CloudEvent: no 'ce_' headers and content-type {ctype!r} is not "
        "application/cloudevents+json"
    )


def _is_structured_type(content_type: str) -> bool:
    return content_type.lstrip().lower().startswith("application/cloudevents")


def _check_structured_content_type(ctype: str) -> None:
    media, _, params = ctype.partition(";")
    if media.strip().lower() != "application/cloudevents+json":
        raise DecodeError(f"unsupported event format {media.strip()!r}")
    for param in params.split(";"):
        pname, _, pvalue = param.partition("=")
        if pname.strip().lower() == "charset":
            charset = pvalue.strip().strip('"').lower()
            if charset not in _UTF8_CHARSETS:
                raise DecodeError(f"charset {charset!r} not supported (expected utf-8)")


def _decode_structured(record: Record) -> Event:
    if record.value is None:
        raise DecodeError("tombstone record (no value) with a structured content-type")
    message = sdk_kafka.KafkaMessage(headers={}, key=None, value=record.value)
    try:
        event = sdk_kafka.from_structured(message, _FORMAT, _factory)
        return Event.from_sdk(event)
    except DecodeError:
        raise
    except Exception as exc:  # the SDK's failure modes are not documented: never let one out
        raise DecodeError(f"undecodable structured record: {_short(exc)}") from exc


def _decode_binary(
    record: Record, ce_headers: dict[str, bytes], content_type: bytes | None
) -> Event:
    if content_type is not None:
        ce_headers[_CONTENT_TYPE] = content_type
    # ``time`` is parsed here, not by the SDK: its dateutil parser costs ~6 us per event, about
    # 40% of the whole decode, where ``datetime.fromisoformat`` takes well under 1 us.
    time_header = ce_headers.pop(_CE_TIME, None)
    factory = _factory
    if time_header is not None:
        try:
            text = time_header.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError(f"header {_CE_TIME!r} is not valid UTF-8") from None
        factory = partial(_factory, time=_parse_time(text))
    # The key is not handed to the SDK: it would overwrite ``partitionkey`` with it (3.1).
    message = sdk_kafka.KafkaMessage(headers=ce_headers, key=None, value=record.value or b"")
    fmt = _FORMAT if record.value is not None else _FORMAT_NO_VALUE
    try:
        return Event.from_sdk(sdk_kafka.from_binary(message, fmt, factory))
    except DecodeError:
        raise
    except UnicodeDecodeError:
        # Found again here rather than checked up front: the SDK decodes every header anyway.
        bad = next(n for n, v in ce_headers.items() if not _is_utf8(v))
        raise DecodeError(f"header {bad!r} is not valid UTF-8") from None
    except Exception as exc:  # the SDK's failure modes are not documented: never let one out
        raise DecodeError(f"undecodable binary record: {_short(exc)}") from exc


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# --- encode ----------------------------------------------------------------------------------


def encode(
    event: Event, mode: Literal["binary", "structured"] = "binary"
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """Encode an event as the key, value and headers of a Kafka record.

    In binary mode an event without data has no value (spec 3.2.2); ``bytes`` data is the
    value as is, other data is JSON unless ``datacontenttype`` is not JSON, in which case
    ``str`` data is written as UTF-8 (and decodes as ``bytes``). Extension values travel as
    strings in binary mode (booleans as ``true``/``false``) and as JSON values in structured
    mode.

    Args:
        event: The event to encode.
        mode: ``"binary"`` (attributes in ``ce_`` headers) or ``"structured"`` (JSON body).

    Returns:
        ``(key, value, headers)``; the key is the ``partitionkey`` extension (UTF-8) or None.

    Raises:
        ValueError: The event is invalid (per the SDK's validation, naive ``time``) or its
            data cannot be represented under its ``datacontenttype``.
    """
    if (
        mode == "binary"
        and event.datacontenttype is not None
        and _is_structured_type(event.datacontenttype)
    ):
        # A receiver would take the record for a structured one (spec 3).
        raise ValueError(f"datacontenttype {event.datacontenttype!r} cannot be sent in binary mode")
    attributes = _wire_attributes(event, binary=mode == "binary")
    try:
        sdk_event = _Strict(attributes, event.data)
    except CloudEventValidationError as exc:
        raise ValueError(_validation_message(exc)) from None
    if mode == "binary":
        message = sdk_kafka.to_binary(sdk_event, _FORMAT)
        value: bytes | None = None if event.data is None else message.value
    elif mode == "structured":
        message = sdk_kafka.to_structured(sdk_event, _FORMAT)
        message.headers[_CONTENT_TYPE] = STRUCTURED_CONTENT_TYPE.encode("ascii")
        value = message.value
    else:
        raise ValueError(f"unknown mode {mode!r} (expected 'binary' or 'structured')")
    key = message.key.encode("utf-8") if isinstance(message.key, str) else message.key
    return key, value, list(message.headers.items())


def _wire_attributes(event: Event, *, binary: bool) -> dict[str, Any]:
    if event.time is not None and event.time.tzinfo is None:
        raise ValueError("attribute 'time' must be timezone-aware")
    attributes = {name: value for name, value in event.attributes().items() if value is not None}
    for name, value in _extensions(event.extensions):
        attributes[name] = _header_text(value) if binary else _json_attribute(value)
    return attributes


def _extensions(extensions: Mapping[str, Any]) -> list[tuple[str, Any]]:
    out = []
    for name, value in extensions.items():
        if value is None:
            continue  # an absent attribute, as in the JSON format
        if not isinstance(value, str | int | bytes | datetime):
            # ValueError, not TypeError: encode() has one failure type for its callers.
            raise ValueError(  # noqa: TRY004
                f"extension {name!r} has unsupported type {type(value).__name__}"
            )
        out.append((name, value))
    return out


def _header_text(value: Any) -> Any:
    # CloudEvents canonical string forms (spec 1.0, type system).
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


def _json_attribute(value: Any) -> Any:
    if isinstance(value, datetime):
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value
