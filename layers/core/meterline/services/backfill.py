"""Backfills: a new meter (or one that gained groupBy keys) sees history.

The worker recounts the meter (meterline.services.recount) over the events of its namespace, read hour
by hour through the event time index: only that namespace's events of the meter's type are fetched, so
a new meter costs nothing to other namespaces. Rows carry their event's identity and every reader
de-duplicates, so the backfill may overlap live processing and may be resumed or repeated after a crash
without counting anything twice. It starts only once the stream processors have had time to load the
meter (their catalog cache), so every event is counted by the processor, the backfill, or both. Each
step stops when its caller's deadline says so and resumes from the next hour.

The worker also serves recount requests, first (each is one hour): the stream processor asks for one
instead of counting an event too old for its quarter to be re-folded from raw rows, which may have expired
(meterline.processing.stream_batch.request_recounts). Recounting the hour for every meter of its namespace
rewrites all its raw rows with a fresh expiry and lists its closed quarters as late, so the compactor
re-folds its quarters, hour and day from complete rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from meterline.domain.counting import counter_set_id
from meterline.domain.events import MAX_FUTURE_MS
from meterline.domain.meters import MeterCatalog
from meterline.domain.timeutil import HOUR_MS, format_ms, parse_rfc3339, to_epoch_ms
from meterline.services.recount import Recounter
from meterline.storage.events_store import EventsStore
from meterline.storage.meters_store import MetersStore
from meterline.storage.usage_store import UsageStore

# A recount request is served once nobody has asked for it again for this long: the events that asked are
# then in the event time index the recount reads (a global secondary index, eventually consistent, usually
# within a second).
RECOUNT_SETTLE_MS = 60_000


def _only(catalog: MeterCatalog) -> Callable[[str], MeterCatalog]:
    """The catalog of every namespace, for counting a backfill's events against its one meter."""
    return lambda _namespace: catalog


@dataclass
class BackfillReport:
    hours: int = 0
    events: int = 0
    completed: list[str] = field(default_factory=list)
    recounted: list[str] = field(default_factory=list)  # "{namespace}/{hour}" of the recount requests served


class BackfillWorker:
    def __init__(self, events: EventsStore, usage: UsageStore, meters: MetersStore, settle_ms: int) -> None:
        self.events = events
        self.usage = usage
        self.meters = meters
        self.settle_ms = settle_ms  # > the meter cache TTL of the stream processors

    def run(self, now_ms: int, out_of_time: Callable[[], bool] = lambda: False) -> BackfillReport:
        report = BackfillReport()
        self._serve_recount_requests(now_ms, out_of_time, report)
        for namespace, stored in self.meters.pending_backfills():
            meter = stored.meter
            backfill = meter.backfill
            assert backfill is not None, "a due backfill has a status"
            changed = meter.updated_at or meter.created_at
            assert changed is not None, "a stored meter has its times"
            if now_ms < to_epoch_ms(parse_rfc3339(changed)) + self.settle_ms:
                continue
            if out_of_time():
                break
            counter_set = counter_set_id(meter)
            cursor, steps = self.meters.backfill_cursor(namespace, counter_set)
            # every event of the namespace up to the newest one stored before the processors knew the meter
            start = cursor["nextMs"] if cursor else 0
            end = cursor["endMs"] if cursor else now_ms + MAX_FUTURE_MS
            recounter = Recounter(self.events, self.usage, _only(MeterCatalog([meter])))
            step = recounter.run(namespace, start, end, now_ms, meter.slug, out_of_time)
            report.hours += step.hours
            report.events += step.events
            state = {"status": "completed" if step.complete else "running",
                     "startedAt": backfill.started_at or format_ms(now_ms),
                     "eventsScanned": (backfill.events_scanned or 0) + step.events}
            if step.complete:
                state["completedAt"] = format_ms(now_ms)
            if self.meters.set_backfill(namespace, meter.slug, state, meter_id=meter.id,
                                        group_by=meter.group_by) is None:
                continue  # the meter was deleted or changed: a newer backfill takes over
            if step.complete:
                self.meters.delete_backfill_cursor(namespace, counter_set)
                report.completed.append(f"{namespace}/{meter.slug}")
            else:
                self.meters.save_backfill_cursor(namespace, counter_set, {"nextMs": step.next_ms, "endMs": end},
                                                 steps + 1)
        return report

    def _serve_recount_requests(self, now_ms: int, out_of_time: Callable[[], bool], report: BackfillReport) -> None:
        """Recount the hour of each settled recount request for every meter of its namespace (one Query finds
        them all), then drop the request."""
        catalogs: dict[str, MeterCatalog] = {}
        for request in self.usage.recount_requests():
            if request.at_ms > now_ms - RECOUNT_SETTLE_MS:
                continue
            if out_of_time():
                return
            if request.namespace not in catalogs:
                catalogs[request.namespace] = MeterCatalog(self.meters.meters(request.namespace))
            recounter = Recounter(self.events, self.usage, _only(catalogs[request.namespace]))
            step = recounter.run(request.namespace, request.hour_ms, request.hour_ms + HOUR_MS, now_ms)
            report.hours += step.hours
            report.events += step.events
            # Conditional: a request asked for again meanwhile (by an event this recount may not have read)
            # stays, and is served again by a later run; recounting an hour twice changes nothing.
            if self.usage.drop_recount_request(request):
                report.recounted.append(f"{request.namespace}/{format_ms(request.hour_ms)}")
