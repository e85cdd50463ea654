"""The read and manage side of the HTTP API: GET /api/v1/events, the meters resource
(GET/POST /api/v1/meters, GET/PUT/DELETE /api/v1/meters/{idOrSlug}) and usage queries
(GET/POST /api/v1/meters/{idOrSlug}/query)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from meterline.bootstrap import events_store, meters_store, portal_secret, usage_store
from meterline.domain.meters import meter_definition
from meterline.domain.portal import PortalTokenRequest
from meterline.domain.timeutil import DAY_MS, now_ms
from meterline.http.requests import body_model, json_object, query_model
from meterline.http.resolver import build_resolver, caller, namespace_of
from meterline.http.responses import json_response
from meterline.http.usage import usage_query_params, usage_response
from meterline.observability import http_handler
from meterline.services import meters, portal
from meterline.services.events_listing import ListEventsQuery, list_events
from meterline.services.meter_source import meter_catalog
from meterline.services.usage_query import meter_subjects as meter_subjects_of
from meterline.services.usage_query import query_usage
from meterline.settings import query_limits, quotas, settings

app = build_resolver()


def _namespace() -> str:
    return namespace_of(app)


@app.get("/api/v1/events")
def get_events() -> Response:
    query = query_model(app.current_event, ListEventsQuery, context={"now_ms": now_ms()})
    namespace = _namespace()
    return json_response(list_events(namespace, query, events_store(), meter_catalog(namespace),
                                     query_limits().listing_budget))


@app.get("/api/v1/meters")
def list_meters() -> Response:
    query = query_model(app.current_event, meters.ListMetersQuery)
    return json_response([m.to_api() for m in meters.list_meters(meters_store(), _namespace(), query)])


@app.post("/api/v1/meters")
def create_meter() -> Response:
    definition = meter_definition(json_object(app.current_event, "a meter"))
    created = meters.create_meter(meters_store(), _namespace(), definition, now_ms(), quotas().meters)
    return json_response(created.to_api(), status=201)


@app.get("/api/v1/meters/<id_or_slug>")
def get_meter(id_or_slug: str) -> Response:
    return json_response(meters.get_meter(meters_store(), _namespace(), id_or_slug).to_api())


@app.put("/api/v1/meters/<id_or_slug>")
def update_meter(id_or_slug: str) -> Response:
    changes = json_object(app.current_event, "a meter")
    return json_response(meters.update_meter(meters_store(), _namespace(), id_or_slug, changes, now_ms()).to_api())


@app.delete("/api/v1/meters/<id_or_slug>")
def delete_meter(id_or_slug: str) -> Response:
    meters.delete_meter(meters_store(), _namespace(), id_or_slug)
    return Response(status_code=204)


@app.route("/api/v1/meters/<id_or_slug>/query", method=["GET", "POST"])
def query_meter(id_or_slug: str) -> Response:
    parameters = usage_query_params(app.current_event)
    _, query, rows = query_usage(meters_store(), usage_store(), _namespace(), id_or_slug, parameters, now_ms(),
                                 settings().retention_days * DAY_MS, query_limits())
    return usage_response(query, rows, app.current_event.headers.get("accept"))


@http_handler
@app.get("/api/v1/meters/<id_or_slug>/subjects")
def meter_subjects(id_or_slug: str) -> Response:
    return json_response(meter_subjects_of(meters_store(), usage_store(), _namespace(), id_or_slug, now_ms(),
                                           settings().retention_days * DAY_MS, query_limits()))


@app.post("/api/v1/portal/tokens")
def create_portal_token() -> Response:
    now = now_ms()
    request = body_model(app.current_event, PortalTokenRequest, "a portal token request", context={"now_ms": now})
    return json_response(portal.create_token(meters_store(), portal_secret().value(), _namespace(), request, now))


@app.get("/api/v1/portal/meters/<meter_slug>/query")
def query_portal_meter(meter_slug: str) -> Response:
    _, query, rows = portal.query(meters_store(), usage_store(), caller(app), meter_slug,
                                  usage_query_params(app.current_event), now_ms(),
                                  settings().retention_days * DAY_MS, query_limits())
    return usage_response(query, rows, app.current_event.headers.get("accept"))


def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
