"""The Event value: payload form (inside Temporal) and the cloudevents SDK conversion."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from bridge.events import Event
from bridge.kafka.binding import event_from_sdk, event_to_sdk

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
_events = st.builds(
    Event,
    id=st.text(min_size=1, max_size=10),
    source=st.text(min_size=1, max_size=10),
    type=st.text(min_size=1, max_size=10),
    data=_json | st.binary(max_size=20),
    subject=st.none() | st.text(min_size=1, max_size=5),
    time=st.none() | st.datetimes(timezones=st.just(UTC)),
    extensions=st.dictionaries(st.sampled_from(["partitionkey", "tenant", "traceparent"]), st.text(max_size=5)),
)


@given(_events)
def test_payload_round_trip(event: Event) -> None:
    assert Event.from_payload(event.to_payload()) == event


@given(_events)
def test_sdk_round_trip_adds_nothing(event: Event) -> None:
    sdk = event_to_sdk(event)
    assert set(sdk.get_attributes()) == set(event.attributes())
    assert event_from_sdk(sdk) == event


def test_bytes_data_travels_as_base64() -> None:
    payload = Event(id="1", source="s", type="t", data=b"\x00\xff").to_payload()
    assert payload["data_base64"] == "AP8="
    assert "data" not in payload


def test_identity_and_attributes() -> None:
    when = datetime(2026, 1, 2, tzinfo=UTC)
    event = Event(id="1", source="s", type="t", time=when, extensions={"partitionkey": "k"})
    assert event.key != Event(id="1", source="s2", type="t").key
    assert event.partitionkey == "k"
    assert event.attribute("time") == when
    assert event.attribute("partitionkey") == "k"
    assert event.attribute("missing") is None
    assert event.to_payload()["time"] == "2026-01-02T00:00:00+00:00"


def test_payload_time_leap_second_is_clamped_and_kept_as_text() -> None:
    event = Event.from_payload(
        {"id": "1", "source": "s", "type": "t", "time": "2016-12-31T23:59:60Z"}
    )
    assert event.time == datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert event.time_text == "2016-12-31T23:59:60Z"
    assert event.to_payload()["time"] == "2016-12-31T23:59:60Z"
