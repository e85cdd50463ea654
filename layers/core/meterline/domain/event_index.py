"""A reference to a stored event as the event time index names it (meterline.storage.events_store
manifests): what `GET /api/v1/events` filters and orders by before it reads the events themselves."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EventRef:
    time_ms: int
    ingested_ms: int
    source: str
    id: str
    subject: str

    def sort_key(self) -> tuple[int, int, str, str]:
        return (self.time_ms, self.ingested_ms, self.source, self.id)
