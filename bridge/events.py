"""The CloudEvent type used everywhere in the loom, and its form inside Temporal payloads.

``Event`` is a small immutable value: the four required CloudEvents attributes, the optional
ones, the extensions and the data. It converts to and from a JSON-able dict
(``to_payload`` / ``from_payload``), which is what routed signals and updates carry into
workflows. The payload form follows the CloudEvents JSON format: attributes at the top level,
``data`` for JSON data and ``data_base64`` for bytes. (The ``cloudevents`` SDK's event and
the Kafka wire format belong to :mod:`bridge.kafka.binding`.)

This module is imported inside Temporal's workflow sandbox: keep it free of I/O and
non-deterministic calls.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

REQUIRED_ATTRIBUTES = ("id", "source", "type", "specversion")
OPTIONAL_ATTRIBUTES = ("datacontenttype", "dataschema", "subject", "time")
CORE_ATTRIBUTES = frozenset(REQUIRED_ATTRIBUTES + OPTIONAL_ATTRIBUTES)

#: Extension naming the Kafka key of an event (CloudEvents Kafka binding, partitioning ext.).
PARTITION_KEY = "partitionkey"
#: CloudEvents correlation extension: groups the events of one business flow. An event a
#: workflow emits carries the ``correlationid`` of the event it was handling, else the
#: workflow id.
CORRELATION_ID = "correlationid"
#: CloudEvents correlation extension: the id of the event that caused this one (the event a
#: workflow was handling when it emitted, or the request a reply answers).
CAUSATION_ID = "causationid"
#: Deprecated (read and written for one minor release): the loom's own extension naming the
#: workflow that emitted a command and awaits replies (request-reply). Use ``correlationid``.
CORRELATION = "loomcorrelation"
#: Deprecated (read and written for one minor release): the loom's own extension of a reply
#: naming the id of the command (or request) it answers. Use ``causationid``.
CAUSATION = "loomcausation"
#: The longest ``correlationid``/``causationid`` taken for linking, in UTF-8 bytes.
MAX_LINK_BYTES = 1024
#: W3C trace context extensions (CloudEvents distributed tracing extension).
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

#: Default signal name of routed events; the workflow-side inbox listens on it.
EVENT_SIGNAL = "loom_event"
#: Signal of coalesced events: one call carrying the payloads of several events for one
#: workflow, in partition order (a list of ``Event.to_payload()``); ``LoomWorkflow``'s inbox
#: takes each as if it came by ``EVENT_SIGNAL``.
EVENTS_SIGNAL = "loom_events"
#: Default update name of routed events (update-with-start routes).
EVENT_UPDATE = "loom_event_update"
#: Query of ``LoomWorkflow``: did the event (source, id) reach this workflow? Answered by a
#: closed workflow too (replayed on a worker): a redelivery, or a late event.
EVENT_SEEN_QUERY = "loom_seen"
#: Query of ``LoomWorkflow``: the digests of every identity it remembers (what the sidecar
#: asks a closed run once, then answers all of that run's redelivered events from).
EVENT_SEEN_DIGESTS_QUERY = "loom_seen_digests"


#: An RFC 3339 leap second: ``23:59:60`` (any fraction), which ``datetime`` cannot hold.
_LEAP_SECOND = re.compile(r"(\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:)60(?:\.\d+)?([Zz]|[+-]\d\d:\d\d)")


def parse_time(text: str) -> tuple[datetime, str | None]:
    """Parse the ``time`` attribute (RFC 3339).

    A leap second (``2016-12-31T23:59:60Z``), valid RFC 3339 that ``datetime`` cannot hold,
    is clamped to ``23:59:59.999999``: it still sorts after every earlier instant.

    Returns:
        The time, and the original text when it was clamped (None otherwise).

    Raises:
        ValueError: The text is not a timestamp.
    """
    try:
        return datetime.fromisoformat(text), None
    except ValueError:
        leap = _LEAP_SECOND.fullmatch(text)
        if leap is None:
            raise
    return datetime.fromisoformat(f"{leap[1]}59.999999{leap[2]}"), text


def link_value(value: Any) -> str | None:
    """A ``correlationid``/``causationid`` fit for linking, or None when malformed.

    Malformed: absent, not a string, empty, or over :data:`MAX_LINK_BYTES` in UTF-8. A
    malformed value is ignored for linking; the event itself goes on as usual.
    """
    if not isinstance(value, str) or not value:
        return None
    # Cheap first: a string of at most MAX_LINK_BYTES/4 characters cannot be over the bound.
    if len(value) > MAX_LINK_BYTES // 4 and len(value.encode("utf-8", "surrogatepass")) > MAX_LINK_BYTES:
        return None
    return value


def event_key(source: str, id: str) -> str:
    """Identity of an event for deduplication: ``source`` and ``id``."""
    return f"{source}\x1f{id}"


@dataclass(frozen=True, slots=True)
class Event:
    """A CloudEvent (spec 1.0).

    Attributes:
        id: Identifies the event; ``(source, id)`` is unique per distinct event.
        source: Identifies the context in which the event happened (URI-reference).
        type: The event type, e.g. ``order.placed``.
        data: JSON value (dict, list, str, number, bool, None) or ``bytes``.
        subject: The subject of the event in the context of the source.
        time: When the event happened.
        datacontenttype: Media type of ``data`` (``application/json`` when omitted for JSON).
        dataschema: URI of the schema ``data`` adheres to.
        extensions: Extension attributes (lower-case alphanumeric names).
        specversion: Always ``"1.0"``.
        time_text: The ``time`` attribute as written, when ``time`` could not hold it
            exactly: a leap second (``...T23:59:60Z``), which ``time`` holds as
            ``23:59:59.999999``. The payload form carries this text. None otherwise.
    """

    id: str
    source: str
    type: str
    data: Any = None
    subject: str | None = None
    time: datetime | None = None
    datacontenttype: str | None = None
    dataschema: str | None = None
    extensions: Mapping[str, Any] = field(default_factory=dict)
    specversion: str = "1.0"
    time_text: str | None = None

    @property
    def key(self) -> str:
        """Identity of the event for deduplication: ``source`` and ``id``."""
        return event_key(self.source, self.id)

    @property
    def correlation(self) -> str | None:
        """The event's correlation: ``correlationid``, else the deprecated ``loomcorrelation``
        (None when neither is fit for linking, see :func:`link_value`)."""
        ext = self.extensions
        return link_value(ext.get(CORRELATION_ID)) or link_value(ext.get(CORRELATION))

    @property
    def causation(self) -> str | None:
        """The id of the event's cause: ``causationid``, else the deprecated ``loomcausation``
        (None when neither is fit for linking)."""
        ext = self.extensions
        return link_value(ext.get(CAUSATION_ID)) or link_value(ext.get(CAUSATION))

    @property
    def partitionkey(self) -> str | None:
        """The ``partitionkey`` extension (Kafka key), if any."""
        value = self.extensions.get(PARTITION_KEY)
        return None if value is None else str(value)

    def attribute(self, name: str) -> Any:
        """Return a core or extension attribute by its CloudEvents name (None when absent)."""
        if name in CORE_ATTRIBUTES:
            return getattr(self, name)
        return self.extensions.get(name)

    def attributes(self) -> dict[str, Any]:
        """All attributes that are set (core and extensions), without ``data``."""
        attrs: dict[str, Any] = {}
        for name in REQUIRED_ATTRIBUTES + OPTIONAL_ATTRIBUTES:
            value = getattr(self, name)
            if value is not None:
                attrs[name] = value
        attrs.update(self.extensions)
        return attrs

    # --- payload form (inside Temporal) ------------------------------------------------------

    def to_payload(self) -> dict[str, Any]:
        """JSON-able dict in CloudEvents JSON format, carried by routed signals and updates."""
        out: dict[str, Any] = {}
        for name, value in self.attributes().items():
            out[name] = value.isoformat() if isinstance(value, datetime) else value
        if self.time_text is not None and self.time is not None:
            out["time"] = self.time_text
        if isinstance(self.data, bytes | bytearray):
            out["data_base64"] = base64.b64encode(bytes(self.data)).decode("ascii")
        elif self.data is not None:
            out["data"] = self.data
        return out

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Event:
        """Inverse of :meth:`to_payload`."""
        values = dict(payload)
        data: Any = values.pop("data", None)
        if "data_base64" in values:
            data = base64.b64decode(values.pop("data_base64"))
        time = values.pop("time", None)
        time_text = None
        if isinstance(time, str):
            time, time_text = parse_time(time)
        core = {name: values.pop(name) for name in list(values) if name in CORE_ATTRIBUTES}
        return cls(
            id=str(core.pop("id")),
            source=str(core.pop("source")),
            type=str(core.pop("type")),
            specversion=str(core.pop("specversion", "1.0")),
            data=data,
            time=time,
            subject=core.get("subject"),
            datacontenttype=core.get("datacontenttype"),
            dataschema=core.get("dataschema"),
            extensions=values,
            time_text=time_text,
        )
