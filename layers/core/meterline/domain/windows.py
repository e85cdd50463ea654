"""Query windows in a time zone, and their exact cover by UTC-aligned counter buckets.

A usage query asks for windows (`WindowSize`: MINUTE, HOUR, DAY, MONTH) aligned in an IANA time zone.
Answering it takes two pure steps, both here:

1. `plan_windows` turns (from, to, windowSize, windowTimeZone) into the list of query windows
   `[start, end)` in epoch milliseconds, DST-correct.
2. `cover` turns a stretch of time into the fewest UTC-aligned buckets (`Resolution`: by default
   MINUTE, HOUR, DAY; the usage reader asks for QUARTER, HOUR and DAY, its slot levels) that cover it
   exactly: the coarsest where whole ones fit, finer ones at the edges.

All times are integers, epoch milliseconds. Only the standard library is used (datetime, zoneinfo).
Whether the counters a cover needs are still kept is the reader's question (fine resolutions may be
kept shorter: services/usage_query.py refuses such queries with a 400 naming the edge to move).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from meterline.domain.slots import Resolution
from meterline.domain.timeutil import ceil_to, floor_to

__all__ = [
    "DEFAULT_MAX_WINDOWS",
    "MAX_MS",
    "MIN_MS",
    "Bucket",
    "Cover",
    "Resolution",
    "TooManyWindows",
    "WindowSize",
    "cover",
    "plan_windows",
    "resolve_time_zone",
]

DEFAULT_MAX_WINDOWS = 10_000


class WindowSize(StrEnum):
    """The `windowSize` of a usage query (OpenMeter v1)."""

    MINUTE = "MINUTE"
    HOUR = "HOUR"
    DAY = "DAY"
    MONTH = "MONTH"


DEFAULT_LEVELS: tuple[Resolution, ...] = (Resolution.MINUTE, Resolution.HOUR, Resolution.DAY)  # finest first


# --------------------------------------------------------------------------------------------------
# Time zones
# --------------------------------------------------------------------------------------------------

# IANA names are ASCII path components such as "America/Argentina/Buenos_Aires", "Etc/GMT+5", "UTC".
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*")
# Files that live in the tz database directory without naming a zone (or naming the host's own zone).
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})
_NOT_ZONE_PREFIXES = ("posix/", "right/")


def resolve_time_zone(name: str) -> ZoneInfo:
    """The IANA time zone called `name`, or ValueError("unknown time zone ...").

    Only plain IANA names are accepted: no empty string, no paths ("../etc/passwd", "/etc/localtime"),
    no host-dependent names ("localtime", "local"), no "posix/" or "right/" (leap-second) variants.
    """
    if (
        not isinstance(name, str)
        or len(name) > 64
        or not _ZONE_NAME.fullmatch(name)
        or name in _NOT_ZONES
        or name.startswith(_NOT_ZONE_PREFIXES)
    ):
        raise ValueError(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # not found, not a TZif file, a directory
        raise ValueError(f"unknown time zone {name!r}") from exc


# --------------------------------------------------------------------------------------------------
# Query windows
# --------------------------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
# Supported instants: far enough inside datetime's range that local times in any zone (±1 day) exist.
MIN_MS = (datetime(1, 1, 3, tzinfo=UTC) - _EPOCH) // _ONE_MS
MAX_MS = (datetime(9999, 12, 29, tzinfo=UTC) - _EPOCH) // _ONE_MS
# The offset of a zone is probed every _PROBE_MS; between two probes that agree it is taken as constant.
# This assumes no zone changes its UTC offset twice within 6 hours: the closest such pair in the tz
# database is about 4 days apart (Africa/Freetown, 1939), and tests check the installed database.
_PROBE_MS = 6 * Resolution.HOUR


def _to_local(ms: int, tz: ZoneInfo) -> datetime:
    return (_EPOCH + timedelta(milliseconds=ms)).astimezone(tz)


def _offset_ms(tz: ZoneInfo, ms: int) -> int:
    """The UTC offset of `tz` at the instant `ms`, in milliseconds."""
    offset = (_EPOCH + timedelta(milliseconds=ms)).astimezone(tz).utcoffset()
    return offset // _ONE_MS  # type: ignore[operator]  # zoneinfo always gives an offset


def _epoch_ms(moment: datetime) -> int:
    return (moment - _EPOCH) // _ONE_MS


def _find_transition(tz: ZoneInfo, lo: int, hi: int, offset_lo: int) -> int:
    """The first instant in (lo, hi] whose offset differs from `offset_lo` (the offset at lo).

    The offset at `hi` must differ from `offset_lo`, and there must be one transition in (lo, hi].
    """
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset_ms(tz, mid) == offset_lo:
            lo = mid
        else:
            hi = mid
    return hi


def _first_instant_at_or_after(label: datetime, tz: ZoneInfo) -> int:
    """The first instant whose local wall time in `tz` is at or after the naive local time `label`.

    For a wall time that occurs once this is that instant; for one that occurs twice (a DST fold) the
    earlier one; for one that does not occur (a DST gap, e.g. a midnight skipped in America/Santiago
    or Asia/Beirut) the transition instant that skips it.
    """
    first = label.replace(tzinfo=tz, fold=0)
    early = _epoch_ms(first)  # fold=0: the offset before a transition
    late = _epoch_ms(first.replace(fold=1))  # fold=1: the offset after it
    if early <= late:  # exists once (equal) or twice (a fold: the earlier one)
        return early
    # A gap: with the offsets before (o1) and after (o2) the transition T, T + o1 <= label < T + o2,
    # so T lies in (label - o2, label - o1] = (late, early].
    return _find_transition(tz, late, early, _offset_ms(tz, late))


def _clock_boundaries(lo: int, hi: int, tz: ZoneInfo, unit: int, limit: int) -> list[int]:
    """MINUTE or HOUR window boundaries strictly inside (lo, hi).

    A boundary is an instant at which the wall clock of `tz` reads a whole minute (hour), plus, for a
    wall-clock time skipped by a DST gap, the transition instant that skips it. In a fold both
    occurrences of a whole hour are boundaries, so New York's 01:00 on the day clocks go back starts two
    one-hour windows (01:00 EDT and 01:00 EST). Computed per constant-offset segment with arithmetic,
    looking up the offset only every _PROBE_MS and at transitions.
    """
    out: list[int] = []

    def marks(a: int, b: int, offset: int) -> None:
        first = a + (-(a + offset)) % unit  # the first instant >= a whose wall time is a whole unit
        if first <= lo:
            first += unit
        count = len(range(first, b, unit))
        if len(out) + count > limit:
            raise _TooManyWindows
        out.extend(range(first, b, unit))

    t = lo
    offset = _offset_ms(tz, t)
    while t < hi:
        probe = min(t + _PROBE_MS, hi)
        if _offset_ms(tz, probe) == offset:
            marks(t, probe, offset)
            t = probe
            continue
        transition = _find_transition(tz, t, probe, offset)
        marks(t, transition, offset)
        after = _offset_ms(tz, transition)
        # Clocks jump from transition + offset to transition + after. A whole unit in between does not
        # occur on the wall clock; its window starts at the transition. (If transition + after is itself
        # a whole unit, the next segment yields the transition.)
        if (
            after > offset
            and (transition + after) % unit
            and ceil_to(transition + offset, unit) < transition + after
            and transition < hi
        ):
            if len(out) + 1 > limit:
                raise _TooManyWindows
            out.append(transition)
        t, offset = transition, after
    return out


def _next_label(label: datetime, size: WindowSize) -> datetime | None:
    if size is WindowSize.DAY:
        return None if label.date() == label.date().max else label + timedelta(days=1)
    if label.month == 12:
        return None if label.year == 9999 else label.replace(year=label.year + 1, month=1)
    return label.replace(month=label.month + 1)


def _calendar_boundaries(lo: int, hi: int, tz: ZoneInfo, size: WindowSize, limit: int) -> list[int]:
    """DAY or MONTH window boundaries strictly inside (lo, hi): local midnights (of the 1st for MONTH),
    each taken as the first instant at or after that local midnight."""
    local = _to_local(lo, tz)
    label = datetime(local.year, local.month, local.day if size is WindowSize.DAY else 1)
    out: list[int] = []
    while (following := _next_label(label, size)) is not None:
        label = following
        boundary = _first_instant_at_or_after(label, tz)
        if boundary >= hi:
            break
        # A fold across midnight can put earlier boundaries at or before lo; a day skipped entirely
        # (Pacific/Apia, 2011-12-30) has the same boundary as the next one.
        if boundary > lo and (not out or boundary > out[-1]):
            if len(out) + 1 > limit:
                raise _TooManyWindows
            out.append(boundary)
    return out


class _TooManyWindows(Exception):
    pass


class TooManyWindows(ValueError):
    """A query that would have more windows than allowed."""


def plan_windows(
    from_ms: int,
    to_ms: int,
    window_size: WindowSize | str | None,
    tz: ZoneInfo,
    *,
    max_windows: int = DEFAULT_MAX_WINDOWS,
) -> list[tuple[int, int]]:
    """The query windows `[start, end)` that partition `[from_ms, to_ms)`, in order.

    OpenMeter semantics: `from` is inclusive, `to` exclusive. Without a window size there is one window,
    `(from_ms, to_ms)`. Otherwise the windows are aligned in `tz`:

    * MINUTE, HOUR: a window starts wherever the wall clock of `tz` reads a whole minute (hour), so in
      Asia/Kolkata (+05:30) HOUR windows start at :30 UTC and in Asia/Kathmandu (+05:45) at :15 UTC.
      Across a DST fold both occurrences of a repeated hour start a window (New York's two 01:00s on
      2024-11-03 give two one-hour windows); a whole hour skipped by a gap starts its window at the
      transition (Australia/Lord_Howe's 30-minute shift gives a 30-minute window).
    * DAY: a window starts at local midnight, so a New York day is 23 hours on 2024-03-10 and 25 hours
      on 2024-11-03. A midnight that does not exist (a gap at midnight, as America/Santiago and
      Asia/Beirut have had) starts at the first instant after it; of a midnight that occurs twice, the
      first occurrence counts; a day skipped entirely (Pacific/Apia, 2011-12-30) has no window.
    * MONTH: a window starts at local midnight of the 1st, with the same rules as DAY.

    Clipping: a window partially outside `[from_ms, to_ms)` is clipped to it, so the first window starts
    at `from_ms` and the last ends at `to_ms` even when those are not window boundaries; every window is
    non-empty and the windows are contiguous.

    Raises ValueError when `from_ms >= to_ms`, when either is outside [MIN_MS, MAX_MS], for an unknown
    window size, or when more than `max_windows` windows would be produced (checked while planning, so
    an absurd request costs no more than `max_windows` windows of work).
    """
    if isinstance(from_ms, bool) or isinstance(to_ms, bool):
        raise ValueError("from and to must be epoch milliseconds")
    if from_ms >= to_ms:
        raise ValueError("from must be before to")
    if from_ms < MIN_MS or to_ms > MAX_MS:
        raise ValueError("from and to must lie between years 1 and 9999")
    if max_windows < 1:
        raise ValueError("max_windows must be at least 1")
    if window_size is None:
        return [(from_ms, to_ms)]
    try:
        size = WindowSize(window_size)
    except ValueError:
        raise ValueError(f"unknown window size {window_size!r}") from None
    try:
        if size is WindowSize.MINUTE:
            bounds = _clock_boundaries(from_ms, to_ms, tz, Resolution.MINUTE, max_windows - 1)
        elif size is WindowSize.HOUR:
            bounds = _clock_boundaries(from_ms, to_ms, tz, Resolution.HOUR, max_windows - 1)
        else:
            bounds = _calendar_boundaries(from_ms, to_ms, tz, size, max_windows - 1)
    except _TooManyWindows:
        message = f"more than {max_windows} {size} windows; narrow from/to or use a larger windowSize"
        raise TooManyWindows(message) from None
    edges = [from_ms, *bounds, to_ms]
    return list(zip(edges, edges[1:], strict=False))


# --------------------------------------------------------------------------------------------------
# Exact covers by UTC buckets
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bucket:
    """One UTC-aligned counter bucket `[start_ms, start_ms + resolution)`."""

    resolution: Resolution
    start_ms: int

    def __post_init__(self) -> None:
        if self.start_ms % self.resolution:
            raise ValueError(f"{self.start_ms} is not aligned to {self.resolution.name}")

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.resolution


@dataclass(frozen=True, slots=True)
class Cover:
    """The result of `cover`: the buckets to read."""

    buckets: tuple[Bucket, ...]


def _levels(finest: Resolution, levels: tuple[Resolution, ...] | None = None) -> tuple[Resolution, ...]:
    return tuple(r for r in (levels or DEFAULT_LEVELS) if r >= finest)


_Run = tuple[Resolution, int, int]


def _canonical_runs(start: int, end: int, levels: tuple[Resolution, ...]) -> list[_Run]:
    """The minimal cover as runs `(resolution, run_start, run_end)` of consecutive equal buckets.

    Fine buckets from `start` up to the next coarser boundary, climbing to the coarsest level, then the
    coarsest buckets, then finer ones down to `end`. Because each resolution divides the next, this is
    the unique minimal cover: a bucket of resolution r is used only where the enclosing bucket of the
    next coarser resolution is not inside the range, so no cover can use fewer.
    """
    runs: list[_Run] = []
    cur = start
    for fine, coarse in zip(levels, levels[1:], strict=False):
        boundary = ceil_to(cur, coarse)
        stop = min(boundary, floor_to(end, fine))
        if stop > cur:
            runs.append((fine, cur, stop))
            cur = stop
        if cur < boundary:  # the range ends before the next coarser boundary: the rest is finer
            break
    for res in reversed(levels):
        stop = floor_to(end, res)
        if stop > cur:
            runs.append((res, cur, stop))
            cur = stop
    return runs


def _check_range(start_ms: int, end_ms: int, finest: Resolution) -> None:
    if start_ms > end_ms:
        raise ValueError("start must not be after end")
    if start_ms % finest or end_ms % finest:
        raise ValueError(
            f"start and end must be multiples of a {finest.name.lower()} ({finest.length_ms} ms); "
            "align sub-resolution edges before covering"
        )


def cover(
    start_ms: int,
    end_ms: int,
    finest: Resolution = Resolution.MINUTE,
    *,
    levels: tuple[Resolution, ...] | None = None,
) -> Cover:
    """The minimal exact cover of `[start_ms, end_ms)` by UTC buckets no finer than `finest`.

    `start_ms` and `end_ms` must be multiples of `finest` (ValueError otherwise). Buckets are sorted by
    start and never overlap. `levels` (finest first, each dividing the next) replaces the default
    MINUTE, HOUR, DAY.
    """
    _check_range(start_ms, end_ms, finest)
    runs = _canonical_runs(start_ms, end_ms, _levels(finest, levels))
    return Cover(tuple(Bucket(res, s) for res, a, b in runs for s in range(a, b, res)))
