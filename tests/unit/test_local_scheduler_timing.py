"""When the local stand-in for EventBridge Scheduler fires a schedule (pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from meterline_local.scheduler import Timing, at_time, is_supported, latest_due, next_firing, rate_period

T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def rate(expression: str = "rate(5 minutes)", **dates: datetime) -> Timing:
    return Timing(expression=expression, created=T0 - timedelta(hours=1), **dates)


@pytest.mark.parametrize(("expression", "period"), [
    ("rate(1 minute)", MINUTE), ("rate(15 minutes)", 15 * MINUTE), ("rate(1 hour)", timedelta(hours=1)),
    ("rate(6 hours)", timedelta(hours=6)), ("rate(1 day)", timedelta(days=1)), ("rate(7 days)", timedelta(days=7)),
])
def test_rate_periods(expression: str, period: timedelta) -> None:
    assert rate_period(expression) == period


@pytest.mark.parametrize("expression", ["rate(0 minutes)", "rate(2 minute)", "rate(1 hours)"])
def test_rate_expressions_scheduler_would_reject_are_refused(expression: str) -> None:
    with pytest.raises(ValueError):
        rate_period(expression)
    assert not is_supported(Timing(expression=expression, created=T0))


def test_cron_and_garbage_are_not_supported() -> None:
    assert rate_period("cron(0 * * * ? *)") is None and at_time("cron(0 * * * ? *)") is None
    assert not is_supported(Timing(expression="cron(0 * * * ? *)", created=T0))
    assert not is_supported(Timing(expression="at(2024-01-01T00:00:00)", created=T0, timezone="Mars/Olympus"))
    assert is_supported(Timing(expression="at(2024-01-01T00:00:00)", created=T0, timezone="Europe/Berlin"))


def test_at_is_read_in_the_schedules_time_zone() -> None:
    assert at_time("at(2024-07-01T14:00:00)") == datetime(2024, 7, 1, 14, tzinfo=UTC)
    assert at_time("at(2024-07-01T14:00:00)", "Europe/Berlin") == datetime(2024, 7, 1, 12, tzinfo=UTC)


def test_rate_fires_at_start_date_plus_whole_periods() -> None:
    timing = rate(start=T0)
    assert latest_due(timing, after=T0 - MINUTE, now=T0 - timedelta(seconds=1)) is None
    assert latest_due(timing, after=T0 - MINUTE, now=T0) == T0
    assert latest_due(timing, after=T0, now=T0 + 4 * MINUTE) is None  # each firing once
    assert latest_due(timing, after=T0, now=T0 + 5 * MINUTE) == T0 + 5 * MINUTE
    assert next_firing(timing, T0 - MINUTE) == T0
    assert next_firing(timing, T0) == T0 + 5 * MINUTE
    assert next_firing(timing, T0 + 7 * MINUTE) == T0 + 10 * MINUTE


def test_several_missed_firings_fire_once_at_the_latest() -> None:
    timing = rate(start=T0)
    assert latest_due(timing, after=T0, now=T0 + 17 * MINUTE) == T0 + 15 * MINUTE


def test_firing_times_before_the_last_change_do_not_count() -> None:
    # A schedule changed at T0 + 7 min: the firing at T0 + 5 min is in the past, the next is at + 10.
    timing = rate(start=T0)
    changed = T0 + 7 * MINUTE
    assert latest_due(timing, after=changed, now=T0 + 9 * MINUTE) is None
    assert latest_due(timing, after=changed, now=T0 + 10 * MINUTE) == T0 + 10 * MINUTE


def test_without_a_start_date_a_rate_counts_from_the_schedules_creation() -> None:
    timing = Timing(expression="rate(1 hour)", created=T0)
    assert latest_due(timing, after=T0, now=T0 + timedelta(minutes=59)) is None
    assert latest_due(timing, after=T0, now=T0 + timedelta(minutes=61)) == T0 + timedelta(hours=1)


def test_nothing_fires_at_or_after_the_end_date() -> None:
    timing = rate(start=T0, end=T0 + 10 * MINUTE)
    assert latest_due(timing, after=T0, now=T0 + 30 * MINUTE) == T0 + 5 * MINUTE  # the last before EndDate
    assert latest_due(timing, after=T0 + 5 * MINUTE, now=T0 + 30 * MINUTE) is None
    assert next_firing(timing, T0 + 5 * MINUTE) is None
    assert latest_due(rate(start=T0, end=T0), after=T0 - MINUTE, now=T0 + MINUTE) is None


def test_a_one_time_schedule_fires_once_and_then_has_nothing_left() -> None:
    timing = Timing(expression="at(2024-01-01T12:30:00)", created=T0)
    due = T0 + 30 * MINUTE
    assert latest_due(timing, after=T0, now=due - timedelta(seconds=1)) is None
    assert latest_due(timing, after=T0, now=due + timedelta(hours=2)) == due
    assert latest_due(timing, after=due, now=due + timedelta(hours=2)) is None
    assert next_firing(timing, T0) == due
    assert next_firing(timing, due) is None
