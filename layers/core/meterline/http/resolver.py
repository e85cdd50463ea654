"""What every HTTP Lambda shares: a Powertools resolver that authorizes every request
(meterline.http.auth) and answers every error as problem+json, and the caller of the request."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response

from meterline.domain.access import Caller
from meterline.errors import MeterlineError, TooManyRequests
from meterline.http.auth import authorize
from meterline.http.problems import PROBLEM_JSON, problem_for
from meterline.http.responses import problem_response
from meterline.observability import logger


def build_resolver() -> APIGatewayHttpResolver:
    app = APIGatewayHttpResolver()
    app.use(middlewares=[authorize])

    @app.exception_handler(MeterlineError)
    def _domain_error(error: MeterlineError) -> Response:
        status, body = problem_for(error, instance=app.current_event.path)
        headers = {"Retry-After": str(error.retry_after_s)} if isinstance(error, TooManyRequests) else None
        return Response(status_code=status, content_type=PROBLEM_JSON, body=body.decode(), headers=headers)

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


def caller(app: APIGatewayHttpResolver) -> Caller:
    """The caller of the current request, as the `authorize` middleware found it."""
    found: Caller = app.context["caller"]
    return found


def namespace_of(app: APIGatewayHttpResolver) -> str:
    return caller(app).namespace
