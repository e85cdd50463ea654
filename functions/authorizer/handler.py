"""The API's Lambda authorizer (HTTP API, simple responses): who an `Authorization: Bearer om_...` key
stands for. API Gateway caches the answer per header for up to a minute, for every route, so it names
the caller and never decides by route: the handlers check the scope (meterline.http.auth). An unknown
or revoked key is let through without a namespace, so the handler answers a precise 401 problem."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from meterline.bootstrap import keys_store
from meterline.domain.access import bearer_token
from meterline.domain.timeutil import now_ms
from meterline.observability import event_handler, logger
from meterline.services.keys import authenticate


@event_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    headers = event.get("headers") or {}
    caller = authenticate(keys_store(), bearer_token(headers.get("authorization")), now_ms())
    if caller is None:
        logger.info("unknown API key", extra={"route": event.get("routeKey")})
        return {"isAuthorized": True, "context": {}}
    return {"isAuthorized": True,
            "context": {"namespace": caller.namespace, "scope": caller.scope.value, "keyId": caller.key_id}}
