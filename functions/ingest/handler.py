"""POST /api/v1/events: validate a request's events as a whole, then store each exactly once."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from meterline.bootstrap import events_store
from meterline.domain.timeutil import now_ms
from meterline.http.requests import body_bytes, parse_events
from meterline.http.resolver import build_resolver, namespace_of
from meterline.http.responses import problem_response
from meterline.observability import http_handler, logger
from meterline.services.ingest import ingest
from meterline.storage.events_store import StorageUnavailable

app = build_resolver()
# What a 503 asks a client to wait before sending the same request again.
STORAGE_RETRY_AFTER_S = 1


@app.exception_handler(StorageUnavailable)
def _storage_unavailable(error: StorageUnavailable) -> Response:
    logger.error("event write failed", extra={"error": str(error)})
    response = problem_response(503, "storage-unavailable", "Storage unavailable",
                                "some events could not be stored; retrying the same request is safe")
    response.headers["Retry-After"] = str(STORAGE_RETRY_AFTER_S)
    return response


@app.post("/api/v1/events")
def ingest_events() -> Response:
    namespace = namespace_of(app)
    received = now_ms()
    events = parse_events(body_bytes(app.current_event), app.current_event.headers.get("content-type"), received)
    result = ingest(events_store(), namespace, events, received)
    logger.debug("ingested", extra={"stored": result.stored, "duplicates": result.duplicates})
    return Response(status_code=204)


@http_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
