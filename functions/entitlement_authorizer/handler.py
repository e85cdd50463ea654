"""A Lambda authorizer that lets a request through only if its subject has access to every required
feature (infra/metering.py `EntitlementAuthorizer`). It answers HTTP APIs (payload format 2.0, simple
responses) and REST APIs (REQUEST or TOKEN authorizers, an IAM policy).

API Gateway caches the answer per subject (the identity source), for every route of the API: so the
answer never depends on the route, and a REST policy covers all of the stage's methods.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerEventV2,
    APIGatewayAuthorizerRequestEvent,
    APIGatewayAuthorizerResponse,
    APIGatewayAuthorizerResponseV2,
    APIGatewayAuthorizerTokenEvent,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from meterline.bootstrap import entitlement_gate
from meterline.domain.timeutil import now_ms
from meterline.observability import event_handler, logger
from meterline.services.entitlement_gate import GateDecision

# A REST policy names a principal even when the request named no subject.
NO_PRINCIPAL = "anonymous"


@event_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if event.get("version") == "2.0":
        return _http_api(APIGatewayAuthorizerEventV2(event))
    return _rest_api(event)


def _http_api(event: APIGatewayAuthorizerEventV2) -> dict[str, Any]:
    # The subject's source is the authorizer's only identity source.
    decision = _decide(next(iter(event.identity_source), None))
    return APIGatewayAuthorizerResponseV2(authorize=decision.allowed, context=_context(decision)).asdict()


def _rest_api(event: dict[str, Any]) -> dict[str, Any]:
    subject: str | None
    if event.get("type") == "TOKEN":
        token = APIGatewayAuthorizerTokenEvent(event)
        method_arn, subject = token.method_arn, token.authorization_token
    else:
        request = APIGatewayAuthorizerRequestEvent(event)
        method_arn = request.method_arn
        subject = entitlement_gate().config.subject.value_in(request.headers, request.query_string_parameters)
    decision = _decide(subject)
    policy = APIGatewayAuthorizerResponse.from_route_arn(method_arn, principal_id=decision.subject or NO_PRINCIPAL,
                                                         context=_context(decision))
    if decision.allowed:
        policy.allow_all_routes()
    else:
        policy.deny_all_routes()
    return policy.asdict()


def _decide(subject: str | None) -> GateDecision:
    decision = entitlement_gate().decide(subject, now_ms())
    if not decision.allowed:
        logger.info("denied: required features without access", extra={"subject": decision.subject,
                                                                         "denied": decision.denied})
    return decision


def _context(decision: GateDecision) -> dict[str, Any] | None:
    """What the API's integrations and access logs see as $context.authorizer.subject."""
    return {"subject": decision.subject} if decision.allowed else None
