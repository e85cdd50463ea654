"""The read side of the HTTP API: GET /api/v1/events (meters and queries join it later)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from meterline.http.resolver import build_resolver, json_response, namespace_of
from meterline.services.events_listing import ListEventsQuery, list_events
from meterline.services.meter_source import meter_catalog
from meterline.settings import settings
from meterline.storage.events_store import EventsStore
from meterline.storage.usage_store import UsageStore

app = build_resolver()
_stores: tuple[EventsStore, UsageStore] | None = None


def stores() -> tuple[EventsStore, UsageStore]:
    global _stores
    if _stores is None:
        retention = settings().retention_days
        _stores = (EventsStore(retention_days=retention), UsageStore(retention_days=retention))
    return _stores


@app.get("/api/v1/events")
def get_events() -> Response:
    query = ListEventsQuery.from_params(app.current_event.query_string_parameters or {})
    events, index = stores()
    listed = list_events(namespace_of(app.current_event.raw_event), query, index, events, meter_catalog())
    return json_response(listed)


def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
