"""GET /api/v1/events: stored events newest first, with why each would not be counted."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, ValidationInfo, model_validator

from meterline.domain.event_index import EventRef
from meterline.domain.events import StoredEvent
from meterline.domain.meters import MeterCatalog
from meterline.domain.timeutil import DAY_MS, HOUR_MS, format_ms, now_ms
from meterline.domain.validation import EpochMs, QueryParameters, bounded_integer
from meterline.errors import FieldError, InvalidInput
from meterline.storage.events_store import EventsStore

DEFAULT_LIMIT = 100
MAX_LIMIT = 100
DEFAULT_RANGE_MS = 24 * HOUR_MS
# A listing's range (its hours are one ranged Query of the time index).
MAX_RANGE_DAYS = 400


class ListEventsQuery(QueryParameters):
    """Filters of the listing. Times are inclusive epoch ms, as OpenMeter treats them; `from` and `to`
    default to the 24 hours before the validation context's `now_ms`."""

    from_ms: EpochMs = Field(0, alias="from")
    to_ms: EpochMs = Field(0, alias="to")
    ingested_from_ms: EpochMs | None = Field(None, alias="ingestedAtFrom")
    ingested_to_ms: EpochMs | None = Field(None, alias="ingestedAtTo")
    id_contains: str | None = Field(None, alias="id", min_length=1)
    subject_contains: str | None = Field(None, alias="subject", min_length=1)
    limit: Annotated[int, BeforeValidator(bounded_integer(1, MAX_LIMIT))] = DEFAULT_LIMIT
    client_id: str | None = Field(None, alias="clientId")  # accepted, as OpenMeter's SDKs send it

    @model_validator(mode="after")
    def _range(self, info: ValidationInfo) -> ListEventsQuery:
        fields = self.model_fields_set
        if "to_ms" not in fields:
            self.to_ms = (info.context or {}).get("now_ms") or now_ms()
        if "from_ms" not in fields:
            self.from_ms = self.to_ms - DEFAULT_RANGE_MS
        if self.from_ms > self.to_ms:
            raise InvalidInput("from must not be after to", [FieldError("from", "must not be after to")])
        if self.to_ms - self.from_ms > MAX_RANGE_DAYS * DAY_MS:
            raise InvalidInput(f"the range from..to may span at most {MAX_RANGE_DAYS} days",
                               [FieldError("from", f"must be at most {MAX_RANGE_DAYS} days before to")])
        if (self.ingested_from_ms is not None and self.ingested_to_ms is not None
                and self.ingested_from_ms > self.ingested_to_ms):
            raise InvalidInput("ingestedAtFrom must not be after ingestedAtTo",
                               [FieldError("ingestedAtFrom", "must not be after ingestedAtTo")])
        return self

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


def list_events(namespace: str, query: ListEventsQuery, events: EventsStore, meters: MeterCatalog,
                budget: int | None = None) -> list[dict[str, Any]]:
    """At most `budget` index entries are scanned: a filter that matches little over a long range is a 400
    naming how far back the search got, not a walk through months of events."""
    listed = []
    for event in _newest_events(namespace, query, events, budget):
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


def _newest_events(namespace: str, query: ListEventsQuery, events: EventsStore, budget: int | None
                   ) -> list[StoredEvent]:
    """Walk the time index from `to` back to `from`, newest hour first, stopping after the first complete
    hour that brings the count to the limit (entries within an hour are unordered)."""
    selected: set[EventRef] = set()
    shown: dict[EventRef, StoredEvent] = {}
    refused: set[EventRef] = set()
    scanned = 0
    for hour, manifests in events.hours(namespace, query.from_ms, query.to_ms + 1, newest_first=True):
        refs = events.refs_of(namespace, manifests, hour)
        selected.update(ref for ref in refs if query.matches(ref))
        if len(selected) - len(refused) >= query.limit and len(
                _checked(namespace, query.limit, selected, shown, refused, events)) >= query.limit:
            break
        scanned += len(refs)
        if budget is not None and scanned > budget:
            reached = format_ms(hour)
            found = len(selected) - len(refused)
            reason = (f"the search scanned {scanned} events back to {reached} and found {found} "
                      f"of the {query.limit} asked for; move from to {reached} or later, or narrow the filters")
            raise InvalidInput(reason, [FieldError("from", reason)])
    return _checked(namespace, query.limit, selected, shown, refused, events)


def _checked(namespace: str, limit: int, selected: set[EventRef], shown: dict[EventRef, StoredEvent],
             refused: set[EventRef], events: EventsStore) -> list[StoredEvent]:
    """The newest `limit` selected entries whose event is stored as the entry says. A manifest is written
    before its request's events, so it may name an event whose put failed, or a duplicate with another
    time: those entries are refused and the next newest take their place."""
    while True:
        newest = sorted(selected - refused, key=EventRef.sort_key, reverse=True)[:limit]
        unread = [ref for ref in newest if ref not in shown]
        if not unread:
            return [shown[ref] for ref in newest]
        stored = events.get_many(namespace, [(ref.source, ref.id) for ref in unread])
        for ref in unread:
            event = stored.get((ref.source, ref.id))
            if event is not None and (event.time_ms, event.ingested_ms) == (ref.time_ms, ref.ingested_ms):
                shown[ref] = event
            else:
                refused.add(ref)
