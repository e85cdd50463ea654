"""Report definitions, window layout, filters and run status: the domain of usage exports."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterline.domain.exports import Delivery, DeliveryStatus, Run, RunPhase, Trigger, webhook_id
from meterline.domain.reports import (
    WindowGrid,
    closed_windows,
    interval_ms,
    matches,
    rate_expression,
    report_definition,
)
from meterline.domain.timeutil import parse_rfc3339, to_epoch_ms
from meterline.errors import InvalidInput

MINUTE = 60_000
HOUR = 60 * MINUTE
T0 = to_epoch_ms(parse_rfc3339("2024-01-01T00:00:00Z"))


@pytest.mark.parametrize(("interval", "ms", "rate"), [
    ("1m", MINUTE, "rate(1 minute)"),
    ("15m", 15 * MINUTE, "rate(15 minutes)"),
    ("1h", HOUR, "rate(1 hour)"),
    ("6h", 6 * HOUR, "rate(6 hours)"),
    ("1d", 24 * HOUR, "rate(1 day)"),
    ("31d", 31 * 24 * HOUR, "rate(31 days)"),
])
def test_intervals_and_rate_expressions(interval: str, ms: int, rate: str) -> None:
    assert interval_ms(interval) == ms and rate_expression(interval) == rate


@pytest.mark.parametrize("interval", ["", "1", "m", "0m", "01m", "1.5h", "1w", "15s", "-1h", "1H", "32d", " 1m", 5])
def test_bad_intervals(interval: Any) -> None:
    with pytest.raises(ValueError):
        interval_ms(interval)


def schedule(interval: str = "1h", start: str = "2024-01-01T00:00:00Z", zone: str = "UTC") -> WindowGrid:
    return WindowGrid.of(report_definition({**BODY, "schedule": {"interval": interval, "startAt": start},
                                            "query": {"windowTimeZone": zone}}))


def test_closed_windows_since_last_export_and_since_creation() -> None:
    s = schedule()
    # at 05:00:30 windows 0..4 are closed; created at 02:10, so windows from 02:00
    windows = closed_windows(s, T0 + 5 * HOUR + 30_000, created_ms=T0 + 2 * HOUR + 10 * MINUTE, last_start_ms=None,
                             bound=24)
    assert [(w.start_ms - T0) // HOUR for w in windows] == [2, 3, 4]
    after_last = closed_windows(s, T0 + 5 * HOUR + 30_000, created_ms=T0, last_start_ms=T0 + 3 * HOUR, bound=24)
    assert [(w.start_ms - T0) // HOUR for w in after_last] == [4]
    bounded = closed_windows(s, T0 + 50 * HOUR, created_ms=T0, last_start_ms=None, bound=5)
    assert [(w.start_ms - T0) // HOUR for w in bounded] == [45, 46, 47, 48, 49]
    assert closed_windows(s, T0 + HOUR - 1, created_ms=T0, last_start_ms=None, bound=5) == []
    assert closed_windows(s, T0 - HOUR, created_ms=T0, last_start_ms=None, bound=5) == []  # before startAt


@given(start=st.integers(0, 10**12), length_m=st.integers(1, 44_640), now=st.integers(0, 2 * 10**12),
       created=st.integers(0, 2 * 10**12), last=st.one_of(st.none(), st.integers(0, 2 * 10**12)),
       bound=st.integers(1, 50))
def test_closed_windows_properties(start: int, length_m: int, now: int, created: int, last: int | None,
                                   bound: int) -> None:
    start -= start % 1000
    s = WindowGrid(start, f"{length_m}m")
    length = length_m * MINUTE
    windows = closed_windows(s, now, created_ms=created, last_start_ms=last, bound=bound)
    assert len(windows) <= bound
    for w in windows:
        assert w.end_ms - w.start_ms == length and (w.start_ms - start) % length == 0
        assert w.start_ms >= start and w.end_ms <= now  # aligned, closed
        assert w.end_ms > created  # never a window that ended before the report existed
        assert last is None or w.start_ms > last
    assert all(a.end_ms == b.start_ms for a, b in zip(windows, windows[1:], strict=False))  # oldest first, no gaps
    if windows:
        assert windows[-1].end_ms > now - length  # the latest closed window is included


def test_next_boundary() -> None:
    s = schedule("15m", "2024-01-01T00:05:00Z")
    assert s.next_boundary_ms(T0) == T0 + 20 * MINUTE  # before startAt: its first window's end
    assert s.next_boundary_ms(T0 + 20 * MINUTE) == T0 + 35 * MINUTE
    assert s.next_boundary_ms(T0 + 21 * MINUTE) == T0 + 35 * MINUTE
    assert s.schedule_expression == "rate(15 minutes)"


def ms(iso: str) -> int:
    return to_epoch_ms(parse_rfc3339(iso))


def test_daily_windows_follow_the_zone_across_dst() -> None:
    grid = schedule("1d", "2024-03-09T00:00:00-05:00", zone="America/New_York")
    spring = grid.window(grid.index_at(ms("2024-03-10T12:00:00Z")))
    assert (spring.start_ms, spring.end_ms) == (ms("2024-03-10T05:00:00Z"), ms("2024-03-11T04:00:00Z"))  # 23 h
    autumn = grid.window(grid.index_at(ms("2024-11-03T12:00:00Z")))
    assert (autumn.start_ms, autumn.end_ms) == (ms("2024-11-03T04:00:00Z"), ms("2024-11-04T05:00:00Z"))  # 25 h
    # the hourly schedule started on a window end keeps hitting window ends after the change
    assert grid.schedule_expression == "rate(1 hour)"
    assert (ms("2024-03-11T04:00:00Z") - grid.next_boundary_ms(ms("2024-03-09T12:00:00Z"))) % HOUR == 0
    windows = closed_windows(grid, ms("2024-03-12T04:00:30Z"), created_ms=ms("2024-03-09T01:00:00Z"),
                             last_start_ms=None, bound=10)
    assert [(w.end_ms - w.start_ms) // HOUR for w in windows] == [24, 23, 24]
    # every two days, still at local midnight
    two_days = schedule("2d", "2024-03-09T00:00:00-05:00", zone="America/New_York")
    assert two_days.window(1).start_ms == ms("2024-03-11T04:00:00Z")
    # minute and hour intervals, and UTC, stay fixed durations
    assert schedule("1h", zone="America/New_York").zone is None and schedule("1d").zone is None


@given(days=st.integers(1, 3), zone=st.sampled_from(["America/New_York", "Europe/Berlin", "Asia/Kolkata",
                                                      "Australia/Lord_Howe"]),
       t=st.integers(ms("2023-01-01T00:00:00Z"), ms("2026-01-01T00:00:00Z")))
def test_calendar_windows_are_contiguous_and_start_at_local_midnight(days: int, zone: str, t: int) -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    grid = schedule(f"{days}d", "2023-01-01T00:00:00Z", zone=zone)
    first_local = datetime.fromtimestamp(grid.start_ms / 1000, ZoneInfo(zone))
    k = grid.index_at(t)
    window = grid.window(k)
    assert window.start_ms <= t < window.end_ms and grid.window(k + 1).start_ms == window.end_ms
    local = datetime.fromtimestamp(window.start_ms / 1000, ZoneInfo(zone))
    assert (local.hour, local.minute) == (first_local.hour, first_local.minute) or zone == "Australia/Lord_Howe"
    assert (local.date() - first_local.date()).days == k * days


@pytest.mark.parametrize(("conditions", "value", "expected"), [
    (None, 5, True),
    ({"$gt": 100}, 100, False), ({"$gt": 100}, 100.5, True),
    ({"$gte": 100}, 100, True), ({"$lt": 1}, 0, True), ({"$lte": 1}, 2, False),
    ({"$eq": 3}, 3.0, True), ({"$ne": 3}, 3, False),
    ({"$in": [1, 2]}, 2, True), ({"$nin": [1, 2]}, 2, False),
    ({"$gt": 1, "$lt": 3}, 2, True), ({"$gt": 1, "$lt": 3}, 3, False),
    ({"$in": ["customer-1"]}, "customer-1", True), ({"$gt": "b"}, "a", False),
    ({"$gt": 1}, None, False),  # a LATEST/AVG value can be null: only $eq/$ne/$in/$nin match it
    ({"$eq": None}, None, True),
])
def test_filter_operators(conditions: Any, value: Any, expected: bool) -> None:
    assert matches(conditions, value) is expected


BODY = {"slug": "r", "meterIdOrSlug": "m", "schedule": {"interval": "1h", "startAt": "2024-01-01T00:00:00+01:00"},
        "endpoint": {"url": "https://example.com"}}


def test_definition_defaults_and_normalised_start() -> None:
    report = report_definition(BODY)
    assert report.schedule.start_at == "2023-12-31T23:00:00.000Z"
    assert report.type == "webhook" and report.query.group_by == [] and report.query.window_time_zone == "UTC"
    assert report.filter.usage is None and report.filter.subject is None


@pytest.mark.parametrize(("patch", "field"), [
    ({"filter": {"usage": {"$gt": float("nan")}}}, "filter.usage"),
    ({"filter": {"usage": {"$gt": True}}}, "filter.usage"),
    ({"filter": {"usage": {}}}, "filter.usage"),
    ({"filter": {"subject": {"$in": "customer-1"}}}, "filter.subject"),
    ({"query": {"groupBy": ["model", "model"]}}, "query.groupBy"),
    ({"endpoint": {"url": "https://example.com", "headers": {"bad header": "x"}}}, "endpoint.headers"),
    ({"endpoint": {"url": "https://example.com", "headers": {"Content-Type": "text/plain"}}}, "endpoint.headers"),
    ({"endpoint": {"url": "https://example.com", "headers": {"X-Name": "Zoë"}}}, "endpoint.headers"),
])
def test_definition_errors_name_the_field(patch: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        report_definition({**BODY, **patch})
    assert field in [e.field for e in info.value.errors]


def run(**kwargs: Any) -> Run:
    base = dict(id="r1", report_id="rep", window_start_ms=0, window_end_ms=HOUR, trigger=Trigger.SCHEDULE,
                phase=RunPhase.DELIVERING, requested_ms=0, started_ms=0, exported_ms=10, subjects=3)
    return Run(**{**base, **kwargs})


def test_run_status_follows_its_deliveries() -> None:
    assert run(phase=RunPhase.PENDING).status == "pending"
    assert run(phase=RunPhase.RUNNING).status == "running"
    assert run(phase=RunPhase.FAILED, error="x").status == "failed"
    assert run(succeeded=2).status == "running"
    done = run(succeeded=3, deliveries=[Delivery("a", "w", DeliveryStatus.SUCCEEDED, 1, finished_ms=50)])
    assert done.status == "succeeded" and done.finished_ms == 50
    assert run(succeeded=2, failed=1).status == "partial"
    assert run(subjects=0).status == "succeeded" and run(subjects=0).finished_ms == 10


def test_webhook_ids_are_stable_per_run_and_subject() -> None:
    assert webhook_id("run1", "a") == webhook_id("run1", "a")
    assert len({webhook_id("run1", "a"), webhook_id("run1", "b"), webhook_id("run2", "a")}) == 3
    assert webhook_id("run1", "a").startswith("msg_")
