"""Validation of POST /api/v1/events bodies: what is accepted, and the precise reason for what is not."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from meterline.domain.events import (
    BATCH,
    JSON,
    MAX_BODY_BYTES,
    MAX_EVENT_BYTES,
    MAX_EVENTS_PER_REQUEST,
    MAX_FUTURE_MS,
    SINGLE,
)
from meterline.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from meterline.http.requests import parse_events
from tests.conftest import cloud_event

RECEIVED = 1_800_000_000_123  # 2027-01-15: after the example events


def parse(payload: Any, content_type: str = JSON) -> list:
    return parse_events(orjson.dumps(payload), content_type, RECEIVED)


def test_single_event_is_parsed_with_utc_millisecond_time() -> None:
    [event] = parse(cloud_event(time="2024-01-01T01:00:00.0019+01:00"), SINGLE)
    assert (event.id, event.source, event.subject, event.type) == ("evt-1", "chat-app", "customer-1", "prompt")
    assert event.time == 1704067200001
    assert event.data == {"tokens": "123456", "model": "gpt4-turbo", "type": "output"}


def test_batch_and_plain_json_forms() -> None:
    batch = [cloud_event(i) for i in range(3)]
    assert [e.id for e in parse(batch, BATCH)] == ["evt-0", "evt-1", "evt-2"]
    assert [e.id for e in parse(batch, JSON)] == ["evt-0", "evt-1", "evt-2"]
    assert [e.id for e in parse(cloud_event(7), JSON)] == ["evt-7"]
    assert len(parse(batch, "application/cloudevents-batch+json; charset=utf-8")) == 3


def test_missing_time_defaults_to_receipt_and_data_may_be_null_or_absent() -> None:
    event = cloud_event()
    del event["time"]
    del event["data"]
    [parsed] = parse(event)
    assert parsed.time == RECEIVED and parsed.data is None
    [parsed] = parse(cloud_event(data=None, time=None))
    assert parsed.time == RECEIVED and parsed.data is None


def test_unknown_extension_attributes_are_ignored() -> None:
    [parsed] = parse(cloud_event(traceparent="00-abc", datacontenttype="application/json"))
    assert parsed.id == "evt-1"


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"id": ""}, "id", "must not be empty"),
        ({"id": None}, "id", "must be a string"),
        ({"id": 17}, "id", "must be a string"),
        ({"source": ""}, "source", "must not be empty"),
        ({"subject": ""}, "subject", "must not be empty"),
        ({"type": ""}, "type", "must not be empty"),
        ({"specversion": "0.3"}, "specversion", "must be '1.0'"),
        ({"data": [1, 2]}, "data", "must be a JSON object or null"),
        ({"data": "text"}, "data", "must be a JSON object or null"),
        ({"time": "2024-01-01"}, "time", "must be an RFC 3339 date-time"),
        ({"time": 1704067200}, "time", "must be a string"),
        ({"datacontenttype": "text/plain"}, "datacontenttype", "must be 'application/json'"),
        ({"id": "x" * 257}, "id", "must be at most 256 bytes long"),
        ({"subject": "é" * 129}, "subject", "must be at most 256 bytes long"),
    ],
)
def test_each_invalid_field_is_named_with_its_reason(change: dict, field: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse([cloud_event(0), cloud_event(1, **change)], BATCH)
    [error] = caught.value.errors
    assert (error.index, error.field) == (1, field)
    assert error.reason.startswith(reason)


@pytest.mark.parametrize("missing", ["id", "source", "specversion", "type", "subject"])
def test_required_attributes(missing: str) -> None:
    event = cloud_event()
    del event[missing]
    with pytest.raises(InvalidInput) as caught:
        parse(event, SINGLE)
    [error] = caught.value.errors
    assert (error.index, error.field, error.reason) == (None, missing, "is required")


def test_every_offending_event_of_a_batch_is_reported() -> None:
    batch = [cloud_event(0), cloud_event(1, subject=""), cloud_event(2), cloud_event(3, id="")]
    with pytest.raises(InvalidInput) as caught:
        parse(batch)
    assert [(e.index, e.field) for e in caught.value.errors] == [(1, "subject"), (3, "id")]
    assert caught.value.detail.startswith("2 invalid events, nothing was stored")


def test_event_times_more_than_five_minutes_ahead_are_refused() -> None:
    """Counting rows are looked for up to a quarter-hour after a query's `now`: an event dated further
    ahead than clock skew explains is a 400 naming its `time`, and nothing of the batch is stored."""
    from meterline.domain.timeutil import format_ms

    limit = format_ms(RECEIVED + MAX_FUTURE_MS)
    too_far = format_ms(RECEIVED + MAX_FUTURE_MS + 1)
    assert parse(cloud_event(time=limit), SINGLE)[0].time == RECEIVED + MAX_FUTURE_MS
    with pytest.raises(InvalidInput) as caught:
        parse([cloud_event(0), cloud_event(1, time=too_far)])
    [error] = caught.value.errors
    assert (error.index, error.field) == (1, "time")
    assert error.reason.startswith("must be at most 5 minutes after the time of receipt") and too_far in error.reason
    assert caught.value.detail.startswith("1 invalid event, nothing was stored: event 1: time must be at most")


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"{not json", JSON, "not valid JSON"),
        (b"", JSON, "not valid JSON"),
        (b"[]", BATCH, "empty"),
        (b"[]", JSON, "empty"),
        (b"[1, 2]", JSON, None),
        (b'"event"', JSON, "JSON object"),
        (b"42", JSON, "JSON object"),
        (orjson.dumps([cloud_event()]), SINGLE, "one event"),
        (orjson.dumps(cloud_event()), BATCH, "array"),
    ],
)
def test_malformed_bodies_are_400(body: bytes, content_type: str, message: str | None) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_events(body, content_type, RECEIVED)
    if message:
        assert message in caught.value.detail


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "application/xml", "multipart/form-data"])
def test_other_content_types_are_415(content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaType):
        parse_events(orjson.dumps(cloud_event()), content_type, RECEIVED)


def test_limits_are_413() -> None:
    with pytest.raises(PayloadTooLarge, match="1001 events"):
        parse([cloud_event(i) for i in range(MAX_EVENTS_PER_REQUEST + 1)])
    assert len(parse([cloud_event(i) for i in range(MAX_EVENTS_PER_REQUEST)])) == MAX_EVENTS_PER_REQUEST

    big = cloud_event(1, data={"blob": "x" * MAX_EVENT_BYTES})
    with pytest.raises(PayloadTooLarge) as caught:
        parse([cloud_event(0), big])
    assert [e.index for e in caught.value.errors] == [1]

    fits = cloud_event(1, data={"blob": "x" * (MAX_EVENT_BYTES - 300)})
    assert len(parse([cloud_event(0), fits])) == 2

    body = b" " * (MAX_BODY_BYTES + 1)
    with pytest.raises(PayloadTooLarge, match="limit is 1048576"):
        parse_events(body, JSON, RECEIVED)
