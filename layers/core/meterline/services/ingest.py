"""Ingestion: validate the whole request, then store every event exactly once."""

from __future__ import annotations

from meterline.domain.events import parse_events
from meterline.storage.events_store import EventsStore, PutResult


def ingest(store: EventsStore, namespace: str, body: bytes, content_type: str | None,
           received_ms: int, max_age_ms: int | None = None) -> PutResult:
    """Nothing is written unless every event of the request is valid (MeterlineError otherwise)."""
    events = parse_events(body, content_type, received_ms, max_age_ms)
    return store.put_new(namespace, events, received_ms)
