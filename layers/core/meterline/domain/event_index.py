"""The event index: compact, time-bucketed pages of event references that make
`GET /api/v1/events` (newest first, by time range) cheap without a secondary index on the events
table, which would double the write cost of every event.

The stream processor writes one page per (namespace, UTC hour of event time) per stream batch, so a
page amortises over up to a batch of events. Redelivered batches may write a reference twice; readers
de-duplicate by (source, id).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from meterline.domain.events import StoredEvent
from meterline.domain.timeutil import format_ms

# Keeps a page far below DynamoDB's 400 KB item limit.
MAX_PAGE_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class EventRef:
    time_ms: int
    ingested_ms: int
    source: str
    id: str
    subject: str

    def as_row(self) -> list:
        return [self.time_ms, self.ingested_ms, self.source, self.id, self.subject]

    @classmethod
    def from_row(cls, row: list) -> EventRef:
        return cls(int(row[0]), int(row[1]), row[2], row[3], row[4])

    def sort_key(self) -> tuple:
        return (self.time_ms, self.ingested_ms, self.source, self.id)


@dataclass(frozen=True)
class IndexPage:
    namespace: str
    day: str  # YYYY-MM-DD (UTC) of the events' time
    hour: int
    page_id: str  # unique per batch and chunk
    refs: tuple[EventRef, ...]


def hour_bucket(time_ms: int) -> tuple[str, int]:
    stamp = format_ms(time_ms)
    return stamp[:10], int(stamp[11:13])


def build_pages(events: Iterable[StoredEvent], batch_id: str) -> list[IndexPage]:
    """Group a batch's events into pages by (namespace, day, hour), chunked by size."""
    buckets: dict[tuple[str, str, int], list[EventRef]] = defaultdict(list)
    for event in events:
        day, hour = hour_bucket(event.time_ms)
        buckets[(event.namespace, day, hour)].append(
            EventRef(event.time_ms, event.ingested_ms, event.source, event.id, event.subject)
        )
    pages: list[IndexPage] = []
    for (namespace, day, hour), refs in buckets.items():
        chunk: list[EventRef] = []
        size = 0
        for ref in refs:
            ref_size = 48 + len(ref.source) + len(ref.id) + len(ref.subject)
            if chunk and size + ref_size > MAX_PAGE_BYTES:
                pages.append(IndexPage(namespace, day, hour, f"{batch_id}#{len(pages)}", tuple(chunk)))
                chunk, size = [], 0
            chunk.append(ref)
            size += ref_size
        pages.append(IndexPage(namespace, day, hour, f"{batch_id}#{len(pages)}", tuple(chunk)))
    return pages
