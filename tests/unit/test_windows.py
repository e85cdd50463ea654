"""Query windows in time zones (DST-correct) and their exact, minimal cover by UTC counter buckets."""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterline.domain.timeutil import ceil_to, floor_to
from meterline.domain.windows import (
    DEFAULT_LEVELS,
    DEFAULT_MAX_WINDOWS,
    MAX_MS,
    MIN_MS,
    Bucket,
    Resolution,
    WindowSize,
    cover,
    plan_windows,
    resolve_time_zone,
)

MINUTE, HOUR, DAY = Resolution.MINUTE, Resolution.HOUR, Resolution.DAY
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def ms(text: str) -> int:
    """Epoch milliseconds of an ISO 8601 UTC time such as 2024-03-10T05:00Z."""
    return (datetime.fromisoformat(text).replace(tzinfo=UTC) - _EPOCH) // timedelta(milliseconds=1)


def iso(value: int) -> str:
    return (_EPOCH + timedelta(milliseconds=value)).strftime("%Y-%m-%dT%H:%MZ")


def wall(value: int, tz: ZoneInfo) -> datetime:
    """The naive local wall-clock time of the instant `value` in `tz`."""
    return (_EPOCH + timedelta(milliseconds=value)).astimezone(tz).replace(tzinfo=None)


def hours(window: tuple[int, int]) -> float:
    return (window[1] - window[0]) / HOUR


def starts(windows: list[tuple[int, int]]) -> list[str]:
    return [iso(start) for start, _ in windows]


NEW_YORK = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")


# --------------------------------------------------------------------------------------------------
# Enums and helpers
# --------------------------------------------------------------------------------------------------


def decompose(start_ms: int, end_ms: int, finest: Resolution = MINUTE) -> list[Bucket]:
    """The buckets of the cover of one range."""
    return list(cover(start_ms, end_ms, finest).buckets)


def decompose_many(windows: list[tuple[int, int]]) -> dict[tuple[int, int], list[Bucket]]:
    """The cover of each window, by window."""
    return {(start, end): decompose(start, end) for start, end in windows}


def read_spans(buckets: Iterable[Bucket]) -> list[tuple[Resolution, int, int]]:
    """Adjacent buckets of one resolution merged into runs (one key-range read each), by resolution."""
    runs: list[tuple[Resolution, int, int]] = []
    for b in sorted(buckets, key=lambda b: (b.resolution, b.start_ms)):
        if runs and runs[-1][0] == b.resolution and runs[-1][2] == b.start_ms:
            runs[-1] = (b.resolution, runs[-1][1], b.end_ms)
        else:
            runs.append((b.resolution, b.start_ms, b.end_ms))
    return runs


def test_enums() -> None:
    assert [w.value for w in WindowSize] == ["MINUTE", "HOUR", "DAY", "MONTH"]
    assert [int(r) for r in DEFAULT_LEVELS] == [60_000, 3_600_000, 86_400_000]
    assert int(Resolution.QUARTER) == 900_000
    assert MINUTE < HOUR < DAY
    assert DAY.length_ms == 86_400_000 and (DAY.key, DAY.width, HOUR.period_ms) == ("d", 2, 86_400_000)


@pytest.mark.parametrize(
    ("value", "resolution", "down", "up"),
    [
        (ms("2024-01-01T10:17:05"), MINUTE, ms("2024-01-01T10:17"), ms("2024-01-01T10:18")),
        (ms("2024-01-01T10:17"), HOUR, ms("2024-01-01T10:00"), ms("2024-01-01T11:00")),
        (ms("2024-01-01T10:17"), DAY, ms("2024-01-01T00:00"), ms("2024-01-02T00:00")),
        (ms("2024-01-01T00:00"), DAY, ms("2024-01-01T00:00"), ms("2024-01-01T00:00")),
        (-1, MINUTE, -60_000, 0),  # floor, also before 1970
    ],
)
def test_align(value: int, resolution: Resolution, down: int, up: int) -> None:
    assert floor_to(value, resolution) == down
    assert ceil_to(value, resolution) == up


# --------------------------------------------------------------------------------------------------
# Time zones
# --------------------------------------------------------------------------------------------------


def test_system_tz_database_is_available() -> None:
    names = zoneinfo.available_timezones()
    assert {"UTC", "Asia/Kolkata", "Asia/Kathmandu", "America/New_York", "Australia/Lord_Howe"} <= names


@pytest.mark.parametrize(
    "name", ["UTC", "Etc/UTC", "Asia/Kolkata", "America/Argentina/Buenos_Aires", "Etc/GMT+5", "US/Eastern"]
)
def test_resolves_iana_names(name: str) -> None:
    assert resolve_time_zone(name).key == name


def test_every_listed_zone_resolves() -> None:
    for name in zoneinfo.available_timezones() - {"localtime", "Factory"}:
        resolve_time_zone(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "local",
        "localtime",  # the host's zone, a symlink in /usr/share/zoneinfo on many systems
        "posixrules",
        "Factory",
        "../etc/passwd",
        "/etc/localtime",
        "America/../../etc/passwd",
        "America",  # a directory
        "Mars/Olympus_Mons",
        "america/new_york",
        "America/New York",
        "UTC\n",
        "posix/Europe/London",
        "right/UTC",
        "zone.tab",
        "A" * 100,
    ],
)
def test_rejects_unknown_or_unsafe_names(name: str) -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        resolve_time_zone(name)


def test_probe_interval_assumption_holds_for_installed_tz_database() -> None:
    """windows.py probes a zone's offset every 6 hours: no zone may change its offset twice in that time."""
    py_zoneinfo = pytest.importorskip("zoneinfo._zoneinfo")
    if not hasattr(py_zoneinfo.ZoneInfo, "no_cache"):
        pytest.skip("pure-Python zoneinfo not available")
    closest = None
    for name in zoneinfo.available_timezones():
        zone = py_zoneinfo.ZoneInfo.no_cache(name)
        trans, infos = getattr(zone, "_trans_utc", None), getattr(zone, "_ttinfos", None)
        if trans is None or infos is None:
            pytest.skip("zoneinfo internals changed")
        changes = [t for i, t in enumerate(trans) if i and infos[i].utcoff != infos[i - 1].utcoff]
        for a, b in zip(changes, changes[1:], strict=False):
            closest = b - a if closest is None else min(closest, b - a)
    assert closest is None or closest > 6 * 3600


# --------------------------------------------------------------------------------------------------
# plan_windows: concrete cases
# --------------------------------------------------------------------------------------------------


def test_no_window_size_is_one_window() -> None:
    assert plan_windows(5, 10, None, NEW_YORK) == [(5, 10)]


@pytest.mark.parametrize(("from_ms", "to_ms"), [(10, 10), (11, 10), (MIN_MS - 1, 0), (0, MAX_MS + 1)])
def test_rejects_bad_ranges(from_ms: int, to_ms: int) -> None:
    with pytest.raises(ValueError):
        plan_windows(from_ms, to_ms, WindowSize.HOUR, NEW_YORK)


def test_rejects_unknown_window_size() -> None:
    with pytest.raises(ValueError, match="unknown window size"):
        plan_windows(0, 10, "WEEK", NEW_YORK)


def test_accepts_window_size_strings() -> None:
    assert plan_windows(0, 2 * HOUR, "HOUR", ZoneInfo("UTC")) == [(0, HOUR), (HOUR, 2 * HOUR)]


def test_new_york_days_of_23_and_25_hours() -> None:
    spring = plan_windows(ms("2024-03-09T05:00"), ms("2024-03-12T04:00"), WindowSize.DAY, NEW_YORK)
    assert starts(spring) == ["2024-03-09T05:00Z", "2024-03-10T05:00Z", "2024-03-11T04:00Z"]
    assert [hours(w) for w in spring] == [24, 23, 24]
    autumn = plan_windows(ms("2024-11-02T04:00"), ms("2024-11-05T05:00"), WindowSize.DAY, NEW_YORK)
    assert starts(autumn) == ["2024-11-02T04:00Z", "2024-11-03T04:00Z", "2024-11-04T05:00Z"]
    assert [hours(w) for w in autumn] == [24, 25, 24]


def test_new_york_hours_across_fall_back_repeat_01_00() -> None:
    windows = plan_windows(ms("2024-11-03T04:00"), ms("2024-11-03T08:00"), WindowSize.HOUR, NEW_YORK)
    assert [hours(w) for w in windows] == [1, 1, 1, 1]
    local = [wall(start, NEW_YORK).strftime("%H:%M") for start, _ in windows]
    assert local == ["00:00", "01:00", "01:00", "02:00"]  # 01:00 EDT, then 01:00 EST


def test_new_york_hours_across_spring_forward_skip_02_00() -> None:
    windows = plan_windows(ms("2024-03-10T05:00"), ms("2024-03-10T09:00"), WindowSize.HOUR, NEW_YORK)
    assert [hours(w) for w in windows] == [1, 1, 1, 1]
    local = [wall(start, NEW_YORK).strftime("%H:%M") for start, _ in windows]
    assert local == ["00:00", "01:00", "03:00", "04:00"]


def test_kolkata_hour_windows_start_at_half_past_utc_and_are_clipped() -> None:
    windows = plan_windows(ms("2024-01-01T10:00"), ms("2024-01-01T13:10"), WindowSize.HOUR, KOLKATA)
    assert windows == [
        (ms("2024-01-01T10:00"), ms("2024-01-01T10:30")),  # clipped at from
        (ms("2024-01-01T10:30"), ms("2024-01-01T11:30")),
        (ms("2024-01-01T11:30"), ms("2024-01-01T12:30")),
        (ms("2024-01-01T12:30"), ms("2024-01-01T13:10")),  # clipped at to
    ]


def test_kathmandu_windows_at_quarter_past_utc() -> None:
    tz = ZoneInfo("Asia/Kathmandu")  # +05:45
    windows = plan_windows(ms("2024-01-01T10:15"), ms("2024-01-01T13:15"), WindowSize.HOUR, tz)
    assert starts(windows) == ["2024-01-01T10:15Z", "2024-01-01T11:15Z", "2024-01-01T12:15Z"]
    days = plan_windows(ms("2024-01-01T18:15"), ms("2024-01-03T18:15"), WindowSize.DAY, tz)
    assert starts(days) == ["2024-01-01T18:15Z", "2024-01-02T18:15Z"]


def test_lord_howe_half_hour_dst_shift() -> None:
    tz = ZoneInfo("Australia/Lord_Howe")  # +10:30 standard, +11 summer
    spring = plan_windows(ms("2024-10-05T13:30"), ms("2024-10-05T17:00"), WindowSize.HOUR, tz)
    # 01:00 (+10:30) lasts an hour; 02:00 does not exist, so "02:30" to 03:00 is a 30-minute window.
    assert starts(spring) == [
        "2024-10-05T13:30Z",
        "2024-10-05T14:30Z",
        "2024-10-05T15:30Z",
        "2024-10-05T16:00Z",
    ]
    assert [hours(w) for w in spring] == [1, 1, 0.5, 1]
    autumn = plan_windows(ms("2024-04-06T13:00"), ms("2024-04-06T16:30"), WindowSize.HOUR, tz)
    # 01:30-02:00 happens twice, so 01:00 (+11) until 02:00 (+10:30) is 90 minutes.
    assert starts(autumn) == ["2024-04-06T13:00Z", "2024-04-06T14:00Z", "2024-04-06T15:30Z"]
    assert [hours(w) for w in autumn] == [1, 1.5, 1]


def test_a_year_of_lord_howe_hours() -> None:
    """Both DST changes of a year in one plan: hours start at :30 UTC in winter and :00 UTC in summer."""
    tz = ZoneInfo("Australia/Lord_Howe")
    windows = plan_windows(ms("2023-12-31T13:00"), ms("2024-12-31T13:00"), WindowSize.HOUR, tz)
    assert len(windows) == 366 * 24  # every local hour label once; 01:00 in April lasts 90 minutes
    assert all(_is_boundary(start, tz, WindowSize.HOUR) for start, _ in windows)
    utc_minutes = {(_EPOCH + timedelta(milliseconds=start)).minute for start, _ in windows}
    assert utc_minutes == {0, 30}
    assert sorted(hours(w) for w in windows if hours(w) != 1) == [0.5, 1.5]


@pytest.mark.parametrize(
    ("zone", "from_ms", "to_ms", "expected_starts", "expected_hours"),
    [
        # Chile skips 00:00-01:00 on 2024-09-08: that day starts at the transition, 01:00 -03.
        (
            "America/Santiago",
            ms("2024-09-07T04:00"),
            ms("2024-09-10T03:00"),
            ["2024-09-07T04:00Z", "2024-09-08T04:00Z", "2024-09-09T03:00Z"],
            [24, 23, 24],
        ),
        # ... and repeats 23:00-24:00 on 2024-04-06, which lasts 25 hours.
        (
            "America/Santiago",
            ms("2024-04-06T03:00"),
            ms("2024-04-08T04:00"),
            ["2024-04-06T03:00Z", "2024-04-07T04:00Z"],
            [25, 24],
        ),
        # Lebanon skipped midnight on 2022-03-27.
        (
            "Asia/Beirut",
            ms("2022-03-25T22:00"),
            ms("2022-03-28T21:00"),
            ["2022-03-25T22:00Z", "2022-03-26T22:00Z", "2022-03-27T21:00Z"],
            [24, 23, 24],
        ),
        # Cuba falls back from 01:00 to 00:00: midnight happens twice, the day starts at the first one.
        (
            "America/Havana",
            ms("2024-11-02T04:00"),
            ms("2024-11-04T05:00"),
            ["2024-11-02T04:00Z", "2024-11-03T04:00Z"],
            [24, 25],
        ),
        # Newfoundland fell back at 00:01 to 23:01 of the day before (until 2010): first midnight.
        (
            "America/St_Johns",
            ms("2010-11-06T02:30"),
            ms("2010-11-08T03:30"),
            ["2010-11-06T02:30Z", "2010-11-07T02:30Z"],
            [24, 25],
        ),
        # Toronto jumped from 23:30 to 00:30 in 1919: midnight falls inside the gap.
        (
            "America/Toronto",
            ms("1919-03-30T05:00"),
            ms("1919-04-01T04:00"),
            ["1919-03-30T05:00Z", "1919-03-31T04:30Z"],
            [23.5, 23.5],
        ),
        # Samoa skipped 2011-12-30 entirely: 29 December is followed by 31 December.
        (
            "Pacific/Apia",
            ms("2011-12-29T10:00"),
            ms("2011-12-31T10:00"),
            ["2011-12-29T10:00Z", "2011-12-30T10:00Z"],
            [24, 24],
        ),
    ],
)
def test_days_with_a_missing_or_repeated_midnight(
    zone: str, from_ms: int, to_ms: int, expected_starts: list[str], expected_hours: list[float]
) -> None:
    windows = plan_windows(from_ms, to_ms, WindowSize.DAY, ZoneInfo(zone))
    assert starts(windows) == expected_starts
    assert [hours(w) for w in windows] == expected_hours


def test_apia_skipped_day_has_no_window() -> None:
    tz = ZoneInfo("Pacific/Apia")
    windows = plan_windows(ms("2011-12-29T10:00"), ms("2011-12-31T10:00"), WindowSize.DAY, tz)
    assert [wall(start, tz).date().isoformat() for start, _ in windows] == ["2011-12-29", "2011-12-31"]


def test_month_windows_across_dst_changes() -> None:
    windows = plan_windows(ms("2024-02-01T05:00"), ms("2024-12-01T05:00"), WindowSize.MONTH, NEW_YORK)
    assert [wall(start, NEW_YORK).strftime("%m-%d %H:%M") for start, _ in windows] == [
        f"{m:02d}-01 00:00" for m in range(2, 12)
    ]
    by_month = dict(zip(range(2, 12), (hours(w) for w in windows), strict=True))
    assert by_month[2] == 29 * 24  # leap year, no DST change
    assert by_month[3] == 31 * 24 - 1  # springs forward
    assert by_month[4] == 30 * 24
    assert by_month[11] == 30 * 24 + 1  # falls back
    london = plan_windows(ms("2024-03-01T00:00"), ms("2024-04-30T23:00"), "MONTH", ZoneInfo("Europe/London"))
    assert london == [
        (ms("2024-03-01T00:00"), ms("2024-03-31T23:00")),
        (ms("2024-03-31T23:00"), ms("2024-04-30T23:00")),
    ]


def test_month_windows_clipped_and_across_year_end() -> None:
    windows = plan_windows(ms("2023-12-15T12:00"), ms("2024-02-10T00:00"), WindowSize.MONTH, ZoneInfo("UTC"))
    assert windows == [
        (ms("2023-12-15T12:00"), ms("2024-01-01T00:00")),
        (ms("2024-01-01T00:00"), ms("2024-02-01T00:00")),
        (ms("2024-02-01T00:00"), ms("2024-02-10T00:00")),
    ]


def test_range_inside_one_window_is_one_clipped_window() -> None:
    assert plan_windows(ms("2024-01-01T10:05"), ms("2024-01-01T10:06"), WindowSize.DAY, NEW_YORK) == [
        (ms("2024-01-01T10:05"), ms("2024-01-01T10:06"))
    ]


def test_minute_windows_in_kolkata_are_utc_minutes() -> None:
    from_ms = ms("2024-01-01T10:00") + 30_000
    windows = plan_windows(from_ms, ms("2024-01-01T10:03"), WindowSize.MINUTE, KOLKATA)
    assert windows == [
        (ms("2024-01-01T10:00") + 30_000, ms("2024-01-01T10:01")),
        (ms("2024-01-01T10:01"), ms("2024-01-01T10:02")),
        (ms("2024-01-01T10:02"), ms("2024-01-01T10:03")),
    ]


def test_sub_minute_offsets_give_windows_no_counter_can_answer() -> None:
    """Liberia kept -00:44:30 until 1972: its local midnights are not on a UTC minute, so the windows
    are right but `decompose` refuses them; the caller must align such edges itself."""
    windows = plan_windows(ms("1971-01-01T00:00"), ms("1971-01-03T00:00"), "DAY", ZoneInfo("Africa/Monrovia"))
    assert windows[1][0] == ms("1971-01-01T00:44") + 30_000
    with pytest.raises(ValueError, match="multiples of a minute"):
        decompose_many(windows)


def test_max_windows() -> None:
    start = ms("2024-01-01T00:00")
    most = start + DEFAULT_MAX_WINDOWS * MINUTE
    assert len(plan_windows(start, most, WindowSize.MINUTE, KOLKATA)) == 10_000
    with pytest.raises(ValueError, match="more than 10000 MINUTE windows"):
        plan_windows(start, most + 1, WindowSize.MINUTE, KOLKATA)
    with pytest.raises(ValueError, match="more than 3 DAY windows"):
        plan_windows(start, start + 4 * DAY, WindowSize.DAY, ZoneInfo("UTC"), max_windows=3)
    assert len(plan_windows(start, start + 3 * DAY, WindowSize.DAY, ZoneInfo("UTC"), max_windows=3)) == 3
    with pytest.raises(ValueError, match="more than"):  # a century of minutes fails fast, not after 52M
        plan_windows(start, start + 36_500 * DAY, WindowSize.MINUTE, NEW_YORK)


# --------------------------------------------------------------------------------------------------
# plan_windows: properties
# --------------------------------------------------------------------------------------------------

ZONES = ["UTC", "Asia/Kolkata", "Asia/Kathmandu", "America/New_York", "Europe/London", "Australia/Lord_Howe"]
TRANSITIONS = {  # 2024 DST changes, so that random ranges often cross one
    "America/New_York": [ms("2024-03-10T07:00"), ms("2024-11-03T06:00")],
    "Europe/London": [ms("2024-03-31T01:00"), ms("2024-10-27T01:00")],
    "Australia/Lord_Howe": [ms("2024-04-06T15:00"), ms("2024-10-05T15:30")],
}
SPANS = {
    WindowSize.MINUTE: 4 * HOUR,
    WindowSize.HOUR: 3 * DAY,
    WindowSize.DAY: 100 * DAY,
    WindowSize.MONTH: 1500 * DAY,
}


Query = tuple[int, int, WindowSize, ZoneInfo]


@st.composite
def window_queries(draw: st.DrawFn) -> Query:
    size = draw(st.sampled_from(list(WindowSize)))
    zone = draw(st.sampled_from(ZONES))
    # Lengths spread over the whole span (plain integers would mostly be tiny), ends rarely aligned.
    length = max(1, SPANS[size] * draw(st.integers(1, 1000)) // 1000 + draw(st.integers(-MINUTE, MINUTE)))
    if zone in TRANSITIONS and draw(st.booleans()):
        transition = draw(st.sampled_from(TRANSITIONS[zone]))
        from_ms = transition - length * draw(st.integers(0, 1000)) // 1000  # the range contains it
    else:
        from_ms = draw(st.integers(ms("2023-01-01T00:00"), ms("2026-01-01T00:00")))
    if draw(st.booleans()):
        from_ms = floor_to(from_ms, MINUTE)
    return from_ms, from_ms + length, size, ZoneInfo(zone)


def _label(value: int, tz: ZoneInfo, size: WindowSize) -> datetime:
    local = wall(value, tz)
    if size is WindowSize.MINUTE:
        return local.replace(second=0, microsecond=0)
    if size is WindowSize.HOUR:
        return local.replace(minute=0, second=0, microsecond=0)
    if size is WindowSize.DAY:
        return datetime(local.year, local.month, local.day)
    return datetime(local.year, local.month, 1)


def _is_boundary(value: int, tz: ZoneInfo, size: WindowSize) -> bool:
    """Independent oracle: the wall clock reads a whole unit at `value`, or jumps forward past one."""
    if size in (WindowSize.MINUTE, WindowSize.HOUR) and wall(value, tz) == _label(value, tz, size):
        return True
    return _label(value, tz, size) > _label(value - 1, tz, size)


@PROPERTY
@given(window_queries())
def test_windows_partition_the_range_at_local_boundaries(query: Query) -> None:
    from_ms, to_ms, size, tz = query
    windows = plan_windows(from_ms, to_ms, size, tz)
    assert windows[0][0] == from_ms and windows[-1][1] == to_ms
    assert all(start < end for start, end in windows)
    assert all(a[1] == b[0] for a, b in zip(windows, windows[1:], strict=False))
    for start, _ in windows[1:]:
        assert _is_boundary(start, tz, size), (iso(start), size, tz)
    for start, end in windows:
        if size in (WindowSize.MINUTE, WindowSize.HOUR):
            # No boundary inside a window (all these zones change offsets on whole minutes).
            for instant in range(ceil_to(start + 1, MINUTE), end, MINUTE):
                assert not _is_boundary(instant, tz, size), (iso(start), iso(instant), size, tz)
        else:
            # Dates only move forward in these zones, so a constant label at both ends means no boundary.
            assert _label(start, tz, size) == _label(end - 1, tz, size)
    inner = windows[1:-1]
    limits = {
        WindowSize.MINUTE: (MINUTE, MINUTE),
        WindowSize.HOUR: (HOUR // 2, 3 * HOUR // 2),
        WindowSize.DAY: (23 * HOUR, 25 * HOUR),
        WindowSize.MONTH: (28 * DAY - HOUR, 31 * DAY + HOUR),
    }[size]
    assert all(limits[0] <= end - start <= limits[1] for start, end in inner)


@PROPERTY
@given(window_queries())
def test_windows_depend_only_on_the_zone_not_on_the_range(query: Query) -> None:
    """Planning a sub-range gives the same inner boundaries as the full range."""
    from_ms, to_ms, size, tz = query
    full = plan_windows(from_ms, to_ms, size, tz)
    if len(full) < 3:
        return
    inner = plan_windows(full[1][0], full[-1][0], size, tz)
    assert inner == full[1:-1]


# --------------------------------------------------------------------------------------------------
# decompose: concrete cases
# --------------------------------------------------------------------------------------------------


def test_decompose_whole_utc_day_is_one_bucket() -> None:
    assert decompose(ms("2024-01-01T00:00"), ms("2024-01-02T00:00")) == [Bucket(DAY, ms("2024-01-01T00:00"))]


def test_decompose_edges() -> None:
    buckets = decompose(ms("2024-01-01T23:59"), ms("2024-01-03T01:01"))
    assert [(b.resolution, iso(b.start_ms), iso(b.end_ms)) for b in buckets] == [
        (MINUTE, "2024-01-01T23:59Z", "2024-01-02T00:00Z"),
        (DAY, "2024-01-02T00:00Z", "2024-01-03T00:00Z"),
        (HOUR, "2024-01-03T00:00Z", "2024-01-03T01:00Z"),
        (MINUTE, "2024-01-03T01:00Z", "2024-01-03T01:01Z"),
    ]


def test_decompose_empty_and_invalid() -> None:
    assert decompose(HOUR, HOUR) == []
    with pytest.raises(ValueError, match="multiples of a minute"):
        decompose(0, MINUTE + 1)
    with pytest.raises(ValueError, match="multiples of a minute"):
        decompose(1, MINUTE)
    with pytest.raises(ValueError, match="multiples of a hour"):
        decompose(0, 90 * MINUTE, HOUR)
    with pytest.raises(ValueError):
        decompose(HOUR, 0)


def test_decompose_with_finest_hour() -> None:
    assert decompose(ms("2024-01-01T23:00"), ms("2024-01-03T00:00"), HOUR) == [
        Bucket(HOUR, ms("2024-01-01T23:00")),
        Bucket(DAY, ms("2024-01-02T00:00")),
    ]


def test_bucket() -> None:
    bucket = Bucket(HOUR, 2 * HOUR)
    assert bucket.end_ms == 3 * HOUR
    with pytest.raises(ValueError, match="not aligned"):
        Bucket(HOUR, MINUTE)


def _day_windows(zone: str, first_local_day: str, days: int) -> list[tuple[int, int]]:
    tz = ZoneInfo(zone)
    start = datetime.fromisoformat(first_local_day).replace(tzinfo=tz)
    end = start + timedelta(days=days)  # wall-clock arithmetic: local midnight `days` later
    return plan_windows(
        (start - _EPOCH) // timedelta(milliseconds=1), (end - _EPOCH) // timedelta(milliseconds=1), "DAY", tz
    )


def test_thirty_utc_days_are_thirty_day_buckets() -> None:
    plans = decompose_many(_day_windows("UTC", "2024-01-01", 30))
    assert len(plans) == 30
    assert all(len(b) == 1 and b[0].resolution is DAY for b in plans.values())
    assert read_spans(b for buckets in plans.values() for b in buckets) == [
        (DAY, ms("2024-01-01T00:00"), ms("2024-01-31T00:00"))
    ]


def test_thirty_kolkata_days() -> None:
    windows = _day_windows("Asia/Kolkata", "2024-01-01", 30)
    assert windows[0] == (ms("2023-12-31T18:30"), ms("2024-01-01T18:30"))
    plans = decompose_many(windows)
    for buckets in plans.values():
        # 18:30-19:00 in minutes, 19:00-24:00 in hours, 00:00-18:00 in hours, 18:00-18:30 in minutes.
        counts = {r: sum(1 for b in buckets if b.resolution is r) for r in DEFAULT_LEVELS}
        assert counts == {MINUTE: 30 + 30, HOUR: 5 + 18, DAY: 0}
    assert sum(len(b) for b in plans.values()) == 30 * 83
    spans = read_spans(b for buckets in plans.values() for b in buckets)
    # Minute runs join across midnight (18:00-19:00 UTC), except at both ends; hour runs never join.
    assert sum(1 for r, _, _ in spans if r is MINUTE) == 31
    assert sum(1 for r, _, _ in spans if r is HOUR) == 30


def test_kathmandu_day() -> None:
    ((window, buckets),) = decompose_many(_day_windows("Asia/Kathmandu", "2024-01-01", 1)).items()
    assert window == (ms("2023-12-31T18:15"), ms("2024-01-01T18:15"))
    counts = {r: sum(1 for b in buckets if b.resolution is r) for r in DEFAULT_LEVELS}
    assert counts == {MINUTE: 45 + 15, HOUR: 5 + 18, DAY: 0}


def test_new_york_days_are_hours() -> None:
    plans = decompose_many(_day_windows("America/New_York", "2024-03-09", 3))
    assert [len(b) for b in plans.values()] == [24, 23, 24]
    assert all(b.resolution is HOUR for buckets in plans.values() for b in buckets)
    assert len(read_spans(b for buckets in plans.values() for b in buckets)) == 1


# --------------------------------------------------------------------------------------------------
# decompose: properties
# --------------------------------------------------------------------------------------------------

BASE = ms("2024-01-01T00:00")


@st.composite
def minute_ranges(draw: st.DrawFn, max_minutes: int) -> tuple[int, int]:
    start = BASE + draw(st.integers(0, 400 * 1440)) * MINUTE
    # Bias towards ends near hour and day boundaries, where the interesting covers are.
    start = draw(st.sampled_from([start, floor_to(start, HOUR), floor_to(start, DAY)]))
    end = start + draw(st.integers(0, max_minutes)) * MINUTE
    end = draw(st.sampled_from([end, max(start, floor_to(end, HOUR)), max(start, floor_to(end, DAY))]))
    return start, end


def _min_cover_size(start: int, end: int) -> int:
    """Oracle: the fewest aligned buckets covering [start, end) exactly, by dynamic programming."""
    best = [0] + [10**9] * ((end - start) // MINUTE)
    for i in range(1, len(best)):
        at = start + i * MINUTE
        for res in DEFAULT_LEVELS:
            if at % res == 0 and at - res >= start:
                best[i] = min(best[i], best[i - res // MINUTE] + 1)
    return best[-1]


def _assert_exact_cover(buckets: list[Bucket] | tuple[Bucket, ...], start: int, end: int) -> None:
    position = start
    for bucket in buckets:
        assert bucket.start_ms == position  # sorted, no gap, no overlap
        assert bucket.start_ms % bucket.resolution == 0
        position = bucket.end_ms
    assert position == end


@PROPERTY
@given(minute_ranges(max_minutes=4 * 1440))
def test_decompose_is_exact_and_minimal(bounds: tuple[int, int]) -> None:
    start, end = bounds
    buckets = decompose(start, end)
    _assert_exact_cover(buckets, start, end)
    assert len(buckets) == _min_cover_size(start, end)
    for bucket in buckets:  # no bucket could be merged into the enclosing coarser bucket
        coarser = [r for r in DEFAULT_LEVELS if r > bucket.resolution]
        if coarser:
            parent = floor_to(bucket.start_ms, coarser[0])
            assert not (start <= parent and parent + coarser[0] <= end)


@PROPERTY
@given(minute_ranges(max_minutes=60 * 1440))
def test_decompose_long_ranges_use_few_buckets(bounds: tuple[int, int]) -> None:
    start, end = bounds
    buckets = decompose(start, end)
    _assert_exact_cover(buckets, start, end)
    # At most 59 + 23 edge buckets on each side, plus the whole days.
    assert len(buckets) <= 2 * (59 + 23) + (end - start) // DAY
