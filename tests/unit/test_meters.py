"""Meter definitions from YAML and the reasons an event cannot be counted."""

from __future__ import annotations

import pytest

from meterline.domain.meters import MeterCatalog, load_meters_file, parse_meters, parse_number
from meterline.errors import InvalidInput
from tests.conftest import EXAMPLE_METERS


def test_example_config_loads_every_example_meter() -> None:
    meters = load_meters_file(EXAMPLE_METERS)
    slugs = {m.slug for m in meters}
    assert len(meters) == len(slugs) == 13
    assert {"tokens_total", "api_requests_total", "unique_sessions_total", "translate_tokens_total"} <= slugs
    catalog = MeterCatalog(meters)
    assert [c.meter.slug for c in catalog.for_event_type("request")] == [
        "api_requests_total", "api_request_duration_seconds", "api_request_ingress_bytes"]


@pytest.mark.parametrize(
    ("meter", "message"),
    [
        ({"slug": "Bad-Slug", "eventType": "x", "aggregation": "COUNT"}, "slug"),
        ({"slug": "a", "eventType": "x", "aggregation": "COUNT", "valueProperty": "$.v"}, "absent for COUNT"),
        ({"slug": "a", "eventType": "x", "aggregation": "SUM"}, "required for SUM"),
        ({"slug": "a", "eventType": "x", "aggregation": "SUM", "valueProperty": "v"}, "must start with $"),
        ({"slug": "a", "eventType": "x", "aggregation": "MEDIAN", "valueProperty": "$.v"}, "aggregation"),
        ({"slug": "a", "eventType": "x", "aggregation": "COUNT", "groupBy": {"1x": "$.a"}}, "key '1x'"),
        ({"slug": "a", "eventType": "x", "aggregation": "COUNT", "groupBy": {"k": "a"}}, "JSONPath"),
        ({"slug": "a", "eventType": "x", "aggregation": "SUM", "valueProperty": "$.v", "groupBy": {"k": "$.v"}},
         "differ from valueProperty"),
        ({"slug": "a", "aggregation": "COUNT"}, "eventType"),
    ],
)
def test_invalid_meters_are_refused_with_the_field(meter: dict, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_meters({"meters": [meter]})
    assert message in caught.value.detail
    assert caught.value.errors[0].index == 0


def test_duplicate_slugs_are_refused() -> None:
    meter = {"slug": "a", "eventType": "x", "aggregation": "COUNT"}
    with pytest.raises(InvalidInput, match="duplicate slug a"):
        parse_meters({"meters": [meter, meter]})


@pytest.mark.parametrize(
    ("raw", "value"),
    [(1, 1.0), (2.5, 2.5), ("123456", 123456.0), (" 7 ", 7.0), ("1e3", 1000.0), ("-0.5", -0.5),
     (True, None), (None, None), ("NaN", None), ("inf", None), ("1_000", None), ("12abc", None),
     (float("nan"), None), ([1], None), ({"a": 1}, None), ("", None)],
)
def test_parse_number(raw: object, value: float | None) -> None:
    assert parse_number(raw) == value


def test_validation_error_explains_why_an_event_is_not_counted() -> None:
    catalog = MeterCatalog(load_meters_file(EXAMPLE_METERS))
    assert catalog.validation_error("unknown", {}) == "no meter found for event type unknown"
    assert catalog.validation_error("prompt", {"tokens": "12", "model": "m"}) is None
    assert catalog.validation_error("prompt", {"tokens": "many"}) == (
        "meter tokens_total: valueProperty $.tokens is not a number: 'many'")
    assert catalog.validation_error("prompt", {}) == "meter tokens_total: valueProperty $.tokens is missing or null"
    assert catalog.validation_error("request", {"duration_seconds": 1}) == (
        "meter api_request_ingress_bytes: valueProperty $.ingress_bytes is missing or null")
    assert catalog.validation_error("login", {"session_id": 5}) is None
    assert "must be a scalar" in catalog.validation_error("login", {"session_id": {"a": 1}})


def test_general_jsonpath_is_supported() -> None:
    [meter] = parse_meters({"meters": [{"slug": "a", "eventType": "x", "aggregation": "SUM",
                                        "valueProperty": "$['usage']['tokens']"}]})
    catalog = MeterCatalog([meter])
    assert catalog.validation_error("x", {"usage": {"tokens": 3}}) is None
    assert catalog.validation_error("x", {"usage": {}}) is not None
