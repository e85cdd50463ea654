"""Ingestion: store every event of a validated request exactly once."""

from __future__ import annotations

from collections.abc import Sequence

from meterline.domain.events import CloudEvent
from meterline.storage.events_store import EventsStore, PutResult


def ingest(store: EventsStore, namespace: str, events: Sequence[CloudEvent], received_ms: int) -> PutResult:
    """The request was validated as a whole (meterline.http.requests.parse_events): one bad event
    refuses the batch before anything is written."""
    return store.put_new(namespace, events, received_ms)
