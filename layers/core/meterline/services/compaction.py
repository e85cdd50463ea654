"""The compactor: folds raw rows into quarter-hour slots, quarter slots into hour slots, hour slots
into day slots, and hours and quarters into the zone days that queries ask for.

Every slot is *recomputed* from the level below and overwritten, never incremented, so running any
step twice, or crashing half-way and running it again, leaves the same numbers. Work is found through
manifests (see processing/counting.py):

- on-time pass: quarter after quarter, once a quarter ended `grace` ago, fold every (namespace, subject
  bucket, counter set) its manifest lists; then move the quarter horizon on. Queries read quarter slots
  only below that horizon and raw rows above it, so no row is ever read twice.
- roll-up: when the quarter horizon passes an hour, fold the hour's quarter slots into hour slots for
  every namespace that had work in it, then move the hour horizon on; likewise hours into days.
- late pass: rows that arrived after their quarter was (or may have been) folded are listed by
  processing quarter-hour; their quarters are folded again, and their hours, days and zone days too if
  already folded (only the counter sets and subjects concerned).
- zone days (meterline.domain.slots.ZoneDays): for every phase a DAY query asked for (a request in the
  catalog: meterline.storage.zone_requests_store), each zone day is folded from its hours and edge
  quarters once the hour horizon passes its end, for the namespaces with work in the UTC days it
  straddles; the zone days of the last ZONE_BACKFILL_MS are built backwards, a few per run. Zone days are
  complete for the range the state's `zoneDays` gives per phase; a zone day whose edge quarters may have
  expired (METERLINE_QUARTER_RETENTION_DAYS) is never folded: the range restarts after it.
- settling: every SETTLE_MS the compactor promotes its last snapshot of the horizons to `settled` and
  takes a new one; readers read slots below the settled horizons eventually consistently
  (meterline.domain.query_plan.is_settled).

Each fold streams: a quarter fold reads one subject bucket's shared raw pages once, then its rows per
counter set (its own pages and its shared entries), a roll-up reads one partition of the level below in key
order and writes each subject's slot as soon as its slots are read. A quarter's manifest is read and
indexed once per run; a late list needs no manifest (a raw partition, own or shared, holds a whole quarter
of one subject bucket).

The compactor must not run concurrently with itself (reserved concurrency 1 on AWS, one thread
locally).
"""

from __future__ import annotations

import heapq
import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from meterline.domain.counting import MeterCounter, Row, aggregate_rows, merge_group_states
from meterline.domain.meters import MeterCatalog
from meterline.domain.slots import (
    BUNDLED_FROM_UNKNOWN,
    DAY,
    HOUR,
    SETTLE_MS,
    Horizons,
    Resolution,
    SlotLevel,
    ZoneDays,
    ZoneRange,
    lower_parts,
    zone_days_kept_from,
)
from meterline.domain.timeutil import DAY_MS, HOUR_MS, QUARTER_MS, floor_to
from meterline.observability import logger
from meterline.processing.counting import counters_for
from meterline.settings import CompactionTiming
from meterline.storage.usage_store import (
    SlotStates,
    UsageStore,
    raw_partition,
    shared_raw_partition,
    subject_prefix,
)

# Bounds per run, so one invocation stays well inside a Lambda timeout; the next run continues.
MAX_QUARTERS_PER_RUN = 96
MAX_LATE_QUARTERS_PER_RUN = 96
# Where a fresh stack's compactor starts looking. It runs from deployment on, so nothing older exists.
INITIAL_QUARTER_LOOKBACK_MS = DAY_MS
INITIAL_LATE_LOOKBACK_MS = 2 * QUARTER_MS
# The compactor's lag metric (CloudWatch embedded metric format, emitted by functions/compactor).
LAG_METRIC = "CompactionLag"
# A late pass re-folds the hours and days of the subjects it touched: one by one while they are few,
# else with one read of the whole partition (a Query per subject costs at least a read unit).
WHOLE_PARTITION_SUBJECTS = 32
# Manifest indexes kept per run (late lists of a backfill can name thousands of quarters).
MAX_CACHED_INDEXES = 512
# Zone days of a newly requested phase are built back to this far before now, at most this many per run.
# (Which namespaces have slots in a UTC day is known from the roll-ups' work items, kept 31 days.)
ZONE_BACKFILL_MS = 30 * DAY_MS
MAX_ZONE_BACKFILL_DAYS_PER_RUN = 4

# (namespace, subject bucket) -> counter sets with raw rows
ManifestIndex = dict[tuple[str, int], set[str]]


@dataclass
class CompactionReport:
    quarters: int = 0
    hours: int = 0
    days: int = 0
    zone_days: int = 0
    late_quarters: int = 0
    units: int = 0
    slot_writes: int = 0
    caught_up: bool = True  # False when a bound stopped the run early: run again
    horizons: Horizons | None = None
    lag_ms: int = 0  # how far the compactor is behind its schedule (0 when up to date)


def compaction_lag(now_ms: int, horizons: Horizons, timing: CompactionTiming) -> int:
    """How long ago the oldest work the compactor has not done became due: the next quarter to fold is
    due `grace` after it ends, the next late list `write_margin` after its processing quarter ends."""
    due = min(horizons.quarter + QUARTER_MS + timing.grace_ms,
              horizons.late_through + QUARTER_MS + timing.write_margin_ms)
    return max(0, now_ms - due)


def _by_namespace(units: Mapping[tuple[str, int], set[str]]) -> dict[str, dict[int, set[str]]]:
    """A quarter's manifest index, {(namespace, bucket): counter sets}, per namespace."""
    by_namespace: dict[str, dict[int, set[str]]] = defaultdict(dict)
    for (namespace, bucket), counter_sets in units.items():
        by_namespace[namespace][bucket] = counter_sets
    return by_namespace


def index_manifest(parts: Iterable[list[Any]]) -> dict[int, ManifestIndex]:
    """Manifest parts [namespace, counter set, minute, bucket] by quarter, then (namespace, bucket)."""
    index: dict[int, ManifestIndex] = defaultdict(lambda: defaultdict(set))
    for namespace, counter_set, minute, bucket in parts:
        index[floor_to(minute, QUARTER_MS)][(namespace, bucket)].add(counter_set)
    return index


class Compactor:
    def __init__(self, store: UsageStore, catalogs: Callable[[str], MeterCatalog], timing: CompactionTiming,
                 zone_requests: Callable[[int], Mapping[int, int]] | None = None) -> None:
        """`zone_requests(now)`: the zone day phases queries ask for, and when (ZoneRequests.requested);
        None keeps the phases the state has."""
        self.store = store
        self.catalogs = catalogs
        self.timing = timing
        self.zone_requests = zone_requests
        self._indexes: dict[int, ManifestIndex] = {}
        self._now_ms: int | None = None  # the current run's
        self._horizons: Horizons | None = None  # the current run's

    def _counters(self, namespace: str) -> dict[str, MeterCounter]:
        """The namespace's counter sets in force. Rows of others (deleted or changed meters) are no
        longer read."""
        return {c.counter_set: c for cs in counters_for(self.catalogs(namespace)).values() for c in cs}

    def run_until_caught_up(self, now_ms: int, max_runs: int = 1000) -> CompactionReport:
        for _ in range(max_runs):
            report = self.run(now_ms)
            if report.caught_up:
                break
        return report

    def run(self, now_ms: int) -> CompactionReport:
        report = CompactionReport()
        self._indexes = {}
        # Slots written in this run live at least a day from now, even a late pass's quarters older than their
        # retention (a recount request): the hour and day are folded from them afterwards.
        self._now_ms = now_ms
        horizons = self.store.get_compaction_state()
        if horizons is None:  # the first run
            start = floor_to(now_ms - self.timing.grace_ms, QUARTER_MS) - INITIAL_QUARTER_LOOKBACK_MS
            horizons = Horizons(quarter=start, hour=floor_to(start, HOUR_MS), day=floor_to(start, DAY_MS),
                                late_through=floor_to(now_ms, QUARTER_MS) - INITIAL_LATE_LOOKBACK_MS,
                                bundled_from=0)  # nothing was compacted before: no per-subject items
            self.store.set_compaction_state(horizons)
        if horizons.bundled_from == BUNDLED_FROM_UNKNOWN:  # first run since slots are bundled, or ever
            horizons.bundled_from = horizons.quarter
            self.store.set_compaction_state(horizons, "bundled_from")
        self._horizons = horizons  # the same object as it moves: which days' hours are bundled (_archived)
        self._settle(horizons, now_ms)
        self._sync_zones(horizons, now_ms)

        # Late rows first: they may belong to quarters (and hours, days) already folded.
        while (horizons.late_through + QUARTER_MS + self.timing.write_margin_ms <= now_ms
               and report.late_quarters < MAX_LATE_QUARTERS_PER_RUN):
            self._fold_late(self.store.read_late(horizons.late_through), horizons, now_ms, report)
            horizons.late_through += QUARTER_MS
            report.late_quarters += 1
            self.store.set_compaction_state(horizons, "late_through")

        self._roll_up(horizons, now_ms, report)  # finishes a roll-up a crashed run left half-done
        while (horizons.quarter + QUARTER_MS + self.timing.grace_ms <= now_ms
               and report.quarters < MAX_QUARTERS_PER_RUN):
            quarter = horizons.quarter
            index = self._index(quarter)
            for namespace, units in sorted(_by_namespace(index).items()):
                self._fold_quarter(namespace, quarter, units, report)
            for namespace in sorted({unit[0] for unit in index}):
                self.store.put_work(HOUR, floor_to(quarter, HOUR_MS), namespace, now_ms)
            horizons.quarter += QUARTER_MS
            report.quarters += 1
            self.store.set_compaction_state(horizons, "quarter")
            self._roll_up(horizons, now_ms, report)
        zones_done = self._backfill_zones(horizons, now_ms, report)

        report.caught_up = zones_done and not (
            horizons.late_through + QUARTER_MS + self.timing.write_margin_ms <= now_ms
            or horizons.quarter + QUARTER_MS + self.timing.grace_ms <= now_ms
        )
        report.horizons = replace(horizons)
        report.lag_ms = compaction_lag(now_ms, horizons, self.timing)
        return report

    def _roll_up(self, horizons: Horizons, now_ms: int, report: CompactionReport) -> None:
        """Fold complete hours below the quarter horizon, then complete days below the hour horizon."""
        while horizons.hour + HOUR_MS <= horizons.quarter:
            hour = horizons.hour
            for namespace in self.store.read_work(HOUR, hour):
                self._fold_up(HOUR, namespace, hour, None, None, report)
                self.store.put_work(DAY, floor_to(hour, DAY_MS), namespace, now_ms)
            horizons.hour += HOUR_MS
            report.hours += 1
            self.store.set_compaction_state(horizons, "hour")
        while horizons.day + DAY_MS <= horizons.hour:
            day = horizons.day
            for namespace in self.store.read_work(DAY, day):
                self._fold_up(DAY, namespace, day, None, None, report)
                # from now on the day's hours are read from bundles (its hour items expire)
                report.slot_writes += self.store.write_hour_bundles(namespace, day, written_ms=self._now_ms)
            horizons.day += DAY_MS
            report.days += 1
            self.store.set_compaction_state(horizons, "day")
        for phase, zone in sorted(horizons.zones.items()):
            while zone.through_ms + DAY_MS <= horizons.hour:
                start = zone.through_ms
                if self._zone_inputs_gone(ZoneDays(phase), start, now_ms):
                    zone.from_ms = zone.through_ms = start + DAY_MS  # the range restarts after it
                else:
                    self._fold_zone_day(ZoneDays(phase), start, report)
                    zone.through_ms += DAY_MS
                self.store.set_compaction_state(horizons, "zones")

    def _fold_zone_day(self, level: ZoneDays, start: int, report: CompactionReport) -> None:
        """One zone day for every namespace with slots in the UTC days it straddles (their work items: put
        by every roll-up into a day, and by late passes that fold a day again)."""
        day = floor_to(start, DAY_MS)
        for namespace in sorted({*self.store.read_work(DAY, day), *self.store.read_work(DAY, day + DAY_MS)}):
            self._fold_up(level, namespace, start, None, None, report)
        report.zone_days += 1

    def _zone_inputs_gone(self, level: ZoneDays, start: int, now_ms: int) -> bool:
        """Whether the quarter slots a zone day folds may have expired (an hour of margin), so that it
        cannot be folded exactly."""
        return level.needs_quarters() and start < now_ms - self.store.retention.quarter_ms + HOUR_MS

    def _backfill_zones(self, horizons: Horizons, now_ms: int, report: CompactionReport) -> bool:
        """Build the zone days of each phase backwards to ZONE_BACKFILL_MS before now (as far as their
        quarters are kept), at most MAX_ZONE_BACKFILL_DAYS_PER_RUN. Returns whether none is left to build."""
        budget = MAX_ZONE_BACKFILL_DAYS_PER_RUN
        for phase, zone in sorted(horizons.zones.items()):
            level = ZoneDays(phase)
            while zone.from_ms - DAY_MS >= now_ms - ZONE_BACKFILL_MS:
                start = zone.from_ms - DAY_MS
                if self._zone_inputs_gone(level, start, now_ms):
                    break
                if budget == 0:
                    return False
                self._fold_zone_day(level, start, report)
                zone.from_ms = start
                budget -= 1
                self.store.set_compaction_state(horizons, "zones")
        return True

    def _settle(self, horizons: Horizons, now_ms: int) -> None:
        """Every SETTLE_MS: the last snapshot of the horizons becomes the settled horizons (readers read
        what lies below them eventually consistently), and a new snapshot is taken. Every slot below a
        snapshot's horizons was written before it was taken (a horizon moves only after its slots are
        written), so once it is SETTLE_MS old nothing below it has been written since, except by late
        passes, whose lists readers look up from the settled `late_through` on."""
        if horizons.snapshot is not None and now_ms - horizons.snapshot[0] < SETTLE_MS:
            return
        horizons.settled = horizons.snapshot[1] if horizons.snapshot is not None else None
        horizons.snapshot = (now_ms, horizons.plain())
        self.store.set_compaction_state(horizons, "settled")

    def _sync_zones(self, horizons: Horizons, now_ms: int) -> None:
        """Start the phases newly requested (their range begins with the last zone day the hour horizon
        has passed: it is built in this run, older ones by _backfill_zones), drop those no longer
        requested, and note when each was last requested."""
        if self.zone_requests is None:
            return
        try:
            requested = self.zone_requests(now_ms)
        except Exception:  # noqa: BLE001 - zone days only save reads; compaction must go on without them
            logger.warning("zone day requests unavailable", exc_info=True)
            return
        zones: dict[int, ZoneRange] = {}
        for phase, at in sorted(requested.items()):
            if not 0 < phase < DAY_MS or phase % QUARTER_MS:
                continue
            zone = horizons.zones.get(phase)
            if zone is None:
                start = ZoneDays(phase).containing(horizons.hour) - DAY_MS
                zones[phase] = ZoneRange(start, start, at, now_ms)
            else:
                zones[phase] = replace(zone, requested_ms=at)
        if zones != horizons.zones:
            horizons.zones = zones
            self.store.set_compaction_state(horizons, "zones")

    def _index(self, quarter: int) -> ManifestIndex:
        """The quarter's manifest, indexed (read once per run)."""
        index = self._indexes.get(quarter)
        if index is None:
            if len(self._indexes) >= MAX_CACHED_INDEXES:
                self._indexes.clear()
            index = self._indexes[quarter] = index_manifest(self.store.read_manifests(quarter)).get(quarter, {})
        return index

    def _fold_quarter(self, namespace: str, quarter: int, units: Mapping[int, set[str]],
                      report: CompactionReport) -> set[str]:
        """Recompute, from all their raw rows, the quarter slots of every subject of the given subject
        buckets for each bucket's counter sets, one counter set's rows at a time (its own pages, then its
        entries in the shared pages, read once per bucket), de-duplicated together; then one write of the
        namespace's quarter (its bundles, and the split items of large states). Returns the subjects."""
        counters = self._counters(namespace)
        per_subject: dict[str, dict[str, str]] = defaultdict(dict)
        for bucket, counter_sets in sorted(units.items()):
            shared: dict[str, list[list[Any]]] = defaultdict(list)
            for counter_set, entry in self.store.iter_shared_raw(shared_raw_partition(namespace, quarter, bucket)):
                if counter_set in counter_sets and counter_set in counters:
                    shared[counter_set].extend(entry)
            for counter_set in sorted(counter_sets):
                counter = counters.get(counter_set)
                if counter is None:
                    continue
                rows = (Row.from_list(raw) for raw in itertools.chain(self.store.iter_raw(
                    raw_partition(namespace, counter_set, quarter, bucket)), shared.pop(counter_set, ())))
                for subject, by_group in aggregate_rows(counter.aggregation, rows).items():
                    per_subject[subject][counter_set] = orjson.dumps(by_group).decode()
            report.units += 1
        report.slot_writes += self.store.put_quarter_slots(namespace, quarter, per_subject, written_ms=self._now_ms,
                                                           legacy=self._legacy(quarter))
        return set(per_subject)

    def _fold_late(self, parts: list[list[Any]], horizons: Horizons, now_ms: int,
                   report: CompactionReport) -> None:
        redo_hours: dict[tuple[str, int], tuple[set[str], set[str]]] = defaultdict(lambda: (set(), set()))
        redo_zones: dict[tuple[int, int, str], tuple[set[str], set[str]]] = defaultdict(lambda: (set(), set()))
        for quarter, units in sorted(index_manifest(parts).items()):
            for namespace, by_bucket in sorted(_by_namespace(units).items()):
                subjects = self._fold_quarter(namespace, quarter, by_bucket, report)
                late = set().union(*by_bucket.values())
                for phase, zone in horizons.zones.items():
                    start = ZoneDays(phase).containing(quarter)
                    if zone.holds(start):  # built: fold it again (after its hours, below)
                        redo_zones[(phase, start, namespace)][0].update(subjects)
                        redo_zones[(phase, start, namespace)][1].update(late)
                hour = floor_to(quarter, HOUR_MS)
                if hour < horizons.hour:
                    redo_hours[(namespace, hour)][0].update(subjects)
                    redo_hours[(namespace, hour)][1].update(late)
                else:
                    self.store.put_work(HOUR, hour, namespace, now_ms)
        redo_days: dict[tuple[str, int], tuple[set[str], set[str]]] = defaultdict(lambda: (set(), set()))
        for (namespace, hour), (subjects, counter_sets) in sorted(redo_hours.items()):
            self._fold_up(HOUR, namespace, hour, subjects, counter_sets, report)
            day = floor_to(hour, DAY_MS)
            if day < horizons.day:
                redo_days[(namespace, day)][0].update(subjects)
                redo_days[(namespace, day)][1].update(counter_sets)
            else:
                self.store.put_work(DAY, day, namespace, now_ms)
        for (namespace, day), (subjects, counter_sets) in sorted(redo_days.items()):
            self._fold_up(DAY, namespace, day, subjects, counter_sets, report)
            # The day's work items also say which namespaces have slots in it (zone days are folded for
            # those): a namespace whose only rows of a folded day came late has one from here.
            self.store.put_work(DAY, day, namespace, now_ms)
        for (phase, start, namespace), (subjects, counter_sets) in sorted(redo_zones.items()):
            zone = horizons.zones[phase]
            if not zone.holds(start) or start < zone_days_kept_from(now_ms, self.store.retention.zone_day_ms):
                continue  # no longer kept (below), or expiring: no query reads it
            if self._zone_inputs_gone(ZoneDays(phase), start, now_ms):
                # It cannot be folded exactly any more: readers must stop using it, and every zone day before
                # it (the range is one stretch), before this pass's late list counts as folded.
                zone.from_ms = start + DAY_MS
                self.store.set_compaction_state(horizons, "zones")
                continue
            self._fold_up(ZoneDays(phase), namespace, start, subjects, counter_sets, report)

    def _fold_up(self, level: SlotLevel, namespace: str, start: int, subjects: set[str] | None,
                 counter_sets: set[str] | None, report: CompactionReport) -> None:
        """Recompute the `level` slot starting at `start` (an hour, a day or a zone day) from the slots
        one level down (meterline.domain.slots.lower_parts: one partition for an hour or a day, up to four
        for a zone day, merged subject by subject in key order): for every subject of the namespace, or
        the given ones; for every counter set in force, or the given ones. Streamed subject by subject. A
        few subjects are read one by one; from WHOLE_PARTITION_SUBJECTS on (a bulk of late events) each
        partition is read once and only the given subjects are written."""
        counters = self._counters(namespace)
        wanted = sorted(cs for cs in counters if counter_sets is None or cs in counter_sets)
        by_subject = sorted(subjects, key=subject_prefix) if (
            subjects is not None and len(subjects) < WHOLE_PARTITION_SUBJECTS) else None
        # an hour of a day whose hours are bundled (a late pass) is written to its bundles, all at once
        bundled: dict[str, dict[int, dict[str, str]]] | None = (
            {} if level is HOUR and self._archived(HOUR, floor_to(start, DAY_MS)) else None)
        streams = [self._read_part(namespace, part, wanted, by_subject) for part in lower_parts(level, start)]
        merged_streams = heapq.merge(*streams, key=lambda entry: subject_prefix(entry[0]))
        for item_subject, entries in itertools.groupby(merged_streams, key=lambda entry: entry[0]):
            if subjects is not None and item_subject not in subjects:
                continue
            merged: dict[str, dict[str, list[Any]]] = {}
            for _, slots in entries:  # the parts in time order, each's slots in index order
                for states in slots.values():
                    for counter_set, state in states.items():
                        merge_group_states(counters[counter_set].aggregation, merged.setdefault(counter_set, {}),
                                           orjson.loads(state))
            if not merged:
                continue
            states = {cs: orjson.dumps(groups).decode() for cs, groups in sorted(merged.items())}
            if bundled is not None:
                bundled[item_subject] = {HOUR.index(start): states}
            else:
                report.slot_writes += self.store.put_slot(namespace, level, start, item_subject, states,
                                                          written_ms=self._now_ms)
        if bundled:
            report.slot_writes += self.store.put_bundled(namespace, HOUR, floor_to(start, DAY_MS), bundled,
                                                         written_ms=self._now_ms, legacy=True)

    def _archived(self, level: SlotLevel, period: int) -> bool:
        return self._horizons is not None and self._horizons.hours_bundled(level, period)

    def _legacy(self, period: int) -> bool:
        return self._horizons is None or self._horizons.before_bundles(period)

    def _read_part(self, namespace: str, part: tuple[Resolution, int, int, int], counter_sets: list[str],
                   subjects: list[str] | None) -> Iterator[tuple[str, SlotStates]]:
        """The slots first..last of one partition, per subject in key order: of the given subjects (one
        Query each), or of every subject (the whole partition)."""
        level, period, first, last = part
        archived, legacy = self._archived(level, period), self._legacy(period)
        if subjects is None:
            read = self.store.read_slots(namespace, level, period, counter_sets, archived=archived, legacy=legacy)
        else:
            read = itertools.chain.from_iterable(
                self.store.read_slots(namespace, level, period, counter_sets, subject, first, last, archived=archived,
                                      legacy=legacy)
                for subject in subjects)
        for subject, slots in read:
            yield subject, {index: states for index, states in slots.items() if first <= index <= last}
