"""The plan of a usage query: which quarter, hour and day slots and which raw time ranges answer each of
its windows, each part of time from exactly one of them. Pure: it takes the compactor's horizons and the
quarters with unfolded late rows, and reads nothing."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from meterline.domain.slots import Horizons, Resolution
from meterline.domain.timeutil import QUARTER_MS, floor_to
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
    slots: dict[tuple[Resolution, int], list[int]] = field(default_factory=lambda: defaultdict(list))  # -> starts
    raw_ranges: list[tuple[int, int]] = field(default_factory=list)



def plan(query: UsageQuery, horizons: Horizons | None, pending: frozenset[int] = frozenset(),
         max_windows: int = DEFAULT_MAX_WINDOWS) -> Plan:
    """Which slots and raw ranges answer each window. Quarter, hour and day slots are complete below the
    compactor's quarter, hour and day horizons (None: it never ran). `pending` are quarters with late rows
    the compactor has not folded yet: they are read from raw rows, and their hours and days from the slots
    around them. Raises TooManyWindows beyond `max_windows` windows."""
    quarter_horizon = horizons.quarter if horizons else 0
    hour_horizon = min(horizons.hour, quarter_horizon) if horizons else 0
    day_horizon = min(horizons.day, hour_horizon) if horizons else 0
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

    for start, end in windows:
        lo = min(-(-start // QUARTER_MS) * QUARTER_MS, end)
        hi = max(lo, min(floor_to(end, QUARTER_MS), quarter_horizon))
        if lo > start:
            result.raw_ranges.append((start, lo))
        if hi < end:
            result.raw_ranges.append((hi, end))
        if hi <= lo:
            continue
        by_day = max(lo, min(hi, day_horizon))
        by_hour = max(by_day, min(hi, hour_horizon))
        for a, b, levels in ((lo, by_day, (Resolution.QUARTER, Resolution.HOUR, Resolution.DAY)),
                             (by_day, by_hour, (Resolution.QUARTER, Resolution.HOUR)),
                             (by_hour, hi, (Resolution.QUARTER,))):
            if b > a:
                place(a, b, levels)
    return result
