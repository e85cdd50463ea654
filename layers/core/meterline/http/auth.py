"""Who is calling, from what the API's authorizer put in the request context, and whether they may.

This is the one place requests are authorized. It fails closed: with auth on, a request whose context
names no valid namespace is 401, never the default namespace; a scope that does not cover the request is
403. API Gateway's authorizer only vouches for who the caller is (its answer is cached per key for every
route), so the scope is checked here, per request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response

from meterline.domain.access import PORTAL_PREFIX, Caller, Scope, allows, bearer_token
from meterline.domain.timeutil import now_ms
from meterline.errors import Forbidden, Unauthenticated
from meterline.observability import logger
from meterline.settings import AuthMode, is_namespace, settings

KEY_REQUIRED = "send an API key: Authorization: Bearer om_..."


def portal_caller(event: dict[str, Any], now_ms: int) -> Caller:
    """The caller of a portal route: whoever holds a valid portal token, whatever the auth mode (the
    route serves nothing else, and the token names its namespace and subject)."""
    from meterline.bootstrap import portal_secret
    from meterline.domain import portal

    headers = event.get("headers") or {}
    token = bearer_token(headers.get("authorization"))
    found = portal.verify(token, portal_secret().value(), now_ms) if token else None
    if found is None or not is_namespace(found.namespace):
        raise Unauthenticated("send a valid, unexpired portal token: Authorization: Bearer <token from "
                              "POST /api/v1/portal/tokens>")
    return Caller(found.namespace, Scope.PORTAL, portal=found)


def caller_of(event: dict[str, Any]) -> Caller:
    config = settings()
    if config.auth is AuthMode.NONE:
        return Caller(config.default_namespace, Scope.ADMIN)
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    if config.auth is AuthMode.JWT:
        claims = (authorizer.get("jwt") or {}).get("claims") or {}
        namespace = _claim(claims, config.jwt_namespace_claim)
        scope = _claim(claims, config.jwt_scope_claim) if config.jwt_scope_claim else Scope.ADMIN.value
        key_id = None
    else:
        context = authorizer.get("lambda") or {}
        namespace = context.get("namespace")
        scope = context.get("scope") or (Scope.ADMIN.value if config.auth is AuthMode.LAMBDA else None)
        key_id = context.get("keyId")
    if config.auth is AuthMode.API_KEY and (not isinstance(namespace, str) or scope is None):
        raise Unauthenticated(f"the API key is missing, unknown or revoked; {KEY_REQUIRED}")
    if not isinstance(namespace, str) or not is_namespace(namespace):
        raise Unauthenticated("the credentials name no valid namespace")
    try:
        return Caller(namespace, Scope(scope), key_id if isinstance(key_id, str) else None)
    except ValueError:
        raise Forbidden(f"the credentials carry no known scope ({scope!r})") from None


def _claim(claims: dict[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def authorize(app: APIGatewayHttpResolver, next_middleware: Callable[[APIGatewayHttpResolver], Response]
              ) -> Response:
    """Resolver middleware: every route runs only for a caller whose scope covers it."""
    event = app.current_event
    if event.path.startswith(PORTAL_PREFIX):
        caller = portal_caller(event.raw_event, now_ms())
    else:
        caller = caller_of(event.raw_event)
    if not allows(caller.scope, event.http_method, event.path):
        raise Forbidden(f"the caller's {caller.scope.value} scope does not cover {event.http_method} {event.path}"
                        + (": it may only send events" if caller.scope is Scope.INGEST else
                           ": it may only read" if caller.scope is Scope.READ else ""))
    app.append_context(caller=caller)
    logger.append_keys(namespace=caller.namespace)
    return next_middleware(app)
