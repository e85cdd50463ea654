"""The plan of a usage query: which slots and which raw time ranges answer each of its windows, each part of
time from exactly one of them, and which slot reads may be eventually consistent. Pure: it takes the
compactor's horizons and the quarters named by late lists, and reads nothing."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from meterline.domain.slots import DAY, HOUR, QUARTER, Horizons, Resolution, SlotLevel, ZoneDays, ZoneRange, phase_of
from meterline.domain.timeutil import DAY_MS, QUARTER_MS, floor_to
from meterline.domain.windows import DEFAULT_MAX_WINDOWS, WindowSize, cover, plan_windows, resolve_time_zone


@dataclass
class UsageQuery:
    from_ms: int
    to_ms: int
    window_size: WindowSize | None = None
    time_zone: str = "UTC"
    subjects: list[str] | None = None
    group_by: list[str] = field(default_factory=list)
    filter_group_by: dict[str, list[str]] = field(default_factory=dict)
    # Explicit contiguous windows [start, end) from from_ms to to_ms, instead of window_size's (the
    # phases of an entitlement's burn-down).
    windows: list[tuple[int, int]] | None = None

    @property
    def zone(self) -> ZoneInfo:
        return resolve_time_zone(self.time_zone)


@dataclass
class Plan:
    windows: list[tuple[int, int]]
    slots: dict[tuple[SlotLevel, int], list[int]] = field(default_factory=lambda: defaultdict(list))  # -> starts
    raw_ranges: list[tuple[int, int]] = field(default_factory=list)
    # (level, period) reads whose slots are all settled: they may be read eventually consistently
    eventual: set[tuple[SlotLevel, int]] = field(default_factory=set)
    # The phases of the whole 24-hour local days of DAY windows off UTC: what zone days would serve
    day_phases: set[int] = field(default_factory=set)


def plan(query: UsageQuery, horizons: Horizons | None, pending: frozenset[int] = frozenset(),
         max_windows: int = DEFAULT_MAX_WINDOWS, recent: frozenset[int] = frozenset(),
         zone_days_from: int | None = None) -> Plan:
    """Which slots and raw ranges answer each window. Quarter, hour and day slots are complete below the
    compactor's quarter, hour and day horizons (None: it never ran), zone days where its `zones` say and
    from `zone_days_from` on (older ones may have expired).
    `pending` are quarters with late rows the compactor has not folded yet: they are read from raw rows,
    and their hours and days from the slots around them. `recent` are quarters it re-folded from late rows
    since its settled horizons: slots holding them are read strongly consistently. Raises TooManyWindows
    beyond `max_windows` windows."""
    quarter_horizon = horizons.quarter if horizons else 0
    hour_horizon = min(horizons.hour, quarter_horizon) if horizons else 0
    day_horizon = min(horizons.day, hour_horizon) if horizons else 0
    zones = horizons.zones if horizons else {}
    if query.windows is not None:
        windows = list(query.windows)
    elif query.window_size is None:
        windows = [(query.from_ms, query.to_ms)]
    else:
        windows = plan_windows(query.from_ms, query.to_ms, query.window_size, query.zone, max_windows=max_windows)
    result = Plan(windows)

    def place(start: int, end: int, levels: tuple[Resolution, ...]) -> None:
        for bucket in cover(start, end, Resolution.QUARTER, levels=levels).buckets:
            if not any(bucket.start_ms <= q < bucket.end_ms for q in pending):
                level = bucket.resolution
                result.slots[(level, level.period(bucket.start_ms))].append(bucket.start_ms)
            elif bucket.resolution is Resolution.QUARTER:
                result.raw_ranges.append((bucket.start_ms, bucket.end_ms))
            else:  # a pending quarter inside: the finer levels around it
                place(bucket.start_ms, bucket.end_ms, levels[:levels.index(bucket.resolution)])

    def place_range(start: int, end: int) -> None:
        """UTC slots below their horizons, raw rows above them and at edges off the quarter-hour."""
        lo = min(-(-start // QUARTER_MS) * QUARTER_MS, end)
        hi = max(lo, min(floor_to(end, QUARTER_MS), quarter_horizon))
        if lo > start:
            result.raw_ranges.append((start, lo))
        if hi < end:
            result.raw_ranges.append((hi, end))
        if hi <= lo:
            return
        by_day = max(lo, min(hi, day_horizon))
        by_hour = max(by_day, min(hi, hour_horizon))
        for a, b, levels in ((lo, by_day, (Resolution.QUARTER, Resolution.HOUR, Resolution.DAY)),
                             (by_day, by_hour, (Resolution.QUARTER, Resolution.HOUR)),
                             (by_hour, hi, (Resolution.QUARTER,))):
            if b > a:
                place(a, b, levels)

    def zone_day(start: int, end: int) -> ZoneDays | None:
        """The zone day level that holds [start, end) as one complete slot, if any."""
        phase = phase_of(start)
        if end - start != DAY_MS or phase == 0 or phase % QUARTER_MS:
            return None
        zone = zones.get(phase)
        if zone is None or not zone.holds(start) or any(start <= q < end for q in pending):
            return None
        if zone_days_from is not None and start < zone_days_from:
            return None
        return ZoneDays(phase)

    for start, end in windows:
        if query.window_size is WindowSize.DAY:
            phase = phase_of(start)
            if end - start == DAY_MS and phase and phase % QUARTER_MS == 0:
                result.day_phases.add(phase)
        if not zones or query.windows is not None or query.window_size not in (WindowSize.DAY, WindowSize.MONTH):
            place_range(start, end)
            continue
        # Local days a zone day holds are one slot each; the rest of the window as before.
        days = [(start, end)] if query.window_size is WindowSize.DAY else plan_windows(
            start, end, WindowSize.DAY, query.zone)
        rest: list[int] = []  # [start, end) of the part not served by zone days yet
        for a, b in days:
            level = zone_day(a, b)
            if level is None:
                rest = [rest[0] if rest else a, b]
                continue
            if rest:
                place_range(*rest)
                rest = []
            result.slots[(level, level.period(a))].append(a)
        if rest:
            place_range(*rest)

    settled = horizons.settled if horizons else None
    if settled is not None:
        result.eventual = {read for read, starts in result.slots.items()
                           if all(is_settled(read[0], start, settled, recent, zones) for start in starts)}
    return result


def is_settled(level: SlotLevel, start: int, settled: Horizons, recent: Collection[int],
               zones: Mapping[int, ZoneRange]) -> bool:
    """Whether nothing can have written the slot since the `settled` horizons were current (at least
    SETTLE_MS ago), so that an eventually consistent read returns what a strongly consistent one would.

    A slot is written when it is first folded, before the compactor moves its horizon past it, and again
    only when a late pass re-folds a quarter inside it (its quarter, hour, day and zone days), for a quarter
    that a late list names. So a slot is settled when it lies below the settled horizons of its level and
    no late list from the settled `late_through` on (`recent`, the quarters re-folded since, or about to be)
    names a quarter inside it. Zone days are settled when the settled range of their phase (the same
    range as now, `zones`: not one dropped and started again since) holds them."""
    end = start + level.length_ms
    if any(start <= q < end for q in recent):
        return False
    if isinstance(level, ZoneDays):
        zone, current = settled.zones.get(level.phase_ms), zones.get(level.phase_ms)
        return (zone is not None and current is not None and zone.created_ms == current.created_ms
                and zone.holds(start))
    horizon = {QUARTER: settled.quarter, HOUR: min(settled.hour, settled.quarter),
               DAY: min(settled.day, settled.hour, settled.quarter)}.get(level, 0)
    return end <= horizon
