"""Backfills: a new meter (or one that gained groupBy keys) sees history.

The worker scans the events table for the meter's event type and writes counting rows for every
event, exactly as the stream processor does, in pages keyed by the backfill and page number. Rows
carry their event's identity and every reader de-duplicates, so the backfill may overlap live
processing and may be resumed or repeated after a crash without counting anything twice. It starts
only once the stream processors have had time to load the meter (their catalog cache), so every
event is counted by the processor, the backfill, or both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from meterline.domain.counting import counter_set_id
from meterline.domain.meters import BackfillState, MeterCatalog
from meterline.domain.timeutil import format_ms, parse_rfc3339, to_epoch_ms
from meterline.processing.counting import count_events
from meterline.settings import CompactionTiming
from meterline.storage.events_store import EventsStore
from meterline.storage.meters_store import MetersStore
from meterline.storage.usage_store import UsageStore

PAGE_SIZE = 1000


def _only(catalog: MeterCatalog) -> Callable[[str], MeterCatalog]:
    """The catalog of every namespace, for counting a backfill's events against its one meter."""
    return lambda _namespace: catalog


@dataclass
class BackfillReport:
    pages: int = 0
    events: int = 0
    completed: list[str] = field(default_factory=list)


class BackfillWorker:
    def __init__(self, events: EventsStore, usage: UsageStore, meters: MetersStore, timing: CompactionTiming,
                 settle_ms: int) -> None:
        self.events = events
        self.usage = usage
        self.meters = meters
        self.timing = timing
        self.settle_ms = settle_ms  # > the meter cache TTL of the stream processors

    def run(self, now_ms: int, max_pages: int = 50) -> BackfillReport:
        report = BackfillReport()
        for namespace, stored in self.meters.pending_backfills():
            meter = stored.meter
            backfill = meter.backfill
            if backfill is None or backfill.status not in (BackfillState.PENDING, BackfillState.RUNNING):
                continue
            changed = meter.updated_at or meter.created_at
            assert changed is not None, "a stored meter has its times"
            changed_at = to_epoch_ms(parse_rfc3339(changed))
            if now_ms < changed_at + self.settle_ms or report.pages >= max_pages:
                continue
            counter_set = counter_set_id(meter)
            catalog = MeterCatalog([meter])
            cursor, pages = self.meters.backfill_cursor(namespace, counter_set)
            started = backfill.started_at or format_ms(now_ms)
            scanned = backfill.events_scanned or 0
            while report.pages < max_pages:
                events, cursor = self.events.scan_type(namespace, meter.event_type, cursor, PAGE_SIZE)
                count_events(events, _only(catalog), self.usage, f"backfill-{counter_set}-{pages:08d}",
                             now_ms, self.timing)
                pages += 1
                scanned += len(events)
                report.pages += 1
                report.events += len(events)
                done = cursor is None
                self.meters.save_backfill_cursor(namespace, counter_set, cursor, pages)
                state = {"status": "completed" if done else "running", "startedAt": started,
                         "eventsScanned": scanned}
                if done:
                    state["completedAt"] = format_ms(now_ms)
                if self.meters.set_backfill(namespace, meter.slug, state, meter_id=meter.id,
                                            group_by=meter.group_by) is None:
                    break  # the meter was deleted or changed: a newer backfill takes over
                if done:
                    self.meters.delete_backfill_cursor(namespace, counter_set)
                    report.completed.append(f"{namespace}/{meter.slug}")
                    break
        return report
