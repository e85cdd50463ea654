"""Calendar arithmetic of entitlements (domain/periods.py): month/year steps clamped to the month's end and
always computed from the anchor, fixed-length hours/days/weeks, the index of the interval holding a time,
and the boundaries strictly inside a range."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.domain.periods import Interval, add, boundaries, ceil_minute, floor_minute, index_of
from meterline.domain.timeutil import DAY_MS, HOUR_MS, MINUTE_MS, parse_rfc3339, to_epoch_ms


def t(value: str) -> int:
    return to_epoch_ms(parse_rfc3339(value))


JAN_31_2024 = t("2024-01-31T10:30:00Z")


# --- add --------------------------------------------------------------------------------------------------


def test_month_from_jan_31_is_the_last_day_of_february_in_a_leap_year() -> None:
    assert add(JAN_31_2024, Interval.MONTH) == t("2024-02-29T10:30:00Z")


def test_month_from_jan_31_is_feb_28_in_a_common_year() -> None:
    assert add(t("2023-01-31T10:30:00Z"), Interval.MONTH, 1) == t("2023-02-28T10:30:00Z")


def test_later_months_are_computed_from_the_anchor_not_chained() -> None:
    assert add(JAN_31_2024, Interval.MONTH, 2) == t("2024-03-31T10:30:00Z")
    assert add(JAN_31_2024, Interval.MONTH, 3) == t("2024-04-30T10:30:00Z")
    assert add(JAN_31_2024, Interval.MONTH, 4) == t("2024-05-31T10:30:00Z")
    # chaining would drift to the 29th: that is what the anchor rule avoids
    assert add(add(JAN_31_2024, Interval.MONTH), Interval.MONTH) == t("2024-03-29T10:30:00Z")


def test_months_keep_the_time_of_day_to_the_millisecond() -> None:
    assert add(t("2024-01-15T23:59:59.999Z"), Interval.MONTH, 1) == t("2024-02-15T23:59:59.999Z")


def test_negative_months_clamp_too() -> None:
    assert add(t("2024-03-31T00:00:00Z"), Interval.MONTH, -1) == t("2024-02-29T00:00:00Z")
    assert add(t("2024-03-31T00:00:00Z"), Interval.MONTH, -13) == t("2023-02-28T00:00:00Z")
    assert add(JAN_31_2024, Interval.MONTH, 0) == JAN_31_2024


def test_months_across_the_year_change() -> None:
    dec_31 = t("2023-12-31T00:00:00Z")
    assert add(dec_31, Interval.MONTH, 1) == t("2024-01-31T00:00:00Z")
    assert add(dec_31, Interval.MONTH, 2) == t("2024-02-29T00:00:00Z")
    assert add(dec_31, Interval.MONTH, 12) == t("2024-12-31T00:00:00Z")
    assert add(t("2024-01-31T00:00:00Z"), Interval.MONTH, -1) == dec_31
    assert add(t("2024-11-30T00:00:00Z"), Interval.MONTH, 3) == t("2025-02-28T00:00:00Z")


def test_year_from_feb_29_clamps_in_common_years_and_returns_in_leap_years() -> None:
    feb_29 = t("2024-02-29T12:00:00Z")
    assert add(feb_29, Interval.YEAR) == t("2025-02-28T12:00:00Z")
    assert add(feb_29, Interval.YEAR, 2) == t("2026-02-28T12:00:00Z")
    assert add(feb_29, Interval.YEAR, 4) == t("2028-02-29T12:00:00Z")
    assert add(feb_29, Interval.YEAR, -1) == t("2023-02-28T12:00:00Z")
    assert add(feb_29, Interval.YEAR, -4) == t("2020-02-29T12:00:00Z")
    assert add(feb_29, Interval.YEAR, 100) == t("2124-02-29T12:00:00Z")


@pytest.mark.parametrize(
    ("interval", "length"), [(Interval.HOUR, HOUR_MS), (Interval.DAY, DAY_MS), (Interval.WEEK, 7 * DAY_MS)]
)
@pytest.mark.parametrize("count", [-3, -1, 0, 1, 2, 53])
def test_hours_days_and_weeks_are_fixed_lengths(interval: Interval, length: int, count: int) -> None:
    # across the leap day and a month end: no calendar effect
    anchor = t("2024-02-28T17:45:00Z")
    assert add(anchor, interval, count) == anchor + count * length


def test_a_day_across_feb_29_is_24_hours() -> None:
    assert add(t("2024-02-28T05:00:00Z"), Interval.DAY, 1) == t("2024-02-29T05:00:00Z")
    assert add(t("2024-02-28T05:00:00Z"), Interval.DAY, 2) == t("2024-03-01T05:00:00Z")
    assert add(t("2023-12-31T05:00:00Z"), Interval.WEEK, 1) == t("2024-01-07T05:00:00Z")


@pytest.mark.parametrize(
    ("interval", "iso"),
    [(Interval.HOUR, "PT1H"), (Interval.DAY, "P1D"), (Interval.WEEK, "P1W"), (Interval.MONTH, "P1M"),
     (Interval.YEAR, "P1Y")],
)
def test_iso_durations(interval: Interval, iso: str) -> None:
    assert interval.iso == iso


# --- index_of -----------------------------------------------------------------------------------------


def test_index_of_a_time_exactly_on_a_boundary_is_that_boundary() -> None:
    assert index_of(JAN_31_2024, Interval.MONTH, JAN_31_2024) == 0
    assert index_of(JAN_31_2024, Interval.MONTH, t("2024-02-29T10:30:00Z")) == 1
    assert index_of(JAN_31_2024, Interval.MONTH, t("2024-03-31T10:30:00Z")) == 2
    assert index_of(JAN_31_2024, Interval.DAY, JAN_31_2024 + 5 * DAY_MS) == 5


def test_index_of_a_time_just_before_a_boundary_is_the_previous_interval() -> None:
    assert index_of(JAN_31_2024, Interval.MONTH, t("2024-02-29T10:29:59.999Z")) == 0
    assert index_of(JAN_31_2024, Interval.MONTH, t("2024-03-31T10:29:59.999Z")) == 1
    # Mar 29-30 are past the chained boundary but still in the Feb 29 interval
    assert index_of(JAN_31_2024, Interval.MONTH, t("2024-03-30T12:00:00Z")) == 1
    assert index_of(JAN_31_2024, Interval.DAY, JAN_31_2024 + 5 * DAY_MS - 1) == 4
    assert index_of(JAN_31_2024, Interval.YEAR, t("2025-01-31T10:29:59.999Z")) == 0
    assert index_of(JAN_31_2024, Interval.YEAR, t("2025-01-31T10:30:00Z")) == 1


def test_index_of_a_time_before_the_anchor_is_negative() -> None:
    assert index_of(JAN_31_2024, Interval.MONTH, JAN_31_2024 - 1) == -1
    assert index_of(JAN_31_2024, Interval.MONTH, t("2023-12-31T10:30:00Z")) == -1
    assert index_of(JAN_31_2024, Interval.MONTH, t("2023-12-31T10:29:59.999Z")) == -2
    assert index_of(JAN_31_2024, Interval.MONTH, t("2023-11-30T10:30:00Z")) == -2
    assert index_of(JAN_31_2024, Interval.DAY, JAN_31_2024 - 1) == -1
    assert index_of(JAN_31_2024, Interval.DAY, JAN_31_2024 - DAY_MS) == -1
    assert index_of(JAN_31_2024, Interval.DAY, JAN_31_2024 - DAY_MS - 1) == -2
    assert index_of(JAN_31_2024, Interval.WEEK, JAN_31_2024 - 7 * DAY_MS - 1) == -2
    assert index_of(t("2024-02-29T00:00:00Z"), Interval.YEAR, t("2023-03-01T00:00:00Z")) == -1
    assert index_of(t("2024-02-29T00:00:00Z"), Interval.YEAR, t("2023-02-28T00:00:00Z")) == -1
    assert index_of(t("2024-02-29T00:00:00Z"), Interval.YEAR, t("2023-02-27T23:59:59.999Z")) == -2


def test_index_of_across_the_year_change() -> None:
    anchor = t("2023-10-31T00:00:00Z")
    assert index_of(anchor, Interval.MONTH, t("2023-12-31T00:00:00Z")) == 2
    assert index_of(anchor, Interval.MONTH, t("2024-01-01T00:00:00Z")) == 2
    assert index_of(anchor, Interval.MONTH, t("2024-01-31T00:00:00Z")) == 3
    assert index_of(anchor, Interval.MONTH, t("2024-02-29T00:00:00Z")) == 4


# --- boundaries -----------------------------------------------------------------------------------------


def test_boundaries_exclude_both_ends() -> None:
    anchor = t("2024-01-01T00:00:00Z")
    after, before = anchor, add(anchor, Interval.MONTH, 3)  # both are boundaries themselves
    assert boundaries(anchor, Interval.MONTH, after, before) == [t("2024-02-01T00:00:00Z"), t("2024-03-01T00:00:00Z")]
    assert boundaries(anchor, Interval.DAY, anchor, anchor + DAY_MS) == []
    assert boundaries(anchor, Interval.DAY, anchor, anchor + DAY_MS + 1) == [anchor + DAY_MS]
    assert boundaries(anchor, Interval.DAY, anchor - 1, anchor + 1) == [anchor]


def test_boundaries_of_a_jan_31_anchor_across_the_year_change() -> None:
    anchor = t("2023-01-31T08:00:00Z")
    assert boundaries(anchor, Interval.MONTH, t("2023-11-15T00:00:00Z"), t("2024-04-15T00:00:00Z")) == [
        t("2023-11-30T08:00:00Z"),
        t("2023-12-31T08:00:00Z"),
        t("2024-01-31T08:00:00Z"),
        t("2024-02-29T08:00:00Z"),
        t("2024-03-31T08:00:00Z"),
    ]


def test_boundaries_before_the_anchor_and_of_an_empty_range() -> None:
    anchor = t("2024-03-10T00:00:00Z")
    week = 7 * DAY_MS
    assert boundaries(anchor, Interval.WEEK, anchor - 15 * DAY_MS, anchor) == [anchor - 2 * week, anchor - week]
    assert boundaries(anchor, Interval.WEEK, anchor + 1, anchor + 1) == []
    assert boundaries(anchor, Interval.YEAR, anchor + 1, anchor - 1) == []


# --- minutes --------------------------------------------------------------------------------------------


def test_floor_and_ceil_minute() -> None:
    minute = t("2024-02-29T23:59:00Z")
    assert floor_minute(minute) == minute
    assert ceil_minute(minute) == minute
    assert floor_minute(minute + 1) == minute
    assert ceil_minute(minute + 1) == minute + MINUTE_MS
    assert floor_minute(minute + MINUTE_MS - 1) == minute
    assert ceil_minute(minute + MINUTE_MS - 1) == t("2024-03-01T00:00:00Z")
    assert floor_minute(-1) == -MINUTE_MS
    assert ceil_minute(-1) == 0


# --- property ---------------------------------------------------------------------------------------------

_Y2000 = t("2000-01-01T00:00:00Z")
_Y2100 = t("2100-12-31T23:59:59.999Z")
# anchors on whole minutes as the API floors them; times at any millisecond
_ANCHORS = st.integers(_Y2000 // MINUTE_MS, _Y2100 // MINUTE_MS).map(lambda m: m * MINUTE_MS)
_TIMES = st.integers(_Y2000, _Y2100)


@settings(max_examples=300, deadline=None)
@given(
    anchor=_ANCHORS,
    ms=_TIMES,
    interval=st.sampled_from([Interval.MONTH, Interval.YEAR, Interval.WEEK, Interval.DAY]),
)
def test_index_of_finds_the_interval_holding_the_time(anchor: int, ms: int, interval: Interval) -> None:
    k = index_of(anchor, interval, ms)
    assert add(anchor, interval, k) <= ms < add(anchor, interval, k + 1)
    assert (k < 0) == (ms < anchor)


@settings(max_examples=100, deadline=None)
@given(
    anchor=_ANCHORS,
    after=_TIMES,
    span=st.integers(0, 400 * DAY_MS),
    interval=st.sampled_from([Interval.MONTH, Interval.WEEK, Interval.DAY]),
)
def test_boundaries_are_the_anchor_steps_strictly_inside(
    anchor: int, after: int, span: int, interval: Interval
) -> None:
    before = after + span
    found = boundaries(anchor, interval, after, before)
    first = index_of(anchor, interval, after)
    expected = []
    k = first + 1
    while add(anchor, interval, k) < before:
        expected.append(add(anchor, interval, k))
        k += 1
    assert found == expected
    assert all(after < b < before for b in found)
    assert found == sorted(set(found))
