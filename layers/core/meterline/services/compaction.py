"""The compactor: folds raw rows into quarter-hour slots and quarter slots into day slots.

Every slot is *recomputed* from the level below and overwritten, never incremented, so running any
step twice, or crashing half-way and running it again, leaves the same numbers. Work is found through
manifests (see processing/counting.py):

- on-time pass: quarter after quarter, once a quarter ended `grace` ago, fold every (counter set,
  subject bucket) its manifest lists; then move the quarter horizon on. Queries read quarter slots
  only below that horizon and raw rows above it, so no row is ever read twice.
- day pass: when the quarter horizon passes midnight, fold each subject's 96 quarter slots into a day
  slot; then move the day horizon on.
- late pass: rows that arrived after their quarter was (or may have been) folded are listed by
  processing quarter-hour; their quarters are folded again, and their days too if already folded.

The compactor must not run concurrently with itself (reserved concurrency 1 on AWS, one thread
locally).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from meterline.domain.counting import MeterCounter, Row, aggregate_rows, merge_group_states
from meterline.domain.meters import MeterCatalog
from meterline.domain.slots import DAY_MS, QUARTER_MS, day_of_month, floor_to, month_start, quarter_index
from meterline.processing.counting import counters_for
from meterline.settings import CompactionTiming
from meterline.storage.usage_store import UsageStore, raw_partition, slot_key, slot_partition

# Bounds per run, so one invocation stays well inside a Lambda timeout; the next run continues.
MAX_QUARTERS_PER_RUN = 96
MAX_LATE_QUARTERS_PER_RUN = 96
# Where a fresh stack's compactor starts looking. It runs from deployment on, so nothing older exists.
INITIAL_QUARTER_LOOKBACK_MS = DAY_MS
INITIAL_LATE_LOOKBACK_MS = 2 * QUARTER_MS


@dataclass
class CompactionReport:
    quarters: int = 0
    days: int = 0
    late_quarters: int = 0
    units: int = 0
    slot_writes: int = 0
    caught_up: bool = True  # False when a bound stopped the run early: run again
    horizons: dict[str, int] = field(default_factory=dict)


class Compactor:
    def __init__(self, store: UsageStore, catalogs: Callable[[str], MeterCatalog], timing: CompactionTiming) -> None:
        self.store = store
        self.catalogs = catalogs
        self.timing = timing

    def _counter(self, namespace: str, counter_set: str) -> MeterCounter | None:
        for counters in counters_for(self.catalogs(namespace)).values():
            for counter in counters:
                if counter.counter_set == counter_set:
                    return counter
        return None  # the meter was deleted or changed: its counters are no longer read

    def run_until_caught_up(self, now_ms: int, max_runs: int = 1000) -> CompactionReport:
        for _ in range(max_runs):
            report = self.run(now_ms)
            if report.caught_up:
                break
        return report

    def run(self, now_ms: int) -> CompactionReport:
        report = CompactionReport()
        self._directory: dict[int, list[list[Any]]] = {}
        state = self.store.get_compaction_state()
        start = floor_to(now_ms - self.timing.grace_ms, QUARTER_MS) - INITIAL_QUARTER_LOOKBACK_MS
        quarter_horizon = state.get("quarterHorizon", start)
        day_horizon = state.get("dayHorizon", floor_to(quarter_horizon, DAY_MS))
        late_through = state.get("lateThrough", floor_to(now_ms, QUARTER_MS) - INITIAL_LATE_LOOKBACK_MS)
        if not state:
            self.store.set_compaction_state(quarterHorizon=quarter_horizon, dayHorizon=day_horizon,
                                            lateThrough=late_through)

        # Late rows first: they may belong to quarters (and days) already folded.
        while (late_through + QUARTER_MS + self.timing.write_margin_ms <= now_ms
               and report.late_quarters < MAX_LATE_QUARTERS_PER_RUN):
            parts = self.store.read_manifests(f"late#{late_through}")
            self._fold_late(parts, day_horizon, now_ms, report)
            late_through += QUARTER_MS
            report.late_quarters += 1
            self.store.set_compaction_state(lateThrough=late_through)

        while (quarter_horizon + QUARTER_MS + self.timing.grace_ms <= now_ms
               and report.quarters < MAX_QUARTERS_PER_RUN):
            units = self._units(self._quarter_parts(quarter_horizon))
            for (namespace, quarter, bucket), counter_sets in sorted(units.items()):
                self._fold_quarter(namespace, quarter, bucket, counter_sets, report)
            for namespace in {unit[0] for unit in units}:
                self.store.put_daywork(floor_to(quarter_horizon, DAY_MS), namespace, now_ms)
            quarter_horizon += QUARTER_MS
            report.quarters += 1
            self.store.set_compaction_state(quarterHorizon=quarter_horizon)
            while day_horizon + DAY_MS <= quarter_horizon:
                for namespace in self.store.read_daywork(day_horizon):
                    self._fold_day(namespace, day_horizon, None, report)
                day_horizon += DAY_MS
                report.days += 1
                self.store.set_compaction_state(dayHorizon=day_horizon)

        report.caught_up = not (
            late_through + QUARTER_MS + self.timing.write_margin_ms <= now_ms
            or quarter_horizon + QUARTER_MS + self.timing.grace_ms <= now_ms
        )
        report.horizons = {"quarterHorizon": quarter_horizon, "dayHorizon": day_horizon, "lateThrough": late_through}
        return report

    def _fold_quarter(self, namespace: str, quarter: int, bucket: int, counter_sets: set[str],
                      report: CompactionReport) -> set[str]:
        """Recompute, from all their raw rows, the quarter slots of every subject of one subject bucket
        for the given counter sets; one write per subject carries every counter set. Returns the
        subjects written."""
        per_subject: dict[str, dict[str, str]] = defaultdict(dict)
        for counter_set in sorted(counter_sets):
            counter = self._counter(namespace, counter_set)
            if counter is None:
                continue
            rows: list[Row] = []
            minutes = sorted({minute for ns, cs, minute, b in self._quarter_parts(quarter)
                              if ns == namespace and cs == counter_set and b == bucket})
            for minute in minutes:
                partition = raw_partition(namespace, counter_set, minute, bucket)
                rows.extend(Row.from_list(raw) for raw in self.store.read_raw(partition))
            for subject, by_group in aggregate_rows(counter.aggregation, rows).items():
                per_subject[subject][counter_set] = orjson.dumps(by_group).decode()
        partition = slot_partition(namespace, "q", floor_to(quarter, DAY_MS))
        index = quarter_index(quarter)
        for subject, states in per_subject.items():
            self.store.put_slots(partition, slot_key(subject, index), states)
            report.slot_writes += 1
        report.units += 1
        return set(per_subject)

    def _quarter_parts(self, quarter: int) -> list[list[Any]]:
        """Every raw partition of a quarter, from its manifest (read once per run)."""
        if quarter not in self._directory:
            self._directory[quarter] = self.store.read_manifests(f"manifest#{quarter}")
        return self._directory[quarter]

    @staticmethod
    def _units(parts: list[list[Any]]) -> dict[tuple[str, int, int], set[str]]:
        """Manifest parts grouped into (namespace, quarter, bucket) -> counter sets."""
        units: dict[tuple[str, int, int], set[str]] = defaultdict(set)
        for namespace, counter_set, minute, bucket in parts:
            units[(namespace, floor_to(minute, QUARTER_MS), bucket)].add(counter_set)
        return units

    def _fold_late(self, parts: list[list[Any]], day_horizon: int, now_ms: int, report: CompactionReport) -> None:
        redo_days: dict[tuple[str, int], set[str]] = defaultdict(set)
        for (namespace, quarter, bucket), counter_sets in sorted(self._units(parts).items()):
            subjects = self._fold_quarter(namespace, quarter, bucket, counter_sets, report)
            day = floor_to(quarter, DAY_MS)
            if day < day_horizon:
                redo_days[(namespace, day)] |= subjects
            else:
                self.store.put_daywork(day, namespace, now_ms)
        for (namespace, day), subjects in sorted(redo_days.items()):
            for subject in sorted(subjects):
                self._fold_day(namespace, day, subject, report)

    def _fold_day(self, namespace: str, day: int, subject: str | None, report: CompactionReport) -> None:
        """Recompute day slots from quarter slots: one subject's, or every subject's of the namespace."""
        catalog_counters = {c.counter_set: c for cs in counters_for(self.catalogs(namespace)).values() for c in cs}
        merged: dict[str, dict[str, dict[str, list[Any]]]] = defaultdict(dict)  # subject -> cs -> groups
        for item in self.store.read_slot_items(slot_partition(namespace, "q", day), subject):
            item_subject = item["sk"]["S"].rpartition("#")[0]
            for name, value in item.items():
                if not name.startswith("c") or name[1:] not in catalog_counters:
                    continue
                counter = catalog_counters[name[1:]]
                into = merged[item_subject].setdefault(name[1:], {})
                merge_group_states(counter.aggregation, into, orjson.loads(value["S"]))
        partition = slot_partition(namespace, "d", month_start(day))
        index = day_of_month(day)
        for item_subject, by_counter in merged.items():
            if by_counter:
                self.store.put_slots(partition, slot_key(item_subject, index),
                                     {cs: orjson.dumps(groups).decode() for cs, groups in by_counter.items()})
                report.slot_writes += 1
