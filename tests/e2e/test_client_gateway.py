"""`MeteringPolicy` end to end: a Powertools API (HTTP API and REST API resolvers) invoked with API Gateway's
documented events, metering into and checking entitlements of `meterline dev`. Its numbers are read back
through `/query` and the entitlement value: metered calls count once, a retried invocation of the same request
does not count again, and blocked calls are not metered."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, APIGatewayRestResolver
from aws_lambda_powertools.event_handler.api_gateway import ApiGatewayResolver

from meterline_client import Meterline
from meterline_client.gateway import MeteringPolicy, set_meters
from tests.client.apigw_events import http_api_event, jwt_authorizer, rest_api_event
from tests.client.stack import entitle, settled_usage, stored_ids, value, wait_value
from tests.conftest import lambda_context

pytestmark = pytest.mark.e2e

REQUEST = {"type": "request"}  # the example meters' API request event: api_requests_total counts it by method, route


@pytest.fixture
def client(local_stack: str) -> Iterator[Meterline]:
    with Meterline(local_stack, cache_seconds=0, exit_flush_seconds=None) as meterline:
        yield meterline


def metered_api(resolver: type[ApiGatewayResolver], policy: MeteringPolicy) -> ApiGatewayResolver:
    app = resolver()
    app.use(middlewares=[policy])

    @app.get("/items/<item_id>")
    def get_item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    @app.post("/generate")
    def generate() -> dict[str, int]:
        set_meters(app, [{"type": "request", "data": {"ingress_bytes": 11}},
                         {"type": "prompt", "data": {"tokens": 7, "model": "gpt-4", "type": "output"}}])
        return {"tokens": 7}

    return app


EventFor = Callable[..., dict[str, Any]]


def http_event(method: str, path: str, subject: str, request_id: str) -> dict[str, Any]:
    return http_api_event(method, path, f"{method} {path}", request_id=request_id,
                          authorizer=jwt_authorizer({"sub": subject, "scope": "api"}))


def rest_event(method: str, path: str, subject: str, request_id: str) -> dict[str, Any]:
    return rest_api_event(method, path, request_id=request_id,
                          authorizer={"principalId": subject, "subject": subject, "integrationLatency": 12})


@pytest.mark.parametrize(("resolver", "event_for", "subject_path"), [
    (APIGatewayHttpResolver, http_event, ".sub"),
    (APIGatewayRestResolver, rest_event, ".subject"),
], ids=["http-api-v2", "rest-api-v1"])
def test_metered_once_retries_free_and_blocked_calls_not_metered(
        local_stack: str, client: Meterline, resolver: type[ApiGatewayResolver], event_for: EventFor,
        subject_path: str) -> None:
    subject, feature = f"gw-{uuid.uuid4().hex[:8]}", f"gw_calls_{uuid.uuid4().hex[:8]}"
    entitle(local_stack, subject, feature, "api_requests_total", allowance=3)
    app = metered_api(resolver, MeteringPolicy(client=client, meter=REQUEST,
                                               required_entitlements=[feature], subject_path=subject_path))

    def invoke(event: dict[str, Any]) -> int:
        return int(app.resolve(event, lambda_context())["statusCode"])

    # Request ids are unique, as API Gateway's are: (source, id) is the idempotency key of every subject's events.
    first = event_for("GET", "/items/1", subject, f"{subject}-1")
    assert invoke(first) == 200
    assert invoke(first) == 200  # Lambda retried the same request
    assert invoke(event_for("GET", "/items/2", subject, f"{subject}-2")) == 200
    assert invoke(event_for("POST", "/generate", subject, f"{subject}-3")) == 200  # its own meters
    assert wait_value(local_stack, subject, feature, usage=3)["hasAccess"] is False

    blocked = event_for("GET", "/items/4", subject, f"{subject}-4")
    answer = app.resolve(blocked, lambda_context())
    assert answer["statusCode"] == 403 and json.loads(answer["body"])["features"] == [feature]

    assert settled_usage(local_stack, "api_requests_total", subject, 3) == 3
    assert settled_usage(local_stack, "api_requests_total", subject, 2, route="/items/{item_id}") == 2
    assert settled_usage(local_stack, "api_request_ingress_bytes", subject, 11) == 11  # set_meters' data
    assert settled_usage(local_stack, "tokens_total", subject, 7) == 7  # and its second meter
    assert stored_ids(local_stack, subject) == [f"{subject}-1-request", f"{subject}-2-request",
                                                f"{subject}-3-prompt", f"{subject}-3-request"]
    assert value(local_stack, subject, feature) == {"hasAccess": False, "balance": 0, "usage": 3, "overage": 0}


def test_a_request_without_a_subject_is_401_and_not_metered(local_stack: str, client: Meterline) -> None:
    app = metered_api(APIGatewayHttpResolver, MeteringPolicy(client=client, meter=REQUEST))
    anonymous = http_api_event("GET", "/items/1", "GET /items/{item_id}", request_id=f"anon-{uuid.uuid4().hex}",
                               authorizer=jwt_authorizer({"email": "someone@example.com"}))
    assert app.resolve(anonymous, lambda_context())["statusCode"] == 401
    assert client.pending == 0 and stored_ids(local_stack, "unknown") == []
