"""The read and manage side of the HTTP API: GET /api/v1/events, the meters resource
(GET/POST /api/v1/meters, GET/PUT/DELETE /api/v1/meters/{idOrSlug}) and usage queries
(GET/POST /api/v1/meters/{idOrSlug}/query)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from meterline.bootstrap import events_store, meters_store, usage_store
from meterline.domain.request_bodies import json_object
from meterline.domain.timeutil import DAY_MS, now_ms
from meterline.http.resolver import build_resolver, json_response, namespace_of, request_body
from meterline.services import meters, usage_query
from meterline.services.events_listing import ListEventsQuery, list_events
from meterline.services.meter_source import meter_catalog
from meterline.settings import settings

app = build_resolver()


def _namespace() -> str:
    return namespace_of(app.current_event.raw_event)


@app.get("/api/v1/events")
def get_events() -> Response:
    query = ListEventsQuery.from_params(app.current_event.query_string_parameters or {})
    namespace = _namespace()
    return json_response(list_events(namespace, query, usage_store(), events_store(), meter_catalog(namespace)))


@app.get("/api/v1/meters")
def list_meters() -> Response:
    query = meters.ListMetersQuery.from_params(app.current_event.query_string_parameters or {})
    return json_response([m.to_api() for m in meters.list_meters(meters_store(), _namespace(), query)])


@app.post("/api/v1/meters")
def create_meter() -> Response:
    meter = meters.create_meter(meters_store(), _namespace(), request_body(app),
                                app.current_event.headers.get("content-type"), now_ms())
    return json_response(meter.to_api(), status=201)


@app.get("/api/v1/meters/<id_or_slug>")
def get_meter(id_or_slug: str) -> Response:
    return json_response(meters.get_meter(meters_store(), _namespace(), id_or_slug).to_api())


@app.put("/api/v1/meters/<id_or_slug>")
def update_meter(id_or_slug: str) -> Response:
    meter = meters.update_meter(meters_store(), _namespace(), id_or_slug, request_body(app),
                                app.current_event.headers.get("content-type"), now_ms())
    return json_response(meter.to_api())


@app.delete("/api/v1/meters/<id_or_slug>")
def delete_meter(id_or_slug: str) -> Response:
    meters.delete_meter(meters_store(), _namespace(), id_or_slug)
    return Response(status_code=204)


def _query(id_or_slug: str, raw: dict[str, Any]) -> Response:
    namespace = _namespace()
    meter = meters.get_meter(meters_store(), namespace, id_or_slug)
    retention_ms = settings().retention_days * DAY_MS
    query = usage_query.UsageQuery.parse(meter, raw, now_ms(), retention_ms)
    rows = usage_query.UsageReader(usage_store()).query(namespace, meter, query)
    if "text/csv" in (app.current_event.headers.get("accept") or ""):
        return Response(status_code=200, content_type="text/csv", body=usage_query.result_csv(meter, query, rows))
    return json_response(usage_query.result_json(query, rows))


@app.get("/api/v1/meters/<id_or_slug>/query")
def query_meter(id_or_slug: str) -> Response:
    raw_query = app.current_event.raw_event.get("rawQueryString") or ""
    return _query(id_or_slug, usage_query.params_from_query_string(raw_query))


@app.post("/api/v1/meters/<id_or_slug>/query")
def query_meter_post(id_or_slug: str) -> Response:
    body = json_object(request_body(app), app.current_event.headers.get("content-type"), "a query")
    return _query(id_or_slug, usage_query.params_from_body(body))


def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
