"""Access-log records as API Gateway writes them for a metered stage, and the CloudWatch Logs
subscription events that carry them to a Lambda (AWS's documented shapes)."""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

from meterline.domain.access_logs import ApiKind, access_log_format
from meterline.domain.timeutil import now_ms

SUBJECT_PATH = "$context.authorizer.claims.sub"
LOG_GROUP = "/aws/vendedlogs/meterline/api-access"


def access_log_line(kind: ApiKind = ApiKind.HTTP, **context: str) -> str:
    """A line as API Gateway writes it: the stage's format with each $context variable replaced by its
    value, "-" for one without a value."""
    return json.dumps({field: context.get(variable.removeprefix("$context."), "-")
                       for field, variable in access_log_format(kind, SUBJECT_PATH).items()})


def request(request_id: str, *, subject: str | None = "customer-1", status: int = 200, method: str = "GET",
            route: str = "/pets/{id}", at_ms: int | None = None, kind: ApiKind = ApiKind.HTTP) -> str:
    context = {"requestId": request_id, "requestTimeEpoch": str(at_ms or now_ms() - 60_000), "httpMethod": method,
               "status": str(status), "responseLatency": "42"}
    if kind is ApiKind.HTTP:
        context["routeKey"] = f"{method} {route}"
    else:
        context["resourcePath"] = route
    if subject is not None:
        context["authorizer.claims.sub"] = subject
    return access_log_line(kind, **context)


def subscription_event(lines: list[str], message_type: str = "DATA_MESSAGE") -> dict[str, Any]:
    """CloudWatch Logs' event for a subscribed Lambda (docs: services-cloudwatchlogs)."""
    payload = {
        "messageType": message_type,
        "owner": "123456789012",
        "logGroup": LOG_GROUP,
        "logStream": "a5b7c2ef1d",
        "subscriptionFilters": ["MeteredApi-dev-MeteringSubscription"],
        "logEvents": [{"id": f"3735{i:052d}", "timestamp": now_ms(), "message": line} for i, line in enumerate(lines)],
    }
    return {"awslogs": {"data": base64.b64encode(gzip.compress(json.dumps(payload).encode())).decode()}}
