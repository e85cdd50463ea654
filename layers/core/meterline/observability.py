"""The logger and metrics every handler shares, and how each kind of handler decorates its entry point.

Logs are JSON with the Lambda context (function, request id, cold start) and, for HTTP requests, API
Gateway's request id as the correlation id and the caller's namespace. There is no tracer: functions run
without X-Ray (docs/decisions.md, "No X-Ray tracing")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging import correlation_paths

SERVICE = "meterline"
METRICS_NAMESPACE = "Meterline"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE)

Handler = TypeVar("Handler", bound=Callable[..., Any])


def http_handler(handler: Handler) -> Handler:
    """An API Gateway (HTTP API) entry point: the request id is the correlation id; keys appended during a
    request (the namespace) are cleared before the next."""
    decorated: Handler = logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP,
                                                      clear_state=True)(handler)
    return decorated


def event_handler(handler: Handler) -> Handler:
    """A stream, queue or schedule entry point."""
    decorated: Handler = logger.inject_lambda_context(clear_state=True)(handler)
    return decorated


def metered_handler(handler: Handler) -> Handler:
    """An entry point that emits metrics: they are flushed (one embedded-metric-format line) when it returns."""
    decorated: Handler = metrics.log_metrics(event_handler(handler))  # type: ignore[assignment]
    return decorated
