"""The entitlement authorizer (EntitlementAuthorizer) against real tables: features and entitlements made
through the entitlements API, usage metered from API Gateway access logs (ApiMetering's function) and
counted by the real processor, and the authorizer invoked with the events API Gateway documents (HTTP
API payload 2.0; REST API REQUEST and TOKEN). Its answers follow the entitlement values the API gives,
in the documented response shapes, and it never writes. Times come from a fixed clock."""

from __future__ import annotations

import logging
import os
from typing import Any

import pytest

from functions.access_log_metering import handler as access_log_metering
from functions.api import handler as api
from functions.entitlement_authorizer import handler as authorizer
from functions.entitlements import handler as entitlements
from functions.processor import handler as processor
from meterline import bootstrap
from meterline.domain.access_logs import ACCESS_LOG_METERING_ENV, AccessLogMeteringConfig
from meterline.domain.entitlement_gate import ENTITLEMENT_GATE_ENV, EntitlementGateConfig
from meterline.domain.timeutil import parse_rfc3339, to_epoch_ms
from meterline.storage.meters_store import MetersStore
from tests.conftest import lambda_context, scan_all, stream_records
from tests.integration.access_logs import request, subscription_event
from tests.integration.http import call

JSON = "application/json"
NOW = "2024-01-15T12:00:00Z"
SUBJECT_HEADER = "X-Customer-Id"
ROUTE_ARN = "arn:aws:execute-api:us-east-1:123456789012:abcdef123/prod/GET/pets/{id}"
METHOD_ARN = "arn:aws:execute-api:us-east-1:123456789012:abcdef123/prod/GET/pets/7"
WHOLE_STAGE = "arn:aws:execute-api:us-east-1:123456789012:abcdef123/prod/*/*"


def ms(text: str) -> int:
    return to_epoch_ms(parse_rfc3339(text))


@pytest.fixture
def clock(aws: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Required: `api_calls` (metered by the example meter api_requests_total) and `beta` (boolean).
    customer-1 may make 2 calls a month and has beta; customer-2 may make 100 and has no beta."""
    now = {"ms": ms(NOW)}
    monkeypatch.setattr(entitlements, "now_ms", lambda: now["ms"])
    monkeypatch.setattr(authorizer, "now_ms", lambda: now["ms"])
    monkeypatch.setenv(ENTITLEMENT_GATE_ENV, EntitlementGateConfig(
        namespace="default", required_entitlements=["api_calls", "beta"],
        subject_source=f"$request.header.{SUBJECT_HEADER}").model_dump_json(by_alias=True))
    monkeypatch.setenv(ACCESS_LOG_METERING_ENV, AccessLogMeteringConfig(
        namespace="default", meters=[{"type": "request"}]).model_dump_json(by_alias=True))
    MetersStore().set_backfill("default", "api_requests_total", {"status": "completed"})
    bootstrap.reset()
    ok(send("POST", "/api/v1/features", {"key": "api_calls", "name": "API calls", "meterSlug": "api_requests_total"}))
    ok(send("POST", "/api/v1/features", {"key": "beta", "name": "Beta"}))
    monthly = {"type": "metered", "featureKey": "api_calls", "usagePeriod": {"interval": "MONTH"}}
    ok(send("POST", "/api/v1/subjects/customer-1/entitlements", {**monthly, "issueAfterReset": 2}))
    ok(send("POST", "/api/v1/subjects/customer-1/entitlements", {"type": "boolean", "featureKey": "beta"}))
    ok(send("POST", "/api/v1/subjects/customer-2/entitlements", {**monthly, "issueAfterReset": 100}))
    return now


def send(method: str, path: str, body: Any = None) -> Any:
    return call(entitlements, method, path, body=body, content_type=JSON)


def ok(reply: Any) -> Any:
    assert reply.status in (200, 201, 204), reply.body
    return reply.json() if reply.body else None


def value(subject: str, feature: str) -> dict[str, Any]:
    result: dict[str, Any] = ok(send("GET", f"/api/v1/customers/{subject}/entitlements/{feature}/value"))
    return result


# --- the events API Gateway sends (docs: http-api-lambda-authorizer, apigateway-lambda-authorizer-input) -----

def http_api_event(subject: str | None) -> dict[str, Any]:
    """HTTP API, payload format 2.0: identitySource holds the values of the authorizer's identity sources."""
    headers = {"accept": "application/json", "host": "abcdef123.execute-api.us-east-1.amazonaws.com"}
    if subject is not None:
        headers[SUBJECT_HEADER.lower()] = subject
    return {
        "version": "2.0",
        "type": "REQUEST",
        "routeArn": ROUTE_ARN,
        "identitySource": [subject] if subject is not None else None,
        "routeKey": "GET /pets/{id}",
        "rawPath": "/pets/7",
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012", "apiId": "abcdef123", "domainName": headers["host"],
            "domainPrefix": "abcdef123",
            "http": {"method": "GET", "path": "/pets/7", "protocol": "HTTP/1.1", "sourceIp": "198.51.100.7",
                     "userAgent": "curl/8.5.0"},
            "requestId": "Jt1Vq0aAoAMEbWw=", "routeKey": "GET /pets/{id}", "stage": "prod",
            "time": "15/Jan/2024:12:00:00 +0000", "timeEpoch": ms(NOW),
        },
        "pathParameters": {"id": "7"},
    }


def rest_request_event(headers: dict[str, str]) -> dict[str, Any]:
    """REST API, REQUEST authorizer."""
    return {
        "type": "REQUEST",
        "methodArn": METHOD_ARN,
        "resource": "/pets/{id}",
        "path": "/pets/7",
        "httpMethod": "GET",
        "headers": {"Host": "abcdef123.execute-api.us-east-1.amazonaws.com", **headers},
        "multiValueHeaders": {key: [v] for key, v in headers.items()},
        "queryStringParameters": {},
        "pathParameters": {"id": "7"},
        "stageVariables": {},
        "requestContext": {"path": "/prod/pets/7", "accountId": "123456789012", "resourceId": "05c7jb",
                           "stage": "prod", "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
                           "identity": {"sourceIp": "198.51.100.7", "userAgent": "curl/8.5.0"},
                           "resourcePath": "/pets/{id}", "httpMethod": "GET", "apiId": "abcdef123"},
    }


def authorize(event: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = authorizer.handler(event, lambda_context())
    return result


def iam_policy(principal: str, effect: str, subject: str | None = None) -> dict[str, Any]:
    """The documented REST answer: a policy for every method of the stage (the answer is cached per subject)."""
    answer: dict[str, Any] = {"principalId": principal, "policyDocument": {"Version": "2012-10-17", "Statement": [
        {"Action": "execute-api:Invoke", "Effect": effect, "Resource": [WHOLE_STAGE]}]}}
    if subject is not None:
        answer["context"] = {"subject": subject}
    return answer


def meter_calls(*request_ids: str, delivered: int = 1) -> None:
    """Requests of customer-1 logged by the API's stage, metered and counted."""
    batch = [request(request_id, subject="customer-1", at_ms=ms(NOW) + 30_000 * (i + 1))
             for i, request_id in enumerate(request_ids)]
    for _ in range(delivered):
        access_log_metering.handler(subscription_event(batch), lambda_context())
    assert processor.handler({"Records": stream_records(os.environ["EVENTS_TABLE"])},
                             lambda_context()) == {"batchItemFailures": []}


# --- tests --------------------------------------------------------------------------------------------

def test_an_http_api_is_answered_with_simple_responses(clock: dict[str, int], caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    caplog.set_level(logging.INFO, logger="meterline")
    assert authorize(http_api_event("customer-1")) == {"isAuthorized": True, "context": {"subject": "customer-1"}}
    assert authorize(http_api_event("customer-2")) == {"isAuthorized": False}  # no beta
    (denial,) = [r.__dict__ for r in caplog.records if r.getMessage().startswith("denied")]
    assert (denial["subject"], denial["denied"]) == ("customer-2", {"beta": "no access"})
    assert authorize(http_api_event("nobody")) == {"isAuthorized": False}  # an unknown subject has no entitlement
    assert authorize(http_api_event(None)) == {"isAuthorized": False}
    assert value("customer-2", "beta") == {"hasAccess": False}


def test_a_rest_api_is_answered_with_an_iam_policy_for_the_whole_stage(clock: dict[str, int]) -> None:
    # headers match case-insensitively, as HTTP has it
    assert authorize(rest_request_event({"x-customer-id": "customer-1"})) == iam_policy(
        "customer-1", "Allow", "customer-1")
    assert authorize(rest_request_event({SUBJECT_HEADER: "customer-2"})) == iam_policy("customer-2", "Deny")
    assert authorize(rest_request_event({SUBJECT_HEADER: "nobody"})) == iam_policy("nobody", "Deny")
    assert authorize(rest_request_event({})) == iam_policy("anonymous", "Deny")


def test_a_rest_token_authorizer_takes_the_token_as_the_subject(clock: dict[str, int]) -> None:
    token = {"type": "TOKEN", "authorizationToken": "customer-1", "methodArn": METHOD_ARN}
    assert authorize(token) == iam_policy("customer-1", "Allow", "customer-1")
    assert authorize({**token, "authorizationToken": "customer-2"}) == iam_policy("customer-2", "Deny")


def test_metered_calls_that_use_up_the_allowance_turn_the_answer_to_deny(clock: dict[str, int]) -> None:
    meter_calls("Jt1Vq0aAoAMEbWw=", delivered=2)  # a log batch delivered twice counts once
    clock["ms"] = ms("2024-01-15T12:05:00Z")
    assert value("customer-1", "api_calls") == {"hasAccess": True, "balance": 1, "usage": 1, "overage": 0}
    assert authorize(http_api_event("customer-1"))["isAuthorized"] is True

    meter_calls("Jt1Vq0aAoAMEbWw=", "Jt1Vq0bBoAMEbWx=")  # the first one again, and one more
    assert value("customer-1", "api_calls") == {"hasAccess": False, "balance": 0, "usage": 2, "overage": 0}
    assert authorize(http_api_event("customer-1")) == {"isAuthorized": False}
    assert authorize(rest_request_event({SUBJECT_HEADER: "customer-1"})) == iam_policy("customer-1", "Deny")

    clock["ms"] = ms("2024-02-15T12:01:00Z")  # the next month's allowance
    assert authorize(http_api_event("customer-1"))["isAuthorized"] is True


def test_a_feature_whose_value_cannot_be_computed_denies(clock: dict[str, int]) -> None:
    assert call(api, "DELETE", "/api/v1/meters/api_requests_total").status == 204
    clock["ms"] = ms("2024-01-15T12:05:00Z")  # usage to read, from a meter that is gone
    assert send("GET", "/api/v1/customers/customer-1/entitlements/api_calls/value").status == 404
    assert authorize(http_api_event("customer-1")) == {"isAuthorized": False}


def test_the_authorizer_never_writes_where_a_value_request_keeps_a_snapshot(aws: Any, clock: dict[str, int]) -> None:
    catalog = os.environ["CATALOG_TABLE"]
    clock["ms"] = ms("2024-03-20T00:00:00Z")  # two period resets ago, older than the snapshot grace
    before = scan_all(aws, catalog)
    assert authorize(http_api_event("customer-1"))["isAuthorized"] is True
    assert scan_all(aws, catalog) == before
    assert value("customer-1", "api_calls")["hasAccess"] is True  # the entitlements API keeps one
    assert scan_all(aws, catalog) != before

