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
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from cloudevents.core.bindings import kafka as sdk_kafka
from cloudevents.core.exceptions import CloudEventValidationError

from bridge.events import CORE_ATTRIBUTES, Event
from bridge.exceptions import DecodeError
from bridge.kafka._format import (
    FORMAT,
    FORMAT_NO_VALUE,
    LeapTime,
    StrictEvent,
    is_unicode,
    json_attribute,
    make_event,
    parse_time,
    short,
    validation_message,
)
from bridge.kafka.record import Record

__all__ = ["STRUCTURED_CONTENT_TYPE", "decode", "encode", "event_from_sdk", "event_to_sdk"]

#: Content type of structured-mode records written by :func:`encode`.
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"

_CE_PREFIX = "ce_"
_CONTENT_TYPE = "content-type"
_CE_DATACONTENTTYPE = "ce_datacontenttype"
_CE_TIME = "ce_time"
_PREFIX_LEN = len(_CE_PREFIX)
_DATACONTENTTYPE = "datacontenttype"
_CORE_ORDER = tuple(CORE_ATTRIBUTES)
_UTF8_CHARSETS = frozenset({"utf-8", "utf8"})


# --- the cloudevents SDK's event -----------------------------------------------------------


def event_to_sdk(event: Event) -> Any:
    """The ``cloudevents`` SDK (2.x) ``CloudEvent`` with the same attributes and data.

    Unlike the SDK's constructor, no ``time`` is invented when the event has none.
    """
    return StrictEvent(event.attributes(), event.data)


def event_from_sdk(event: Any) -> Event:
    """Build an :class:`~bridge.events.Event` from a ``cloudevents`` SDK (2.x) ``CloudEvent``."""
    attrs = dict(event.get_attributes())
    return _event(attrs, event.get_data(), attrs.pop("time", None))


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
            if not is_unicode(name):
                # aiokafka hands names over as str; one that holds a surrogate (built by other
                # means) would become an attribute name no UTF-8 encoder accepts.
                raise DecodeError(f"header name {name!a} is not valid UTF-8")
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
        event = sdk_kafka.from_structured(message, FORMAT, make_event)
        return event_from_sdk(event)
    except DecodeError:
        raise
    except Exception as exc:  # the SDK's failure modes are not documented: never let one out
        raise DecodeError(f"undecodable structured record: {short(exc)}") from exc


def _decode_binary(
    record: Record, ce_headers: dict[str, bytes], content_type: bytes | None
) -> Event:
    # The SDK's ``from_binary`` (cloudevents.core.bindings.kafka), step for step, without its
    # per-record ``KafkaMessage``, its second pass over the header names, its dateutil parse
    # of ``time`` (~6 us, where ``datetime.fromisoformat`` takes well under 1), and the copy of
    # the attributes back out of its event: the attributes are validated by the SDK's own
    # rules all the same (``make_event``). tests/test_kafka_binding.py runs the SDK's binding
    # against this on generated records: same event, or both refuse.
    time_header = ce_headers.pop(_CE_TIME, None)
    time = None
    if time_header is not None:
        try:
            text = time_header.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError(f"header {_CE_TIME!r} is not valid UTF-8") from None
        time = parse_time(text)
    attributes: dict[str, Any] = {}
    try:
        for name, raw in ce_headers.items():  # names lowercased by decode()
            attributes[name[_PREFIX_LEN:]] = raw.decode("utf-8")
        if content_type is not None:
            attributes[_DATACONTENTTYPE] = content_type.decode("utf-8")
        fmt = FORMAT if record.value is not None else FORMAT_NO_VALUE
        data = fmt.read_data(record.value or b"", attributes.get(_DATACONTENTTYPE))
        make_event(attributes, data, time)  # validates; the key never fills partitionkey (3.1)
        return _event(attributes, data, time)
    except DecodeError:
        raise
    except UnicodeDecodeError:
        bad = next(n for n, v in ce_headers.items() if not _is_utf8(v))
        raise DecodeError(f"header {bad!r} is not valid UTF-8") from None
    except Exception as exc:  # never let an unforeseen failure out: the record is bad input
        raise DecodeError(f"undecodable binary record: {short(exc)}") from exc


def _plain_time(time: Any) -> tuple[datetime | None, str | None]:
    """A plain ``datetime`` and, for a clamped leap second, its original text."""
    if isinstance(time, LeapTime):
        return datetime.combine(time.date(), time.timetz()), time.text
    return time, None


def _event(attributes: dict[str, Any], data: Any, time: datetime | None) -> Event:
    """The event of attributes the SDK's rules accepted (the dict is taken, not copied)."""
    core = {name: attributes.pop(name) for name in _CORE_ORDER if name in attributes}
    time, time_text = _plain_time(time)
    return Event(
        id=str(core["id"]),
        source=str(core["source"]),
        type=str(core["type"]),
        specversion=str(core.get("specversion", "1.0")),
        data=data,
        subject=core.get("subject"),
        time=time,
        datacontenttype=core.get("datacontenttype"),
        dataschema=core.get("dataschema"),
        extensions=attributes,
        time_text=time_text,
    )


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
        sdk_event = StrictEvent(attributes, event.data)
    except CloudEventValidationError as exc:
        raise ValueError(validation_message(exc)) from None
    if mode == "binary":
        message = sdk_kafka.to_binary(sdk_event, FORMAT)
        value: bytes | None = None if event.data is None else message.value
    elif mode == "structured":
        message = sdk_kafka.to_structured(sdk_event, FORMAT)
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
        attributes[name] = _header_text(value) if binary else json_attribute(value)
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
