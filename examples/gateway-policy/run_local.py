"""Invoke the example API (app.py) as API Gateway would, against a local stack (`make dev`).

    make dev                                            # in one shell
    .venv/bin/python examples/gateway-policy/run_local.py  # in another (METERLINE_URL overrides the address)

It gives a new customer an entitlement of 3 API calls (the feature `example-api-calls` on the example meter
`api_requests_total`), then sends HTTP API (payload 2.0) events with a JWT authorizer's claims: the 4th call
is answered 403 and not metered, a call without a subject 401, and a retried invocation is not counted twice.
It ends by reading the customer's usage back from Meterline, and exits non-zero if anything differs.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

METERLINE_URL = os.environ.setdefault("METERLINE_URL", "http://127.0.0.1:8888")
FEATURE = "example-api-calls"
os.environ["REQUIRED_FEATURES"] = FEATURE
os.environ["ACCESS_CACHE_SECONDS"] = "0"  # so the demo sees access end at the 4th call, not 5 s later

sys.path.insert(0, str(Path(__file__).parent))
import app  # noqa: E402  (reads the environment set above)


@dataclass
class LambdaContext:
    """What Powertools reads of the context Lambda passes."""

    function_name: str = "example-api"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:example-api"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))


def http_api_event(method: str, route: str, path: str, claims: dict[str, str] | None,
                   body: str | None = None) -> dict[str, Any]:
    """An HTTP API request, payload format 2.0, as AWS documents it."""
    context: dict[str, Any] = {
        "accountId": "123456789012", "apiId": "example", "domainName": "example.execute-api.us-east-1.amazonaws.com",
        "domainPrefix": "example", "requestId": str(uuid.uuid4()), "routeKey": f"{method} {route}",
        "stage": "$default", "time": datetime.now(UTC).strftime("%d/%b/%Y:%H:%M:%S +0000"),
        "timeEpoch": int(time.time() * 1000),
        "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1",
                 "userAgent": "run_local"},
    }
    if claims is not None:
        context["authorizer"] = {"jwt": {"claims": claims, "scopes": None}}
    return {"version": "2.0", "routeKey": f"{method} {route}", "rawPath": path, "rawQueryString": "",
            "headers": {"content-type": "text/plain"}, "requestContext": context, "body": body,
            "isBase64Encoded": False}


def invoke(event: dict[str, Any], expected: int) -> dict[str, Any]:
    answer: dict[str, Any] = app.lambda_handler(event, LambdaContext())
    context = event["requestContext"]
    print(f"{context['http']['method']} {context['http']['path']} -> {answer['statusCode']} {answer.get('body')}")
    if answer["statusCode"] != expected:
        sys.exit(f"expected {expected}")
    return answer


def meterline(method: str, path: str, **options: Any) -> Any:
    key = os.environ.get("METERLINE_API_KEY")
    headers = {"authorization": f"Bearer {key}"} if key else {}
    answer = httpx.request(method, f"{METERLINE_URL}{path}", headers=headers, timeout=10, **options)
    if answer.status_code >= 300 and answer.status_code != 409:
        sys.exit(f"{method} {path}: {answer.status_code} {answer.text}")
    return answer.json() if answer.content else None


def main() -> None:
    customer = f"customer-{uuid.uuid4().hex[:6]}"
    meterline("POST", "/api/v1/features", json={"key": FEATURE, "name": "Example API calls",
                                                 "meterSlug": "api_requests_total"})  # 409: made by an earlier run
    meterline("POST", f"/api/v1/subjects/{customer}/entitlements",
              json={"type": "metered", "featureKey": FEATURE, "issueAfterReset": 3,
                    "usagePeriod": {"interval": "MONTH"}})
    print(f"{customer} may make 3 calls of {FEATURE}")

    claims = {"sub": customer, "scope": "items"}
    first = http_api_event("GET", "/items/{item_id}", "/items/42", claims)
    invoke(first, 200)
    invoke(first, 200)  # Lambda retried the same request: the same event id, counted once
    invoke(http_api_event("POST", "/summaries", "/summaries", claims, "Meterline meters every call exactly once."), 200)
    invoke(http_api_event("GET", "/items/{item_id}", "/items/7", claims), 200)
    deadline = time.monotonic() + 15  # until the 3 calls are counted
    while meterline("GET", f"/api/v1/subjects/{customer}/entitlements/{FEATURE}/value")["hasAccess"]:
        if time.monotonic() > deadline:
            sys.exit("the 3 calls were not counted within 15 s")
        time.sleep(0.25)
    invoke(http_api_event("GET", "/items/{item_id}", "/items/8", claims), 403)
    invoke(http_api_event("GET", "/items/{item_id}", "/items/9", None), 401)

    now = datetime.now(UTC)
    usage = meterline("GET", "/api/v1/meters/api_requests_total/query", params={
        "subject": customer, "groupBy": "route", "from": (now - timedelta(hours=1)).isoformat(),
        "to": (now + timedelta(minutes=1)).isoformat()})
    by_route = {row["groupBy"]["route"]: row["value"] for row in usage["data"]}
    print(f"api_requests_total of {customer}: {json.dumps(by_route)}")
    print(f"entitlement value: {meterline('GET', f'/api/v1/subjects/{customer}/entitlements/{FEATURE}/value')}")
    if by_route != {"/items/{item_id}": 2, "/summaries": 1}:
        sys.exit("unexpected usage")


if __name__ == "__main__":
    main()
