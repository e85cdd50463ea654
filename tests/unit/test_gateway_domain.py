"""The gateway constructs' domain rules: metered status codes, access log lines read back into events,
and the entitlement authorizer's subject source."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from meterline.domain.access_logs import (
    AccessLogMeteringConfig,
    AccessLogRecord,
    ApiKind,
    StatusCodes,
    access_log_format,
)
from meterline.domain.entitlement_gate import EntitlementGateConfig, SubjectSource


@given(st.integers(100, 599))
def test_status_codes_match_their_ranges_and_single_codes(status: int) -> None:
    codes = StatusCodes.parse("200-299, 304")
    assert (status in codes) == (200 <= status <= 299 or status == 304)


@pytest.mark.parametrize("text", ["2xx", "", "200-", "99", "600", "300-200", "200,,304"])
def test_status_codes_refuse_what_is_not_a_code_or_range(text: str) -> None:
    with pytest.raises(ValueError):
        StatusCodes.parse(text)


def line(**fields: str) -> str:
    base = {"requestId": "r-1", "requestTimeEpoch": "1704067200123", "httpMethod": "GET", "route": "GET /pets/{id}",
            "status": "200", "responseLatency": "-", "subject": "customer-1"}
    return json.dumps({**base, **fields})


def test_a_line_becomes_one_event_per_meter_with_the_route_template_and_no_absent_values() -> None:
    config = AccessLogMeteringConfig(namespace="default", meters=[{"type": "request"},
                                                                  {"type": "api-call", "data": {"route": "any"}}])
    record = AccessLogRecord.model_validate_json(line())
    assert (record.route, record.latency_ms) == ("/pets/{id}", None)
    assert list(record.events(config)) == [
        {"specversion": "1.0", "id": "r-1-request", "source": "api-gateway", "type": "request",
         "subject": "customer-1", "time": "2024-01-01T00:00:00.123Z",
         "data": {"method": "GET", "route": "/pets/{id}", "status": 200}},
        # a meter's own data wins over the request's
        {"specversion": "1.0", "id": "r-1-api-call", "source": "api-gateway", "type": "api-call",
         "subject": "customer-1", "time": "2024-01-01T00:00:00.123Z",
         "data": {"method": "GET", "route": "any", "status": 200}},
    ]


@pytest.mark.parametrize(("route", "expected"), [("/pets/{id}", "/pets/{id}"), ("$default", "$default"),
                                                 ("ANY /{proxy+}", "/{proxy+}"), ("GET /", "/")])
def test_the_route_is_the_template_without_the_http_apis_method(route: str, expected: str) -> None:
    assert AccessLogRecord.model_validate_json(line(route=route)).route == expected


def test_a_request_without_a_subject_has_none() -> None:
    assert AccessLogRecord.model_validate_json(line(subject="-")).subject is None
    assert AccessLogRecord.model_validate_json(line(subject="")).subject is None


def test_the_log_format_and_the_reader_agree_for_both_kinds_of_api() -> None:
    for kind in ApiKind:
        fields = access_log_format(kind, "$context.authorizer.claims.sub")
        assert set(fields) == {"requestId", "requestTimeEpoch", "httpMethod", "route", "status", "responseLatency",
                               "subject"}
        assert set(fields) == {field.alias or name for name, field in AccessLogRecord.model_fields.items()}
    with pytest.raises(ValueError, match="\\$context variable"):
        access_log_format(ApiKind.HTTP, '$context.a"b')


def test_the_authorizer_reads_the_subject_from_its_header_in_any_case_or_its_query_parameter() -> None:
    header = SubjectSource.parse("$request.header.X-Customer-Id")
    assert (header.http_identity_source, header.rest_identity_source) == (
        "$request.header.X-Customer-Id", "method.request.header.X-Customer-Id")
    assert header.value_in({"x-customer-id": "c-1"}, None) == "c-1"
    assert header.value_in({"X-Customer-Id": ""}, {"X-Customer-Id": "c-2"}) is None
    query = SubjectSource.parse("$request.querystring.customer")
    assert query.rest_identity_source == "method.request.querystring.customer"
    assert query.value_in({"customer": "c-1"}, {"customer": "c-2"}) == "c-2"
    for wrong in ("$context.authorizer.claims.sub", "method.request.header.X", "$request.header.", "$stageVariables.x"):
        with pytest.raises(ValueError):
            SubjectSource.parse(wrong)


def test_required_entitlements_are_feature_keys_each_once() -> None:
    config = EntitlementGateConfig(namespace="acme", required_entitlements=["api_calls", "beta", "api_calls"],
                                   subject_source="$request.header.X-Customer-Id")
    assert config.required_entitlements == ["api_calls", "beta"]
    with pytest.raises(ValidationError):
        EntitlementGateConfig(namespace="acme", required_entitlements=["API Calls"],
                              subject_source="$request.header.X-Customer-Id")
