"""GET /api/v1/events: stored events newest first, with why each would not be counted."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from meterline.domain.event_index import EventRef
from meterline.domain.meters import MeterCatalog
from meterline.domain.timeutil import DAY_MS, epoch_ms_field, floor_to, format_ms, to_epoch_ms
from meterline.errors import FieldError, InvalidInput
from meterline.storage.events_store import EventsStore
from meterline.storage.usage_store import UsageStore

DEFAULT_LIMIT = 100
MAX_LIMIT = 100
DEFAULT_RANGE = timedelta(hours=24)
# The index is partitioned by UTC day; a listing reads at most this many day partitions.
MAX_RANGE_DAYS = 400
SUPPORTED_PARAMS = {"from", "to", "ingestedAtFrom", "ingestedAtTo", "id", "subject", "limit", "clientId"}


class ListEventsQuery:
    """Filters of the listing. Times are inclusive epoch ms, as OpenMeter treats them."""

    def __init__(self, *, from_ms: int, to_ms: int, ingested_from_ms: int | None = None,
                 ingested_to_ms: int | None = None, id_contains: str | None = None,
                 subject_contains: str | None = None, limit: int = DEFAULT_LIMIT) -> None:
        self.from_ms = from_ms
        self.to_ms = to_ms
        self.ingested_from_ms = ingested_from_ms
        self.ingested_to_ms = ingested_to_ms
        self.id_contains = id_contains
        self.subject_contains = subject_contains
        self.limit = limit

    @classmethod
    def from_params(cls, params: Mapping[str, str], now: datetime | None = None) -> ListEventsQuery:
        errors: list[FieldError] = []
        unknown = sorted(set(params) - SUPPORTED_PARAMS)
        for name in unknown:
            errors.append(FieldError(name, "is not a supported query parameter"))

        def time_param(name: str) -> int | None:
            return epoch_ms_field(params, name, errors)

        now = now or datetime.now(UTC)
        to_ms = time_param("to")
        from_ms = time_param("from")
        ingested_from = time_param("ingestedAtFrom")
        ingested_to = time_param("ingestedAtTo")
        limit = DEFAULT_LIMIT
        if "limit" in params:
            raw = params["limit"]
            if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
                errors.append(FieldError("limit", f"must be an integer from 1 to {MAX_LIMIT}"))
            else:
                limit = int(raw)
        for name in ("id", "subject"):
            if name in params and not params[name]:
                errors.append(FieldError(name, "must not be empty"))
        if errors:
            raise InvalidInput("; ".join(f"{e.field} {e.reason}" for e in errors), errors)

        if to_ms is None:
            to_ms = to_epoch_ms(now)
        if from_ms is None:
            from_ms = to_ms - int(DEFAULT_RANGE.total_seconds() * 1000)
        if from_ms > to_ms:
            raise InvalidInput("from must not be after to", [FieldError("from", "must not be after to")])
        if to_ms - from_ms > MAX_RANGE_DAYS * DAY_MS:
            raise InvalidInput(f"the range from..to may span at most {MAX_RANGE_DAYS} days",
                               [FieldError("from", f"must be at most {MAX_RANGE_DAYS} days before to")])
        if ingested_from is not None and ingested_to is not None and ingested_from > ingested_to:
            raise InvalidInput("ingestedAtFrom must not be after ingestedAtTo",
                               [FieldError("ingestedAtFrom", "must not be after ingestedAtTo")])
        return cls(from_ms=from_ms, to_ms=to_ms, ingested_from_ms=ingested_from, ingested_to_ms=ingested_to,
                   id_contains=params.get("id"), subject_contains=params.get("subject"), limit=limit)

    def matches(self, ref: EventRef) -> bool:
        if not self.from_ms <= ref.time_ms <= self.to_ms:
            return False
        if self.ingested_from_ms is not None and ref.ingested_ms < self.ingested_from_ms:
            return False
        if self.ingested_to_ms is not None and ref.ingested_ms > self.ingested_to_ms:
            return False
        if self.id_contains is not None and self.id_contains.lower() not in ref.id.lower():
            return False
        return self.subject_contains is None or self.subject_contains.lower() in ref.subject.lower()


def list_events(namespace: str, query: ListEventsQuery, index: UsageStore, events: EventsStore,
                meters: MeterCatalog) -> list[dict[str, Any]]:
    refs = _newest_refs(namespace, query, index)
    found = events.get_many(namespace, [(ref.source, ref.id) for ref in refs])
    listed = []
    for ref in refs:
        event = found.get((ref.source, ref.id))
        if event is None:  # expired between index and read
            continue
        entry: dict[str, Any] = {
            "event": event.as_cloudevent(),
            "ingestedAt": format_ms(event.ingested_ms),
            "storedAt": format_ms(event.ingested_ms),
        }
        problem = meters.validation_error(event.type, event.data)
        if problem:
            entry["validationError"] = problem
        listed.append(entry)
    return listed


def _newest_refs(namespace: str, query: ListEventsQuery, index: UsageStore) -> list[EventRef]:
    """Walk the index from `to` back to `from`, one UTC day partition at a time, stopping after the
    first complete hour that brings the count to the limit (pages within an hour are unordered)."""
    selected: dict[tuple[str, str], EventRef] = {}
    day_start = floor_to(query.to_ms, DAY_MS)
    while day_start >= floor_to(query.from_ms, DAY_MS) and len(selected) < query.limit:
        day = format_ms(day_start)[:10]
        max_hour = int(format_ms(query.to_ms)[11:13]) if day_start == floor_to(query.to_ms, DAY_MS) else 23
        min_hour = int(format_ms(query.from_ms)[11:13]) if day_start == floor_to(query.from_ms, DAY_MS) else 0
        for _hour, refs in index.iter_index_hours(namespace, day, max_hour, min_hour):
            for ref in refs:
                if query.matches(ref):
                    selected.setdefault((ref.source, ref.id), ref)
            if len(selected) >= query.limit:
                break
        day_start -= DAY_MS
    newest = sorted(selected.values(), key=EventRef.sort_key, reverse=True)
    return newest[: query.limit]
