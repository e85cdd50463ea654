"""What every HTTP Lambda shares: a Powertools resolver whose errors are problem+json, and the
namespace of the caller (the seam where API-key auth plugs in)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response

from meterline.errors import InvalidInput, MeterlineError
from meterline.http.problems import PROBLEM_JSON, problem_for
from meterline.http.responses import problem_response
from meterline.observability import logger
from meterline.settings import NAMESPACE_PATTERN, settings


def build_resolver() -> APIGatewayHttpResolver:
    app = APIGatewayHttpResolver()

    @app.exception_handler(MeterlineError)
    def _domain_error(error: MeterlineError) -> Response:
        status, body = problem_for(error, instance=app.current_event.path)
        return Response(status_code=status, content_type=PROBLEM_JSON, body=body.decode())

    @app.not_found
    def _not_found(_: Exception) -> Response:
        return problem_response(404, "not-found", "Not found",
                                f"no route for {app.current_event.http_method} {app.current_event.path}")

    @app.exception_handler(Exception)
    def _unexpected(error: Exception) -> Response:
        logger.exception("unhandled error")
        return problem_response(500, "internal", "Internal error",
                                "the request failed on the server; it is safe to retry")

    return app


def namespace_of(event: dict[str, Any]) -> str:
    """The caller's namespace: set by the API-key authorizer when one is configured (its Lambda
    authorizer context carries `namespace`), else the stack's default namespace."""
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    namespace = (authorizer.get("lambda") or {}).get("namespace")
    if namespace is None:
        namespace = settings().default_namespace
    elif not isinstance(namespace, str) or not NAMESPACE_PATTERN.match(namespace):
        raise InvalidInput("the authorizer gave an invalid namespace")
    logger.append_keys(namespace=namespace)
    return namespace
