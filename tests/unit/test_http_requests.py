"""The edge between HTTP and the services: body checks in their order (415, 413, malformed JSON, not an
object), query strings into models, and every refusal naming the offending field."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

from meterline.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from meterline.http.requests import body_model, json_object, query_model
from meterline.http.usage import usage_query_params
from meterline.services.events_listing import ListEventsQuery
from meterline.services.reports import ListRunsQuery, RunRequest
from meterline.services.usage_query import UsageQueryParameters


def request(body: bytes = b"", content_type: str | None = "application/json", method: str = "POST",
            query: str = "", base64_body: bool = False) -> APIGatewayProxyEventV2:
    from urllib.parse import parse_qsl

    headers = {} if content_type is None else {"content-type": content_type}
    return APIGatewayProxyEventV2({
        "rawPath": "/", "rawQueryString": query, "headers": headers,
        "queryStringParameters": dict(parse_qsl(query, keep_blank_values=True)) or None,
        "requestContext": {"http": {"method": method, "path": "/"}},
        "body": base64.b64encode(body).decode() if base64_body else body.decode(),
        "isBase64Encoded": base64_body,
    })


@pytest.mark.parametrize(
    ("body", "content_type", "error", "kind"),
    [
        (b"{}", "text/plain", UnsupportedMediaType, "unsupported-media-type"),
        (b"{}", None, UnsupportedMediaType, "unsupported-media-type"),
        (b"{" + b" " * 70_000 + b"}", "application/json", PayloadTooLarge, "payload-too-large"),
        (b"{oops", "application/json", InvalidInput, "malformed-json"),
        (b"[]", "application/json", InvalidInput, "invalid-request"),
        (b"", "application/json", InvalidInput, "malformed-json"),
    ],
)
def test_request_bodies(body: bytes, content_type: str | None, error: type, kind: str) -> None:
    with pytest.raises(error) as caught:
        json_object(request(body, content_type), "a meter")
    assert caught.value.kind == kind


def test_request_body_accepts_json_with_parameters_and_base64() -> None:
    assert json_object(request(b'{"a": 1}', "Application/JSON; charset=utf-8"), "a meter") == {"a": 1}
    assert json_object(request(b'{"a": 1}', base64_body=True), "a meter") == {"a": 1}


def test_a_body_model_names_each_offending_field() -> None:
    with pytest.raises(InvalidInput) as caught:
        body_model(request(orjson.dumps({"from": "yesterday", "extra": 1})), RunRequest, "a run request",
                   prefix="invalid run request: ")
    assert [(e.field, e.reason) for e in caught.value.errors] == [
        ("from", "must be an RFC 3339 date-time such as 2024-01-01T00:00:00.001Z"),
        ("to", "is required"),
        ("extra", "is not a field of a run request"),
    ]
    assert caught.value.detail.startswith("invalid run request: ")
    with pytest.raises(InvalidInput) as caught:
        body_model(request(b'{"from": "2024-01-02T00:00:00Z", "to": "2024-01-01T00:00:00Z"}'), RunRequest,
                   "a run request")
    assert [(e.field, e.reason) for e in caught.value.errors] == [("to", "must be after from")]
    ok = body_model(request(b'{"from": "2024-01-01T00:00:00Z", "to": "2024-01-01T01:00:00.5+01:00"}'), RunRequest,
                    "a run request")
    assert ok.to_ms - ok.from_ms == 500


def get(query: str) -> APIGatewayProxyEventV2:
    return request(method="GET", query=query, content_type=None)


def test_query_models_refuse_unknown_and_out_of_range_parameters() -> None:
    with pytest.raises(InvalidInput) as caught:
        query_model(get("limit=0&bogus=1"), ListRunsQuery)
    assert {(e.field, e.reason) for e in caught.value.errors} == {
        ("limit", "must be an integer from 1 to 100"), ("bogus", "is not a supported query parameter")}
    assert query_model(get(""), ListRunsQuery).limit == 20
    assert query_model(get("limit=100"), ListRunsQuery).limit == 100


def test_event_listing_defaults_to_the_last_day_and_checks_its_range() -> None:
    now = 1_700_000_000_000
    query = query_model(get(""), ListEventsQuery, context={"now_ms": now})
    assert (query.from_ms, query.to_ms, query.limit) == (now - 86_400_000, now, 100)
    for bad, field in [("from=2024-01-02T00:00:00Z&to=2024-01-01T00:00:00Z", "from"),
                       ("from=2020-01-01T00:00:00Z&to=2024-01-01T00:00:00Z", "from"),
                       ("ingestedAtFrom=2024-01-02T00:00:00Z&ingestedAtTo=2024-01-01T00:00:00Z", "ingestedAtFrom"),
                       ("limit=101", "limit"), ("id=", "id"), ("to=soon", "to"), ("from_ms=1", "from_ms")]:
        with pytest.raises(InvalidInput) as caught:
            query_model(get(bad), ListEventsQuery, context={"now_ms": now})
        assert field in [e.field for e in caught.value.errors], bad


def usage(query: str) -> dict[str, Any]:
    parsed = usage_query_params(get(query))
    return parsed.model_dump(by_alias=True, exclude_defaults=True)


def test_usage_query_strings_take_repeats_lists_and_filters() -> None:
    assert usage("subject=a&subject=b&subject=a&groupBy=x,y&groupBy=z&filterGroupBy[x]=1&filterGroupBy[x]=2") == {
        "subject": ["a", "b"], "groupBy": ["x", "y", "z"], "filterGroupBy": {"x": ["1", "2"]}}
    assert usage('filterGroupBy={"x":"1"}&windowSize=HOUR')["filterGroupBy"] == {"x": ["1"]}
    for bad, field in [("from=1&from=2", "from"), ("filterGroupBy=oops", "filterGroupBy"),
                       ("windowSize=WEEK", "windowSize"), ("windowTimeZone=Mars/Olympus", "windowTimeZone"),
                       ("bogus=1", "bogus")]:
        with pytest.raises(InvalidInput) as caught:
            usage_query_params(get(bad))
        assert field in [e.field for e in caught.value.errors], bad


def test_usage_query_bodies_refuse_unknown_fields_by_name() -> None:
    with pytest.raises(InvalidInput) as caught:
        usage_query_params(request(b'{"windowSize": "DAY", "colour": "red"}'))
    assert [(e.field, e.reason) for e in caught.value.errors] == [("colour", "is not a supported query field")]
    assert isinstance(usage_query_params(request(b'{"subject": "a"}')), UsageQueryParameters)
