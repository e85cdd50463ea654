"""Recount: the repair path. Rebuild a namespace's counting rows for a time range
from the events table, read hour by hour (the hours that have events) through the time index, never a
table scan; the compactor then re-folds every closed quarter they touch, so slots follow.

Safe to run at any time and any number of times: rows carry their event's identity and every reader
de-duplicates, so events the stream processor did count are not counted twice, and a repeat of the same
range overwrites its own rows (their batch ids are derived from the hour and the meters recounted).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from meterline.domain.meters import MeterCatalog
from meterline.domain.timeutil import format_ms
from meterline.errors import FieldError, NotFound
from meterline.processing.counting import count_events
from meterline.settings import CompactionTiming
from meterline.storage.events_store import EventsStore
from meterline.storage.usage_store import UsageStore

# Every quarter that has ended is treated as late: its rows go on the late lists, so the compactor
# re-folds it even if it had folded it already; the open quarter is folded when it closes, as usual.
CLOSED_QUARTERS_ARE_LATE = CompactionTiming(grace_ms=0, write_margin_ms=0)


@dataclass
class RecountReport:
    hours: int = 0  # hours of the range that had events
    events: int = 0
    rows: int = 0
    next_ms: int | None = None  # where a recount stopped by its deadline resumes (None: complete)

    @property
    def complete(self) -> bool:
        return self.next_ms is None


class Recounter:
    def __init__(self, events: EventsStore, usage: UsageStore, catalogs: Callable[[str], MeterCatalog]) -> None:
        self.events = events
        self.usage = usage
        self.catalogs = catalogs

    def run(self, namespace: str, from_ms: int, to_ms: int, now_ms: int, meter_slug: str | None = None,
            out_of_time: Callable[[], bool] = lambda: False) -> RecountReport:
        """Recount [from, to) of `namespace` (every meter, or only `meter_slug`'s), fetching only events of
        the meters' types. Stops between hours once `out_of_time()`."""
        catalog = self.catalogs(namespace)
        meters = [m for m in catalog.meters if meter_slug is None or m.slug == meter_slug]
        if meter_slug is not None and not meters:
            raise NotFound(f"namespace {namespace} has no meter {meter_slug!r}",
                           [FieldError("meter", "no meter has this slug")])
        only = MeterCatalog(meters)
        types = {m.event_type for m in meters}
        selection = hashlib.blake2b(",".join(sorted(m.slug for m in meters)).encode(), digest_size=4).hexdigest()
        report = RecountReport()
        for hour, manifests in self.events.hours(namespace, from_ms, to_ms):
            if out_of_time():
                report.next_ms = max(hour, from_ms)
                return report
            events = [e for e in self.events.events_of(namespace, manifests, types, hour)
                      if from_ms <= e.time_ms < to_ms]
            if events:
                batch = f"recount-{selection}-{hour}"
                counted = count_events(events, lambda _namespace: only, self.usage, batch, now_ms,
                                       CLOSED_QUARTERS_ARE_LATE)
                report.events += len(events)
                report.rows += counted.rows
            report.hours += 1
        return report


def _count(number: int, what: str) -> str:
    return f"{number} {what}{'' if number == 1 else 's'}"


def describe(report: RecountReport) -> str:
    done = (f"{_count(report.events, 'event')} in {_count(report.hours, 'hour')} with events: "
            f"{_count(report.rows, 'counting row')}")
    return done if report.complete else f"{done}; stopped at {format_ms(report.next_ms or 0)}, run again from there"
