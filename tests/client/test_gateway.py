"""`MeteringPolicy` in Powertools resolvers (HTTP API and REST API), invoked with API Gateway's documented events,
against a fake Meterline API: subjects from each kind of authorizer, 401 and 403 before the route, one event per
meter after it, status code matching, `set_meters`, and retries of the same request."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.api_gateway import ApiGatewayResolver
from aws_lambda_powertools.event_handler.exceptions import NotFoundError

from meterline_client import Meterline
from meterline_client.gateway import MeteringPolicy, StatusCodes, set_meters
from tests.client.apigw_events import (
    http_api_event,
    iam_authorizer_v2,
    jwt_authorizer,
    lambda_authorizer_v2,
    rest_api_event,
)
from tests.client.fake_meterline import FakeMeterlineAPI
from tests.conftest import lambda_context

API_REQUEST = {"type": "api-request", "data": {"count": 1}}


def build_app(resolver: type[ApiGatewayResolver], policy: MeteringPolicy) -> tuple[ApiGatewayResolver, list[str]]:
    """A small API behind the policy; the list records which routes ran."""
    app = resolver()
    app.use(middlewares=[policy])
    ran: list[str] = []

    @app.get("/items/<item_id>")
    def get_item(item_id: str) -> dict[str, str]:
        ran.append("get_item")
        return {"id": item_id}

    @app.post("/generate")
    def generate() -> dict[str, int]:
        ran.append("generate")
        set_meters(app, [{"type": "tokens", "data": {"tokens": 7, "model": "small"}},
                         {"type": "audit", "id": "audit-1", "subject": "auditor", "data": {"count": 1}}])
        return {"tokens": 7}

    @app.get("/quiet")
    def quiet() -> dict[str, str]:
        ran.append("quiet")
        set_meters(app, [])
        return {}

    @app.get("/missing")
    def missing() -> dict[str, str]:
        ran.append("missing")
        raise NotFoundError("no such thing")

    @app.get("/not-modified")
    def not_modified() -> Response[str]:
        ran.append("not_modified")
        return Response(status_code=304, body="")

    @app.get("/broken")
    def broken() -> Response[str]:
        ran.append("broken")
        return Response(status_code=500, body="")

    return app, ran


def invoke(app: ApiGatewayResolver, event: dict[str, Any]) -> tuple[int, Any]:
    answer = app.resolve(event, lambda_context())
    body = answer.get("body")
    return answer["statusCode"], json.loads(body) if body else None


def content_type(answer: dict[str, Any]) -> str:
    """REST answers carry multi-value headers, HTTP API answers plain ones."""
    if "multiValueHeaders" in answer:
        return str(answer["multiValueHeaders"]["Content-Type"][0])
    return str(answer["headers"]["Content-Type"])


@pytest.fixture
def policy(meterline: Meterline) -> Callable[..., MeteringPolicy]:
    def make(**options: Any) -> MeteringPolicy:
        return MeteringPolicy(client=meterline, **{"meter": API_REQUEST, **options})
    return make


def test_http_api_with_jwt_claims_meters_one_event_per_request(api: FakeMeterlineAPI,
                                                               policy: Callable[..., MeteringPolicy]) -> None:
    app, ran = build_app(APIGatewayHttpResolver, policy())
    event = http_api_event("GET", "/items/42", "GET /items/{item_id}", request_id="req-1",
                           time_epoch_ms=1_704_067_200_123, authorizer=jwt_authorizer({"sub": "customer-1"}))
    assert invoke(app, event) == (200, {"id": "42"})
    # flushed before the Lambda returned: the fake already holds it
    assert api.stored_events == [{
        "specversion": "1.0", "id": "req-1-api-request", "source": "api-gateway", "type": "api-request",
        "subject": "customer-1", "time": "2024-01-01T00:00:00.123Z",
        "data": {"method": "GET", "route": "/items/{item_id}", "status": 200, "count": 1}}]
    assert ran == ["get_item"]


def test_a_retried_request_is_metered_once(api: FakeMeterlineAPI, policy: Callable[..., MeteringPolicy]) -> None:
    app, _ = build_app(APIGatewayHttpResolver, policy())
    event = http_api_event("GET", "/items/1", authorizer=jwt_authorizer({"sub": "customer-1"}), request_id="req-r")
    for _ in range(3):
        assert invoke(app, event)[0] == 200
    assert len(api.batches) == 3 and len(api.stored) == 1  # the same id each time


@pytest.mark.parametrize(("event", "subject_path", "subject"), [
    (http_api_event("GET", "/items/1", authorizer=lambda_authorizer_v2({"customerId": "c-9"})), ".customerId", "c-9"),
    (http_api_event("GET", "/items/1", authorizer=iam_authorizer_v2("arn:aws:iam::111122223333:user/alice")),
     ".userArn", "arn:aws:iam::111122223333:user/alice"),
    (http_api_event("GET", "/items/1", authorizer=jwt_authorizer({"org": {"account": 1234}})), ".org.account", "1234"),
    (rest_api_event("GET", "/items/1", "/items/{item_id}", authorizer={"claims": {"sub": "u-1", "email": "a@b"}}),
     ".sub", "u-1"),
    (rest_api_event("GET", "/items/1", authorizer={"principalId": "user|a1", "tenant": "t-7", "integrationLatency": 3}),
     ".tenant", "t-7"),
    (rest_api_event("GET", "/items/1", user_arn="arn:aws:iam::111122223333:user/bob"), ".userArn",
     "arn:aws:iam::111122223333:user/bob"),
], ids=["http-lambda", "http-iam", "http-jwt-nested", "rest-cognito", "rest-lambda", "rest-iam"])
def test_the_subject_comes_from_each_kind_of_authorizer(api: FakeMeterlineAPI, policy: Callable[..., MeteringPolicy],
                                                       event: dict[str, Any], subject_path: str, subject: str) -> None:
    resolver = APIGatewayHttpResolver if event.get("version") == "2.0" else APIGatewayRestResolver
    app, _ = build_app(resolver, policy(subject_path=subject_path))
    assert invoke(app, event)[0] == 200
    [stored] = api.stored_events
    assert stored["subject"] == subject
    assert stored["data"]["route"] == "/items/{item_id}"  # the app's route template, not the path


@pytest.mark.parametrize("event", [
    http_api_event("GET", "/items/1", authorizer=None),
    http_api_event("GET", "/items/1", authorizer=jwt_authorizer({"email": "no-sub@example.com"})),
    rest_api_event("GET", "/items/1"),
], ids=["http-no-authorizer", "http-no-sub-claim", "rest-no-authorizer"])
def test_no_subject_is_401_and_never_metered(api: FakeMeterlineAPI, policy: Callable[..., MeteringPolicy],
                                            event: dict[str, Any]) -> None:
    resolver = APIGatewayHttpResolver if event.get("version") == "2.0" else APIGatewayRestResolver
    app, ran = build_app(resolver, policy())
    answer = app.resolve(event, lambda_context())
    assert answer["statusCode"] == 401
    assert content_type(answer) == "application/problem+json"
    assert json.loads(answer["body"])["status"] == 401
    assert ran == [] and api.batches == []


def test_a_subject_without_access_is_blocked_before_the_route(api: FakeMeterlineAPI,
                                                             policy: Callable[..., MeteringPolicy],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    api.values[("customer-1", "api-request")] = {"hasAccess": True, "balance": 10, "usage": 0, "overage": 0}
    api.values[("customer-1", "payment-api-access")] = {"hasAccess": False}
    app, ran = build_app(APIGatewayHttpResolver, policy(required_entitlements=["api-request", "payment-api-access",
                                                                               "not-entitled"]))
    event = http_api_event("GET", "/items/1", authorizer=jwt_authorizer({"sub": "customer-1"}))
    status, body = invoke(app, event)
    assert status == 403
    assert body["features"] == ["payment-api-access", "not-entitled"]
    assert "payment-api-access, not-entitled" in body["detail"]
    assert ran == [] and api.batches == []
    assert "payment-api-access, not-entitled" in caplog.text

    app, _ = build_app(APIGatewayHttpResolver, policy(required_entitlements=["payment-api-access"],
                                                      blocked_status=402))
    assert invoke(app, event)[0] == 402


def test_a_subject_with_access_passes(api: FakeMeterlineAPI, policy: Callable[..., MeteringPolicy]) -> None:
    api.values[("customer-1", "api-request")] = {"hasAccess": True, "balance": 10, "usage": 0, "overage": 0}
    app, ran = build_app(APIGatewayRestResolver, policy(required_entitlements=["api-request"]))
    event = rest_api_event("GET", "/items/5", "/items/{item_id}", authorizer={"claims": {"sub": "customer-1"}})
    assert invoke(app, event) == (200, {"id": "5"})
    assert ran == ["get_item"] and len(api.stored) == 1


def test_unavailable_entitlements_answer_503_unless_failing_open(api: FakeMeterlineAPI,
                                                                policy: Callable[..., MeteringPolicy]) -> None:
    api.scripted_values.extend([httpx.ConnectError("connection refused")] * 2)
    event = http_api_event("GET", "/items/1", authorizer=jwt_authorizer({"sub": "customer-1"}))
    app, ran = build_app(APIGatewayHttpResolver, policy(required_entitlements=["api-request"]))
    assert invoke(app, event)[0] == 503 and ran == []

    api.scripted_values.extend([httpx.ConnectError("connection refused")] * 2)
    app, ran = build_app(APIGatewayHttpResolver, policy(required_entitlements=["api-request"], fail_open=True))
    assert invoke(app, event)[0] == 200 and ran == ["get_item"]


@pytest.mark.parametrize(("path", "codes", "status", "metered"), [
    ("/missing", "200-299", 404, False),
    ("/broken", "200-299", 500, False),
    ("/not-modified", "200-299", 304, False),
    ("/not-modified", "200-299,304", 304, True),
    ("/items/1", "201", 200, False),
])
def test_only_matching_statuses_are_metered(api: FakeMeterlineAPI, policy: Callable[..., MeteringPolicy], path: str,
                                           codes: str, status: int, metered: bool) -> None:
    app, _ = build_app(APIGatewayHttpResolver, policy(meter_on_status_codes=codes))
    event = http_api_event("GET", path, authorizer=jwt_authorizer({"sub": "customer-1"}))
    assert invoke(app, event)[0] == status
    assert len(api.stored) == (1 if metered else 0)
    if metered:
        assert api.stored_events[0]["data"]["status"] == status


def test_set_meters_replaces_the_meters_of_one_request(api: FakeMeterlineAPI,
                                                       policy: Callable[..., MeteringPolicy]) -> None:
    app, _ = build_app(APIGatewayRestResolver, policy(event_source="my-gateway"))
    event = rest_api_event("POST", "/generate", authorizer={"principalId": "p", "sub": "customer-1"},
                           request_id="req-g", body={"prompt": "hi"})
    assert invoke(app, event)[0] == 200
    tokens, audit = sorted(api.stored_events, key=lambda stored: stored["type"], reverse=True)
    assert (tokens["id"], tokens["subject"], tokens["source"]) == ("req-g-tokens", "customer-1", "my-gateway")
    assert tokens["data"] == {"method": "POST", "route": "/generate", "status": 200, "tokens": 7, "model": "small"}
    assert (audit["id"], audit["subject"], audit["type"]) == ("audit-1", "auditor", "audit")

    api.stored.clear()
    event = rest_api_event("GET", "/quiet", authorizer={"principalId": "p", "sub": "customer-1"})
    assert invoke(app, event)[0] == 200
    assert api.stored == {}  # an empty list meters nothing

    event = rest_api_event("GET", "/items/3", authorizer={"principalId": "p", "sub": "customer-1"})
    assert invoke(app, event)[0] == 200
    assert [stored["type"] for stored in api.stored_events] == ["api-request"]  # the next request: the defaults


def test_two_meters_of_one_type_get_distinct_ids(api: FakeMeterlineAPI, policy: Callable[..., MeteringPolicy]) -> None:
    app, _ = build_app(APIGatewayHttpResolver, policy(meter=[API_REQUEST, {"type": "api-request",
                                                                           "data": {"count": 2}}]))
    event = http_api_event("GET", "/items/1", authorizer=jwt_authorizer({"sub": "c"}), request_id="req-2")
    invoke(app, event)
    invoke(app, event)
    assert sorted(event_id for _, event_id in api.stored) == ["req-2-api-request", "req-2-api-request-2"]


def test_undelivered_usage_does_not_fail_the_request(api: FakeMeterlineAPI, policy: Callable[..., MeteringPolicy],
                                                     meterline: Meterline,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    api.down = True
    app, _ = build_app(APIGatewayHttpResolver, policy(flush_timeout_seconds=0.2))
    event = http_api_event("GET", "/items/1", authorizer=jwt_authorizer({"sub": "customer-1"}))
    assert invoke(app, event) == (200, {"id": "1"})
    assert meterline.pending == 1 and "not delivered" in caplog.text
    api.down = False
    meterline.flush()
    assert len(api.stored) == 1  # kept and delivered later


def test_usage_that_cannot_be_sent_is_logged_and_the_answer_kept(api: FakeMeterlineAPI, meterline: Meterline,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    app = APIGatewayHttpResolver()
    app.use(middlewares=[MeteringPolicy(client=meterline, meter=API_REQUEST)])

    @app.get("/odd")
    def odd() -> dict[str, str]:
        set_meters(app, {"type": "odd", "data": {"at": object()}})  # not JSON
        return {"ok": "yes"}

    event = http_api_event("GET", "/odd", authorizer=jwt_authorizer({"sub": "customer-1"}))
    assert invoke(app, event) == (200, {"ok": "yes"})
    assert "could not be buffered" in caplog.text and meterline.pending == 0


def test_status_code_specs() -> None:
    codes = StatusCodes("200-299, 304")
    assert [status in codes for status in (199, 200, 250, 299, 300, 304, 404)] == [
        False, True, True, True, False, True, False]
    for bad in ("", "2xx", "299-200", "200-700", "200,,204"):
        with pytest.raises(ValueError):
            StatusCodes(bad)


def test_meters_are_checked(meterline: Meterline) -> None:
    with pytest.raises(ValueError, match="type"):
        MeteringPolicy(client=meterline, meter={"data": {"count": 1}})
    with pytest.raises(ValueError, match="unknown keys"):
        MeteringPolicy(client=meterline, meter={"type": "x", "value": 1})
    with pytest.raises(TypeError, match="list of feature keys"):
        MeteringPolicy(client=meterline, meter=API_REQUEST, required_entitlements="api-request")
