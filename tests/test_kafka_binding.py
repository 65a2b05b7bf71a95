"""Tests for bridge.kafka.binding: spec examples, error messages, round trips, fuzzing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from typing import Any, Literal

import pytest
from aiokafka.structs import ConsumerRecord
from cloudevents.core.bindings import kafka as sdk_kafka
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bridge._ids import reply_id, request_id, update_id
from bridge.events import CORE_ATTRIBUTES, Event
from bridge.exceptions import DecodeError
from bridge.kafka._format import FORMAT, FORMAT_NO_VALUE, make_event, parse_time
from bridge.kafka.binding import STRUCTURED_CONTENT_TYPE, decode, encode, event_from_sdk
from bridge.kafka.deadletters import deadletter_headers
from bridge.kafka.record import Record

Headers = list[tuple[str, bytes]]

BASE: Headers = [
    ("ce_specversion", b"1.0"),
    ("ce_type", b"com.example.someevent"),
    ("ce_source", b"/mycontext/subcontext"),
    ("ce_id", b"1234-1234-1234"),
]
STRUCTURED: Headers = [("content-type", b"application/cloudevents+json")]


def rec(
    headers: Headers, value: bytes | None = b"{}", key: bytes | None = None, offset: int = 7
) -> Record:
    return Record(
        topic="mytopic", partition=0, offset=offset, key=key, value=value, headers=tuple(headers)
    )


def body(**members: Any) -> bytes:
    base: dict[str, Any] = {"specversion": "1.0", "type": "t", "source": "/s", "id": "1"}
    base.update(members)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


def decode_error(record: Record) -> str:
    with pytest.raises(DecodeError) as info:
        decode(record)
    return str(info.value)


# --- the binding spec's examples (kafka-protocol-binding.md 3.2.5 and 3.3.4) ----------------


def test_spec_binary_example() -> None:
    avro = b"\x02\x06foo\x00\xff"
    record = rec(
        [*BASE, ("ce_time", b"2018-04-05T03:56:24Z"), ("content-type", b"application/avro")],
        value=avro,
        key=b"mykey",
    )
    assert decode(record) == Event(
        id="1234-1234-1234",
        source="/mycontext/subcontext",
        type="com.example.someevent",
        time=datetime(2018, 4, 5, 3, 56, 24, tzinfo=UTC),
        datacontenttype="application/avro",
        data=avro,
    )


def test_spec_structured_example() -> None:
    value = json.dumps(
        {
            "specversion": "1.0",
            "type": "com.example.someevent",
            "source": "/mycontext/subcontext",
            "id": "1234-1234-1234",
            "time": "2018-04-05T03:56:24Z",
            "datacontenttype": "application/xml",
            "comexampleextension1": "value",
            "data": '<much wow="xml"/>',
        }
    ).encode()
    record = rec(
        [("content-type", b"application/cloudevents+json; charset=UTF-8")], value, key=b"mykey"
    )
    assert decode(record) == Event(
        id="1234-1234-1234",
        source="/mycontext/subcontext",
        type="com.example.someevent",
        time=datetime(2018, 4, 5, 3, 56, 24, tzinfo=UTC),
        datacontenttype="application/xml",
        extensions={"comexampleextension1": "value"},
        data=b'<much wow="xml"/>',  # non-JSON data arrives as bytes in both modes
    )


# --- decode: data rules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ctype", ["application/json", "application/json; charset=utf-8", "text/json", "A/B+JSON"]
)
def test_binary_json_content_types_parse_data(ctype: str) -> None:
    event = decode(rec([*BASE, ("content-type", ctype.encode())], b'{"a": [1, 2.5, null]}'))
    assert event.data == {"a": [1, 2.5, None]}
    assert event.datacontenttype == ctype


def test_binary_text_content_type_keeps_bytes() -> None:
    event = decode(rec([*BASE, ("content-type", b"text/plain")], b'{"a": 1}'))
    assert event.data == b'{"a": 1}'


def test_binary_without_content_type_parses_json_else_keeps_bytes() -> None:
    assert decode(rec(BASE, b'{"a": 1}')).data == {"a": 1}
    assert decode(rec(BASE, b"\xff\x00 not json")).data == b"\xff\x00 not json"
    assert decode(rec(BASE, b"")).data is None
    assert decode(rec(BASE, b"")).datacontenttype is None


def test_binary_without_value_is_an_event_without_data() -> None:
    # Spec 3.2.2: binary mode represents "no data" as a record without value.
    event = decode(rec([*BASE, ("content-type", b"text/plain")], value=None))
    assert event.data is None
    assert event.datacontenttype == "text/plain"


def test_binary_declared_json_must_be_valid() -> None:
    message = decode_error(rec([*BASE, ("content-type", b"application/json")], b'{"a": 1'))
    assert message.startswith("data is not valid JSON (content-type 'application/json')")


def test_structured_base64_data() -> None:
    event = decode(rec(STRUCTURED, body(data_base64="AAEC")))
    assert event.data == b"\x00\x01\x02"


def test_structured_null_attributes_are_absent() -> None:
    event = decode(rec(STRUCTURED, body(subject=None, time=None, ext=None)))
    assert event.subject is None
    assert event.time is None
    assert event.extensions == {}


def test_structured_without_content_type_header() -> None:
    # Spec 3.3.1: the content-type header is optional in structured mode.
    event = decode(rec([("traceparent", b"\xff\xfe")], body(data={"x": 1}, comexample=3)))
    assert event.data == {"x": 1}
    assert event.extensions == {"comexample": 3}


def test_structured_wins_over_ce_headers() -> None:
    # Spec 3.3.3: structured records may carry the binary headers too; the body is the truth.
    headers = [*STRUCTURED, ("ce_id", b"from-header"), ("ce_type", b"x")]
    assert decode(rec(headers, body(id="from-body"))).id == "from-body"


def test_header_names_are_case_insensitive_and_foreign_headers_ignored() -> None:
    headers = [
        ("CE_SpecVersion", b"1.0"),
        ("Ce_Type", b"t"),
        ("ce_source", b"/s"),
        ("ce_id", b"1"),
        ("Content-Type", b"application/json"),
        ("x-binary-junk", b"\xff\xfe\x00"),
    ]
    event = decode(rec(headers, b"[1]"))
    assert (event.type, event.data, event.datacontenttype) == ("t", [1], "application/json")


# --- decode: no invented attributes, key handling -----------------------------------------------


def test_absent_time_is_not_invented() -> None:
    assert decode(rec(BASE, b"1")).time is None
    assert decode(rec(STRUCTURED, body())).time is None
    assert decode(rec(BASE, b"1")).attributes().keys() == {"id", "source", "type", "specversion"}


def test_key_does_not_fill_partitionkey() -> None:
    # Spec 3.1: a key mapping must not add attributes to the event.
    assert decode(rec(BASE, b"1", key=b"k-1")).extensions == {}
    assert decode(rec(STRUCTURED, body(), key=b"\xff")).extensions == {}


def test_partitionkey_extension_is_kept_even_when_key_differs() -> None:
    event = decode(rec([*BASE, ("ce_partitionkey", b"order-1")], b"1", key=b"other"))
    assert event.partitionkey == "order-1"


def test_extension_headers_become_string_extensions() -> None:
    event = decode(rec([*BASE, ("ce_traceparent", b"00-ab-cd-01"), ("ce_n", b"5")], b"1"))
    assert event.extensions == {"traceparent": "00-ab-cd-01", "n": "5"}


def test_time_with_offset() -> None:
    event = decode(rec([*BASE, ("ce_time", b"2024-02-29T23:59:59.123456+02:00")], b"1"))
    assert event.time == datetime(2024, 2, 29, 21, 59, 59, 123456, tzinfo=UTC)


# --- decode: errors name their reason ------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        pytest.param(rec([], None), "empty record", id="empty"),
        pytest.param(rec([], b""), "empty record", id="empty-value"),
        pytest.param(
            rec([("x", b"y")], None),
            "tombstone record (no value and no CloudEvents headers)",
            id="tombstone",
        ),
        pytest.param(
            rec(STRUCTURED, None),
            "tombstone record (no value) with a structured content-type",
            id="structured-tombstone",
        ),
        pytest.param(
            rec([h for h in BASE if h[0] != "ce_source"], b"1"),
            "missing required attribute 'source'",
            id="missing-source",
        ),
        pytest.param(
            rec([h for h in BASE if h[0] != "ce_specversion"], b"1"),
            "missing required attribute 'specversion'",
            id="missing-specversion",
        ),
        pytest.param(
            rec([*BASE[1:], ("ce_specversion", b"0.3")], b"1"),
            "specversion '0.3' not supported (expected 1.0)",
            id="specversion-0.3",
        ),
        pytest.param(
            rec([*BASE[:3], ("ce_id", b"\xff\xfe")], b"1"),
            "header 'ce_id' is not valid UTF-8",
            id="id-not-utf8",
        ),
        pytest.param(
            rec([*BASE, ("ce_time", b"\xc3")], b"1"),
            "header 'ce_time' is not valid UTF-8",
            id="time-not-utf8",
        ),
        pytest.param(
            rec([*BASE, ("content-type", b"\xc3(")], b"1"),
            "header 'content-type' is not valid UTF-8",
            id="content-type-not-utf8",
        ),
        pytest.param(
            rec([*BASE, ("ce_type", b"other")], b"1"),
            "duplicate header 'ce_type'",
            id="duplicate-type",
        ),
        pytest.param(
            rec([*BASE, ("CE_TYPE", b"other")], b"1"),
            "duplicate header 'CE_TYPE'",
            id="duplicate-type-other-case",
        ),
        pytest.param(
            rec([*BASE, ("content-type", b"a/b"), ("Content-Type", b"a/b")], b"1"),
            "duplicate header 'Content-Type'",
            id="duplicate-content-type",
        ),
        pytest.param(
            rec([*BASE, ("content-type", b"a/b"), ("ce_datacontenttype", b"a/b")], b"1"),
            "duplicate header 'ce_datacontenttype' (content-type is also set)",
            id="datacontenttype-twice",
        ),
        pytest.param(
            rec([*BASE, ("ce_time", b"yesterday")], b"1"),
            "attribute 'time' is not an RFC 3339 timestamp",
            id="bad-time",
        ),
        pytest.param(
            rec([*BASE, ("ce_time", b"2018-04-05T03:56:24")], b"1"),
            "invalid attributes: time: Attribute 'time' must be timezone aware",
            id="naive-time",
        ),
        pytest.param(
            rec([*BASE[:3], ("ce_id", b"")], b"1"),
            "invalid attributes: id: Attribute 'id' must not be None or empty",
            id="empty-id",
        ),
        pytest.param(
            rec([*BASE, ("ce_Bad-Name", b"x")], b"1"),
            "invalid attributes: bad-name: Extension attribute 'bad-name' should only contain",
            id="bad-extension-name",
        ),
        pytest.param(
            rec([("content-type", b"application/json")], b"{}"),
            "not a CloudEvent: no 'ce_' headers and content-type 'application/json'",
            id="plain-json",
        ),
        pytest.param(
            rec([("content-type", b"application/cloudevents+avro")], b"{}"),
            "unsupported event format 'application/cloudevents+avro'",
            id="avro-format",
        ),
        pytest.param(
            rec([("content-type", b"application/cloudevents-batch+json")], b"[]"),
            "unsupported event format 'application/cloudevents-batch+json'",
            id="batch",
        ),
        pytest.param(
            rec([("content-type", b"application/cloudevents+json; charset=latin-1")], body()),
            "charset 'latin-1' not supported (expected utf-8)",
            id="charset",
        ),
        pytest.param(
            rec(STRUCTURED, body()[:-5]),
            "structured body is not valid JSON: ",
            id="truncated-json",
        ),
        pytest.param(rec(STRUCTURED, b""), "structured body is empty", id="empty-body"),
        pytest.param(
            rec(STRUCTURED, b"\xff{}"), "structured body is not valid UTF-8", id="body-not-utf8"
        ),
        pytest.param(
            rec(STRUCTURED, b"[1, 2]"), "structured body is not a JSON object", id="array"
        ),
        pytest.param(
            rec(STRUCTURED, b'{"id": "1", "id": "2"}'),
            "structured body is not valid JSON: duplicate member 'id'",
            id="duplicate-member",
        ),
        pytest.param(
            rec(STRUCTURED, body(data={"x": float("nan")})),
            "structured body is not valid JSON: NaN is not valid JSON",
            id="nan",
        ),
        pytest.param(
            rec(STRUCTURED, body(specversion="0.3")),
            "specversion '0.3' not supported (expected 1.0)",
            id="structured-specversion",
        ),
        pytest.param(
            rec(STRUCTURED, body(specversion=1.0)),
            "attribute 'specversion' is not a string: 1.0",
            id="specversion-number",
        ),
        pytest.param(
            rec(STRUCTURED, body(source=...)),
            "missing required attribute 'source'",
            id="structured-missing-source",
        ),
        pytest.param(
            rec(STRUCTURED, body(id=5)),
            "invalid attributes: id: Attribute 'id' must be a <class 'str'>",
            id="id-number",
        ),
        pytest.param(
            rec(STRUCTURED, body(data=1, data_base64="AA==")),
            "structured body has both 'data' and 'data_base64'",
            id="data-twice",
        ),
        pytest.param(
            rec(STRUCTURED, body(data_base64="not base64!")),
            "'data_base64' is not valid base64",
            id="bad-base64",
        ),
        pytest.param(
            rec(STRUCTURED, body(ext={"nested": 1})),
            "extension 'ext' has unsupported type dict",
            id="object-extension",
        ),
        pytest.param(
            rec(STRUCTURED, body(time=12)),
            "attribute 'time' is not a string",
            id="time-number",
        ),
        pytest.param(
            rec(STRUCTURED, body(data="x") + b"\x00"),
            "structured body is not valid JSON: Extra data",
            id="trailing-bytes",
        ),
    ],
)
def test_decode_errors(record: Record, expected: str) -> None:
    assert decode_error(record).startswith(expected)


def test_decode_error_is_bad_input_not_retriable() -> None:
    with pytest.raises(DecodeError) as info:
        decode(rec([], None))
    assert info.value.retriable is False
    assert info.value.reason == "decode"


def test_deeply_nested_json_is_a_decode_error() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(DecodeError, match="not valid JSON"):
        decode(rec([*BASE, ("content-type", b"application/json")], deep))
    with pytest.raises(DecodeError, match="not valid JSON"):
        decode(rec(STRUCTURED, b'{"data":' + deep + b"}"))


# --- encode ------------------------------------------------------------------------------------


def test_encode_binary() -> None:
    event = Event(
        id="1",
        source="/s",
        type="t",
        data={"a": "ü"},
        time=datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC),
        extensions={"partitionkey": "order-1", "flag": True, "n": 3},
    )
    key, value, headers = encode(event)
    assert key == b"order-1"
    assert value == '{"a":"ü"}'.encode()
    assert headers == [
        ("ce_id", b"1"),
        ("ce_source", b"/s"),
        ("ce_type", b"t"),
        ("ce_specversion", b"1.0"),
        ("ce_time", b"2020-01-02T03:04:05Z"),
        ("ce_partitionkey", b"order-1"),
        ("ce_flag", b"true"),
        ("ce_n", b"3"),
    ]


def test_encode_structured() -> None:
    event = Event(id="1", source="/s", type="t", data=b"\x00", extensions={"n": 3})
    key, value, headers = encode(event, "structured")
    assert key is None
    assert headers == [("content-type", STRUCTURED_CONTENT_TYPE.encode())]
    assert value is not None
    assert json.loads(value) == {
        "id": "1",
        "source": "/s",
        "type": "t",
        "specversion": "1.0",
        "n": 3,
        "data_base64": "AA==",
    }


def test_encode_binary_without_data_has_no_value() -> None:
    _, value, _ = encode(Event(id="1", source="/s", type="t"))
    assert value is None


def test_encode_does_not_invent_time() -> None:
    _, _, headers = encode(Event(id="1", source="/s", type="t", data=1))
    assert "ce_time" not in dict(headers)
    _, value, _ = encode(Event(id="1", source="/s", type="t", data=1), "structured")
    assert value is not None
    assert "time" not in json.loads(value)


def test_encode_text_data_under_non_json_type() -> None:
    event = Event(id="1", source="/s", type="t", data="héllo", datacontenttype="text/plain")
    assert encode(event)[1] == "héllo".encode()
    assert decode(rec(encode(event)[2], encode(event)[1])).data == "héllo".encode()


@pytest.mark.parametrize(
    ("event", "mode", "match"),
    [
        (Event(id="", source="/s", type="t"), "binary", "'id' must not be None or empty"),
        (
            Event(id="1", source="/s", type="t", time=datetime(2020, 1, 1)),
            "structured",
            "timezone-aware",
        ),
        (
            Event(id="1", source="/s", type="t", data={"a": 1}, datacontenttype="text/xml"),
            "binary",
            "cannot be encoded as 'text/xml'",
        ),
        (
            Event(id="1", source="/s", type="t", data=[1], datacontenttype="text/xml"),
            "structured",
            "cannot be encoded as 'text/xml'",
        ),
        (Event(id="1", source="/s", type="t", data=float("inf")), "binary", "not JSON compliant"),
        (Event(id="1", source="/s", type="t", data={1, 2}), "binary", "not JSON-serializable"),
        (Event(id="1", source="/s", type="t", data={"s": {1}}), "structured", "JSON-serializable"),
        (
            Event(id="1", source="/s", type="t", datacontenttype="application/cloudevents+json"),
            "binary",
            "cannot be sent in binary mode",
        ),
    ],
)
def test_encode_refuses(event: Event, mode: Literal["binary", "structured"], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode(event, mode)


def test_encode_refuses_unsupported_extension_type() -> None:
    with pytest.raises(ValueError, match="extension 'x' has unsupported type list"):
        encode(Event(id="1", source="/s", type="t", extensions={"x": [1]}))


# --- Record ------------------------------------------------------------------------------------


def test_record_from_aiokafka() -> None:
    consumer_record: ConsumerRecord[bytes, bytes] = ConsumerRecord(
        topic="orders",
        partition=3,
        offset=42,
        timestamp=1_700_000_000_000,
        timestamp_type=0,
        key=b"k",
        value=b"v",
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=1,
        headers=[("ce_id", b"1"), ("nullable", None)],
    )
    record = Record.from_aiokafka(consumer_record)
    assert record == Record(
        topic="orders",
        partition=3,
        offset=42,
        key=b"k",
        value=b"v",
        headers=(("ce_id", b"1"), ("nullable", b"")),
        timestamp=1_700_000_000_000,
    )
    with pytest.raises(AttributeError):
        record.offset = 1  # type: ignore[misc]
    assert not hasattr(record, "__dict__")  # slotted


# --- property tests: round trips ---------------------------------------------------------------

_chars = st.characters(exclude_categories=["Cs"])  # surrogates cannot be UTF-8 encoded
_text = st.text(_chars, min_size=1, max_size=20)
_ext_names = st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True).filter(
    lambda n: n not in CORE_ATTRIBUTES and n != "data"
)
_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(_chars, max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(_chars), inner, max_size=4),
    max_leaves=12,
)
_json_types = st.sampled_from(
    [None, "application/json", "application/json; charset=utf-8", "text/json", "a/vnd.x+json"]
)
_other_types = st.sampled_from(
    ["application/octet-stream", "text/plain; charset=utf-8", "application/avro", "image/png"]
)
_times = st.none() | st.datetimes(
    min_value=datetime(1970, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))]
    ),
)


@st.composite
def events(draw: st.DrawFn, mode: Literal["binary", "structured"]) -> Event:
    if draw(st.booleans()):
        data: Any = draw(_json_values)
        ctype = draw(_json_types)
    else:
        data = draw(st.binary(max_size=40))
        # Binary mode cannot tell JSON bytes from JSON data without a non-JSON content type.
        ctype = draw(_other_types if mode == "binary" else _json_types | _other_types)
    ext_values = _text | st.just("") if mode == "binary" else _text | st.integers() | st.booleans()
    return Event(
        id=draw(_text),
        source=draw(_text),
        type=draw(_text),
        subject=draw(st.none() | _text),
        time=draw(_times),
        dataschema=draw(st.none() | _text),
        datacontenttype=ctype,
        data=data,
        extensions=draw(st.dictionaries(_ext_names, ext_values, max_size=4)),
    )


def _roundtrip(event: Event, mode: Literal["binary", "structured"]) -> Event:
    key, value, headers = encode(event, mode)
    assert key == (None if event.partitionkey is None else event.partitionkey.encode())
    return decode(rec(headers, value, key=key))


@given(events("binary"))
def test_roundtrip_binary(event: Event) -> None:
    assert _roundtrip(event, "binary") == event


@given(events("structured"))
def test_roundtrip_structured(event: Event) -> None:
    assert _roundtrip(event, "structured") == event


@given(st.sampled_from(["binary", "structured"]), _text)
def test_roundtrip_partitionkey(mode: Literal["binary", "structured"], pkey: str) -> None:
    event = Event(id="1", source="/s", type="t", data={"k": 1}, extensions={"partitionkey": pkey})
    assert _roundtrip(event, mode) == event


# --- property tests: fuzzing, nothing but DecodeError escapes ----------------------------------

_header_names = st.sampled_from(
    [
        "ce_specversion",
        "ce_id",
        "ce_source",
        "ce_type",
        "ce_time",
        "ce_subject",
        "ce_datacontenttype",
        "ce_dataschema",
        "ce_partitionkey",
        "ce_data",
        "ce_",
        "CE_ID",
        "content-type",
        "Content-Type",
        "traceparent",
    ]
) | st.text(max_size=12)
_header_values = st.sampled_from(
    [
        b"1.0",
        b"0.3",
        b"",
        b"/s",
        b"2018-04-05T03:56:24Z",
        b"2018-04-05T03:56:24",
        b"9999-99-99T99:99:99Z",
        b"application/json",
        b"application/cloudevents+json",
        b"application/cloudevents+json; charset=latin-1",
        b"text/plain",
        b"\xff\xfe",
        b"\xc3",
    ]
) | st.binary(max_size=12)
_valid_binary = st.just(BASE)
_fuzz_headers = st.lists(st.tuples(_header_names, _header_values), max_size=10)


def _assert_decodes_or_decode_error(record: Record) -> None:
    try:
        event = decode(record)
    except DecodeError:
        return
    # A decoded event carries only attributes that the record carried.
    names = {name.lower() for name, _ in record.headers}
    if any(name.startswith("ce_") for name in names) and not any(
        value.lower().startswith(b"application/cloudevents")
        for name, value in record.headers
        if name.lower() == "content-type"
    ):
        for attribute in event.attributes():
            assert f"ce_{attribute}" in names or (
                attribute == "datacontenttype" and "content-type" in names
            )


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    headers=_fuzz_headers,
    value=st.none() | st.binary(max_size=64),
    key=st.none() | st.binary(max_size=8),
)
def test_fuzz_arbitrary_records(headers: Headers, value: bytes | None, key: bytes | None) -> None:
    _assert_decodes_or_decode_error(rec(headers, value, key))


@settings(max_examples=300)
@given(extra=_fuzz_headers, drop=st.sets(st.integers(0, 3)), value=st.none() | st.binary())
def test_fuzz_mutated_binary(extra: Headers, drop: set[int], value: bytes | None) -> None:
    headers = [h for i, h in enumerate(BASE) if i not in drop] + extra
    _assert_decodes_or_decode_error(rec(headers, value))


@settings(max_examples=300)
@given(
    event=events("structured"),
    cut=st.integers(0, 400),
    flips=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=3),
    ctype=st.sampled_from(
        [
            b"application/cloudevents+json",
            b"application/cloudevents+json; charset=utf-8",
            b"APPLICATION/CLOUDEVENTS+JSON",
            b"application/json",
            b"text/plain",
            b"application/cloudevents+xml",
        ]
    ),
)
def test_fuzz_mutated_structured(
    event: Event, cut: int, flips: list[tuple[int, int]], ctype: bytes
) -> None:
    _, value, _ = encode(event, "structured")
    assert value is not None
    mutated = bytearray(value[:cut] if cut < len(value) else value)
    for position, byte in flips:
        if position < len(mutated):
            mutated[position] = byte
    _assert_decodes_or_decode_error(rec([("content-type", ctype)], bytes(mutated)))


_json_members = st.dictionaries(
    st.sampled_from(
        [
            "specversion",
            "id",
            "source",
            "type",
            "time",
            "subject",
            "datacontenttype",
            "dataschema",
            "data",
            "data_base64",
            "partitionkey",
            "Bad-Ext",
            "",
        ]
    ),
    _json_values | st.sampled_from(["1.0", "0.3", "2018-04-05T03:56:24Z", "AA==", "!!"]),
)


@settings(max_examples=400)
@given(members=_json_members)
def test_fuzz_structured_members(members: dict[str, Any]) -> None:
    _assert_decodes_or_decode_error(rec(STRUCTURED, json.dumps(members).encode()))


# --- text that cannot be encoded as UTF-8 (lone surrogates from JSON escapes) -----------------

# JSON may escape a lone surrogate (``"\udc80"``): valid JSON, and Python's json module decodes
# it into a str that no UTF-8 encoder accepts (request ids, Temporal payloads, Kafka headers).
_LONE = "\\udc80"  # as it appears in the JSON text


def _structured(text: str) -> Record:
    return rec(STRUCTURED, text.encode("ascii"))


def _envelope(**replace: str) -> str:
    members = {"specversion": '"1.0"', "id": '"1"', "source": '"/s"', "type": '"t"', **replace}
    return "{" + ",".join(f'"{k}":{v}' for k, v in members.items()) + "}"


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        pytest.param(_structured(_envelope(id=f'"a{_LONE}"')), "attribute 'id'", id="id"),
        pytest.param(_structured(_envelope(source=f'"/s{_LONE}"')), "attribute 'source'", id="source"),
        pytest.param(_structured(_envelope(type=f'"t{_LONE}"')), "attribute 'type'", id="type"),
        pytest.param(_structured(_envelope(subject=f'"{_LONE}"')), "attribute 'subject'", id="subject"),
        pytest.param(
            _structured(_envelope(dataschema=f'"{_LONE}"')), "attribute 'dataschema'", id="dataschema"
        ),
        pytest.param(
            _structured(_envelope(datacontenttype=f'"text/plain{_LONE}"')),
            "attribute 'datacontenttype'",
            id="datacontenttype",
        ),
        pytest.param(
            _structured(_envelope(**{f"ext{_LONE}": '"x"'})), "extension name", id="extension-name"
        ),
        pytest.param(
            _structured(_envelope(ext=f'"x{_LONE}"')), "extension 'ext'", id="extension-value"
        ),
        pytest.param(
            _structured(_envelope(data=f'{{"k": ["ok", "{_LONE}"]}}')), "data.k[1]", id="data-value"
        ),
        pytest.param(
            _structured(_envelope(data=f'{{"{_LONE}": 1}}')), "data", id="data-member-name"
        ),
        pytest.param(
            rec([*BASE, ("content-type", b"application/json")], f'{{"k": "{_LONE}"}}'.encode()),
            "data.k",
            id="binary-json-data",
        ),
        pytest.param(
            rec(BASE, f'["{_LONE}"]'.encode()), "data[0]", id="binary-undeclared-json-data"
        ),
        pytest.param(
            rec([*BASE, ("ce_ext\udc80", b"x")]), "header name", id="binary-header-name"
        ),
        pytest.param(
            # A surrogate written as UTF-8 bytes (CESU-8 style) is invalid UTF-8 in a header.
            rec([*BASE, ("ce_ext", "x\udc80".encode("utf-8", "surrogatepass"))]),
            "header 'ce_ext' is not valid UTF-8",
            id="binary-header-value",
        ),
    ],
)
def test_text_that_is_not_unicode_is_a_decode_error(record: Record, expected: str) -> None:
    message = decode_error(record)
    assert expected in message
    assert "lone surrogate" in message or "not valid UTF-8" in message
    message.encode("utf-8")  # the message itself goes into a Kafka header


def test_surrogate_pairs_are_fine() -> None:
    # "\ud83d\ude00" is one character (U+1F600) spelled as a pair: valid text.
    event = decode(_structured(_envelope(id='"\\ud83d\\ude00"', data='"\\\\udc80"')))
    assert event.id == "\U0001f600"
    assert event.data == "\\udc80"  # an escaped backslash: the text holds no surrogate


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


# Every code point, surrogates included.
_any_text = st.text(st.characters(exclude_categories=()), max_size=8)
_any_json = st.recursive(
    st.none() | st.integers() | _any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_any_text, inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=100, deadline=None)
@given(
    members=st.dictionaries(
        st.sampled_from(["id", "source", "type", "subject", "dataschema", "data", "x1"]) | _any_text,
        _any_json,
        max_size=6,
    )
)
def test_fuzz_decoded_text_is_always_unicode(members: dict[str, Any]) -> None:
    doc = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t", **members}
    record = rec(STRUCTURED, json.dumps(doc).encode("ascii"))
    try:
        event = decode(record)
    except DecodeError as exc:
        for name, value in deadletter_headers(record, exc, None):
            name.encode("utf-8")
            assert isinstance(value, bytes)
        return
    texts = [*_strings(event.attributes()), *_strings(event.extensions), *_strings(event.data)]
    for text in texts:
        text.encode("utf-8")
    request_id("r", event), update_id("r", event), reply_id("r", event)


# --- a leap second (RFC 3339 allows :60) -------------------------------------------------------

LEAP = "2016-12-31T23:59:60Z"
LEAP_CLAMPED = datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def test_leap_second_binary_is_clamped_and_keeps_its_text() -> None:
    event = decode(rec([*BASE, ("ce_time", LEAP.encode())], b"1"))
    assert event.time == LEAP_CLAMPED
    assert event.time_text == LEAP
    assert type(event.time) is datetime  # a plain datetime, whatever carried the text
    assert event.to_payload()["time"] == LEAP
    assert Event.from_payload(event.to_payload()) == event


def test_leap_second_structured_with_offset_and_fraction() -> None:
    text = "1990-12-31T15:59:60.5-08:00"  # RFC 3339's own example, with a fraction
    event = decode(rec(STRUCTURED, body(time=text)))
    assert event.time == datetime(1990, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert event.time_text == text


def test_ordinary_time_keeps_no_text() -> None:
    event = decode(rec([*BASE, ("ce_time", b"2018-04-05T03:56:24Z")], b"1"))
    assert event.time_text is None


@pytest.mark.parametrize(
    "text", ["2016-12-31T23:59:61Z", "2016-12-31T23:60:00Z", "2016-12-31T23:59:6Z", "x:60"]
)
def test_not_a_leap_second_is_still_refused(text: str) -> None:
    assert "not an RFC 3339 timestamp" in decode_error(
        rec([*BASE, ("ce_time", text.encode())], b"1")
    )


def test_the_sdk_cannot_produce_a_leap_second() -> None:
    # Why the leap-second records above are written by hand: the cloudevents SDK's event holds
    # ``time`` as a datetime, so no SDK producer sends ``:60``; other producers may.
    from cloudevents.core.v1.event import CloudEvent

    with pytest.raises(Exception, match="time"):
        CloudEvent({"type": "t", "source": "/s", "id": "1", "specversion": "1.0", "time": LEAP})


# --- the binary fast path against the SDK's own binding ---------------------------------------


def _sdk_binary(record: Record) -> Event:
    """A binary-mode record decoded by the ``cloudevents`` SDK's own Kafka binding
    (``from_binary``), with the loom's format and event factory: what ``decode`` did before its
    binary fast path, and must still agree with."""
    headers: dict[str, bytes] = {}
    for name, value in record.headers:
        lname = name.lower()
        if lname.startswith("ce_") or lname == "content-type":
            headers[lname] = value
    time = headers.pop("ce_time", None)
    factory: Any = make_event
    if time is not None:
        factory = partial(make_event, time=parse_time(time.decode("utf-8")))
    fmt = FORMAT if record.value is not None else FORMAT_NO_VALUE
    message = sdk_kafka.KafkaMessage(headers=headers, key=None, value=record.value or b"")
    return event_from_sdk(sdk_kafka.from_binary(message, fmt, factory))


def _binary_mode(record: Record) -> bool:
    names = [name.lower() for name, _ in record.headers]
    ctype = next((v for n, v in record.headers if n.lower() == "content-type"), b"")
    return (
        len(set(names)) == len(names)  # repeated headers are refused before either decoder
        and any(n.startswith("ce_") for n in names)
        and not ctype.lstrip().lower().startswith(b"application/cloudevents")
        and not ("content-type" in names and "ce_datacontenttype" in names)
    )


def _assert_agrees_with_sdk(record: Record) -> None:
    try:
        expected: Event | None = _sdk_binary(record)
    except Exception:  # the SDK's refusals are of many types; decode's is one
        expected = None
    if expected is None:
        with pytest.raises(DecodeError):
            decode(record)
    else:
        assert decode(record) == expected


@settings(max_examples=300)
@given(events("binary"), st.none() | st.binary(max_size=8))
def test_binary_fast_path_agrees_with_the_sdk_binding_on_valid_records(
    event: Event, key: bytes | None
) -> None:
    _, value, headers = encode(event, "binary")
    record = rec(headers, value, key=key)
    assert _binary_mode(record)
    _assert_agrees_with_sdk(record)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(
    extra=_fuzz_headers,
    drop=st.sets(st.integers(0, 3)),
    value=st.none() | st.binary(max_size=32) | st.sampled_from([b"{}", b'{"a": 1}', b"[1, 2]"]),
)
def test_binary_fast_path_agrees_with_the_sdk_binding_on_mutated_records(
    extra: Headers, drop: set[int], value: bytes | None
) -> None:
    record = rec([h for i, h in enumerate(BASE) if i not in drop] + extra, value)
    assume(_binary_mode(record))
    _assert_agrees_with_sdk(record)
