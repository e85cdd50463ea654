"""The burn-down engine of metered entitlements (domain/burndown.py) against the spec's grant semantics (A.5),
its burn-down pseudo-code (A.7) and its worked examples (A.10), plus a property test against a slow,
independently written reference that replays the timeline hour by hour."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterline.domain.burndown import (
    NEVER,
    Balances,
    BurnDown,
    GrantTerms,
    ManualReset,
    Recurrence,
    UsagePeriods,
    burn_down,
    start_of,
)
from meterline.domain.periods import Interval, add
from meterline.domain.timeutil import DAY_MS, HOUR_MS, MINUTE_MS, parse_rfc3339, to_epoch_ms

Event = tuple[int, Decimal]  # (time ms, amount)


def t(value: str) -> int:
    return to_epoch_ms(parse_rfc3339(value))


def d(value: str | int) -> Decimal:
    return Decimal(str(value))


START = t("2024-01-01T00:00:00Z")
MONTHLY = UsagePeriods(START, Interval.MONTH, START)


@dataclass
class UsageLog:
    """usage_of over a list of events: usage in [a, b) = sum of amounts at a <= time < b. Records its calls."""

    events: Sequence[Event]
    calls: list[list[tuple[int, int]]] = field(default_factory=list)

    def __call__(self, windows: list[tuple[int, int]]) -> list[Decimal]:
        self.calls.append(list(windows))
        return [sum((amount for at, amount in self.events if a <= at < b), Decimal(0)) for a, b in windows]


def run(periods: UsagePeriods, grants: Sequence[GrantTerms], to_ms: int, events: Sequence[Event] = (),
        start: Balances | None = None, observe: Sequence[int] = ()) -> BurnDown:
    """burn_down from `start` (default start_of) through `to_ms`, checking that usage is asked for once, with
    contiguous windows covering [start, to_ms)."""
    start = start_of(periods, grants) if start is None else start
    usage = UsageLog(events)
    result = burn_down(periods, grants, start, to_ms, usage, observe)
    if to_ms > start.at:
        assert len(usage.calls) == 1
        windows = usage.calls[0]
        assert windows[0][0] == start.at and windows[-1][1] == to_ms
        assert all(a < b for a, b in windows)
        assert all(prev[1] == nxt[0] for prev, nxt in zip(windows, windows[1:], strict=False))
    else:
        assert len(usage.calls) <= 1
    return result


def value(result: BurnDown) -> tuple[Decimal, Decimal, Decimal]:
    """(balance, usage, overage), as GET .../value reports them."""
    return result.balance, result.end.usage, result.end.overage


def allowance(amount: int | str, effective_at: int = START, priority: int = 1) -> GrantTerms:
    """The default grant of issueAfterReset: min = max rollover = amount, expires after 100 years."""
    return GrantTerms("default", d(amount), effective_at, priority, add(effective_at, Interval.YEAR, 100),
                      min_rollover=d(amount), max_rollover=d(amount))


def has_access(result: BurnDown, is_soft_limit: bool = False) -> bool:
    return is_soft_limit or result.balance > 0  # A.6: strictly positive


# --- A.10 worked examples ----------------------------------------------------------------------------


def test_example_1_allowance_only() -> None:
    grants = [allowance(100)]
    used_60 = run(MONTHLY, grants, t("2024-01-20T00:00:00Z"), [(t("2024-01-10T08:00:00Z"), d(60))])
    assert value(used_60) == (40, 60, 0)
    assert used_60.end.balances == {"default": 40}
    assert has_access(used_60)

    used_130 = run(MONTHLY, grants, t("2024-01-20T00:00:00Z"),
                   [(t("2024-01-10T08:00:00Z"), d(60)), (t("2024-01-12T08:00:00Z"), d(70))])
    assert value(used_130) == (0, 130, 30)
    assert used_130.end.balances == {"default": 0}
    assert not has_access(used_130)


def test_example_2_soft_limit_changes_access_not_the_numbers() -> None:
    result = run(MONTHLY, [allowance(100)], t("2024-01-20T00:00:00Z"), [(t("2024-01-10T08:00:00Z"), d(130))])
    assert value(result) == (0, 130, 30)
    assert has_access(result, is_soft_limit=True)
    assert not has_access(result, is_soft_limit=False)


def test_example_3_burn_order() -> None:
    a = GrantTerms("A", d(50), START, priority=1, expires_at=add(START, Interval.YEAR, 1))
    b = GrantTerms("B", d(50), START, priority=1, expires_at=add(START, Interval.MONTH, 1))
    c = GrantTerms("C", d(50), START, priority=0, expires_at=add(START, Interval.YEAR, 1))  # OpenMeter's omitted
    result = run(MONTHLY, [a, b, c], t("2024-01-20T00:00:00Z"), [(t("2024-01-05T00:00:00Z"), d(70))])
    assert result.end.balances == {"A": 50, "B": 30, "C": 0}
    assert value(result) == (80, 70, 0)


def test_example_3_an_omitted_priority_is_1_in_meterline() -> None:
    assert GrantTerms("x", d(1), START).priority == 1
    # so C ties with A and B on priority; with no expiry it burns after both
    a = GrantTerms("A", d(50), START, expires_at=add(START, Interval.YEAR, 1))
    b = GrantTerms("B", d(50), START, expires_at=add(START, Interval.MONTH, 1))
    c = GrantTerms("C", d(50), START)
    result = run(MONTHLY, [c, a, b], t("2024-01-20T00:00:00Z"), [(t("2024-01-05T00:00:00Z"), d(70))])
    assert result.end.balances == {"A": 30, "B": 0, "C": 50}


@pytest.mark.parametrize(
    ("g_priority", "g_after_period_1", "default_after_period_1"),
    [
        (0, 470, 100),  # G has the higher priority: G burns first
        (1, 470, 100),  # tie: G expires first (1 year against 100), so G burns first
        (2, 500, 70),  # otherwise the default grant burns first
    ],
)
@pytest.mark.parametrize("g_max_rollover", [0, 500])
def test_example_4_reset_with_default_rollover(g_priority: int, g_after_period_1: int,
                                               default_after_period_1: int, g_max_rollover: int) -> None:
    g = GrantTerms("G", d(500), START, g_priority, add(START, Interval.YEAR, 1), max_rollover=d(g_max_rollover))
    grants = [allowance(100), g]
    events = [(t("2024-01-10T00:00:00Z"), d(30))]

    period_1 = run(MONTHLY, grants, t("2024-01-31T23:59:00Z"), events)
    assert period_1.end.balances == {"default": default_after_period_1, "G": g_after_period_1}
    assert value(period_1) == (570, 30, 0)

    kept = g_after_period_1 if g_max_rollover else 0
    for at in (t("2024-02-01T00:00:00Z"), t("2024-02-15T00:00:00Z")):
        after_reset = run(MONTHLY, grants, at, events)
        assert after_reset.end.balances == {"default": 100, "G": kept}
        assert value(after_reset) == (100 + kept, 0, 0)


@pytest.mark.parametrize(("preserve", "balance_after"), [(True, 70), (False, 100)])
def test_example_5_preserve_overage_at_a_programmatic_reset(preserve: bool, balance_after: int) -> None:
    periods = UsagePeriods(START, Interval.MONTH, START, preserve_overage_at_reset=preserve)
    events = [(t("2024-01-10T00:00:00Z"), d(130))]
    assert value(run(periods, [allowance(100)], t("2024-01-31T23:59:00Z"), events)) == (0, 130, 30)
    after = run(periods, [allowance(100)], t("2024-02-01T00:00:00Z"), events)
    assert value(after) == (balance_after, 0, 0)
    assert after.end.balances == {"default": balance_after}


@pytest.mark.parametrize(("preserve", "balance_after"), [(True, 70), (False, 100)])
def test_example_5_preserve_overage_of_a_manual_reset_overrides_the_entitlement_default(
        preserve: bool, balance_after: int) -> None:
    reset = t("2024-01-20T00:00:00Z")
    periods = UsagePeriods(START, Interval.MONTH, START, (ManualReset(reset, reset, preserve),),
                           preserve_overage_at_reset=not preserve)
    events = [(t("2024-01-10T00:00:00Z"), d(130))]
    assert value(run(periods, [allowance(100)], reset - MINUTE_MS, events)) == (0, 130, 30)
    assert value(run(periods, [allowance(100)], reset, events)) == (balance_after, 0, 0)


def test_example_5_preserved_overage_larger_than_the_new_balance_stays_overage() -> None:
    periods = UsagePeriods(START, Interval.MONTH, START, preserve_overage_at_reset=True)
    events = [(t("2024-01-10T00:00:00Z"), d(230))]
    assert value(run(periods, [allowance(100)], t("2024-02-01T00:00:00Z"), events)) == (0, 0, 30)
    # and once more at the next reset
    assert value(run(periods, [allowance(100)], t("2024-03-01T00:00:00Z"), events)) == (70, 0, 0)


def test_example_6_void() -> None:
    voided = t("2024-01-15T00:00:00Z")
    grant = GrantTerms("G", d(100), START, voided_at=voided)
    events = [(t("2024-01-10T00:00:00Z"), d(60)), (t("2024-01-20T00:00:00Z"), d(25))]
    assert value(run(MONTHLY, [grant], voided - MINUTE_MS, events)) == (40, 60, 0)

    at_void = run(MONTHLY, [grant], voided, events)
    assert value(at_void) == (0, 60, 0)
    assert at_void.end.balances == {}  # no longer active

    later = run(MONTHLY, [grant], t("2024-01-25T00:00:00Z"), events)
    assert value(later) == (0, 85, 25)
    before_void, after_void = later.segments
    assert (before_void.from_ms, before_void.to_ms) == (START, voided)
    assert before_void.grant_usages == {"G": 60}  # the usage stays attributed to the grant
    assert (after_void.usage, after_void.overage, after_void.grant_usages) == (25, 25, {})


def test_example_7_daily_recurrence_in_a_monthly_period() -> None:
    grant = GrantTerms("R", d(10), START, recurrence=Recurrence(Interval.DAY, START))
    events = [(t("2024-01-01T10:00:00Z"), d(7)), (t("2024-01-15T09:00:00Z"), d(4)),
              (t("2024-01-20T09:00:00Z"), d(15))]

    def at(value_: str) -> tuple[Decimal, Decimal, Decimal]:
        return value(run(MONTHLY, [grant], t(value_), events))

    assert at("2024-01-01T23:59:00Z") == (3, 7, 0)
    assert at("2024-01-02T00:00:00Z") == (10, 7, 0)
    assert at("2024-01-15T12:00:00Z") == (6, 11, 0)
    assert at("2024-01-16T00:00:00Z") == (10, 11, 0)
    assert at("2024-01-20T12:00:00Z") == (0, 26, 5)
    # the next recurrence pays back the overage (A.7: earlier uncovered usage burns from later balances)
    assert at("2024-01-21T00:00:00Z") == (5, 26, 0)


def test_example_8_a_later_grant_pays_back_overage() -> None:
    grants = [GrantTerms("G", d(100), START), GrantTerms("L", d(50), t("2024-01-15T00:00:00Z"))]
    events = [(t("2024-01-05T00:00:00Z"), d(70)), (t("2024-01-10T00:00:00Z"), d(50))]
    before = run(MONTHLY, grants, t("2024-01-14T23:59:00Z"), events)
    assert value(before) == (0, 120, 20)
    assert before.end.balances == {"G": 0}
    after = run(MONTHLY, grants, t("2024-01-15T00:00:00Z"), events)
    assert value(after) == (30, 120, 0)
    assert after.end.balances == {"G": 0, "L": 30}


# --- grant semantics ---------------------------------------------------------------------------------


def test_priority_ties_are_broken_by_earlier_expiry_then_earlier_creation() -> None:
    feb, mar, jan_20 = t("2024-02-01T00:00:00Z"), t("2024-03-01T00:00:00Z"), t("2024-01-20T00:00:00Z")
    grants = [
        GrantTerms("late", d(10), START, 2, mar, created_at=0),
        GrantTerms("feb-new", d(10), START, 2, feb, created_at=7),
        GrantTerms("feb-old", d(10), START, 2, feb, created_at=3),
        GrantTerms("jan", d(10), START, 2, jan_20, created_at=9),
        GrantTerms("top", d(10), START, 1, mar, created_at=9),
    ]
    # expected order: top (priority 1), jan (earliest expiry), feb-old (earlier created), feb-new, late
    for used, expected in [
        (10, {"top": 0, "jan": 10, "feb-old": 10, "feb-new": 10, "late": 10}),
        (15, {"top": 0, "jan": 5, "feb-old": 10, "feb-new": 10, "late": 10}),
        (25, {"top": 0, "jan": 0, "feb-old": 5, "feb-new": 10, "late": 10}),
        (35, {"top": 0, "jan": 0, "feb-old": 0, "feb-new": 5, "late": 10}),
        (45, {"top": 0, "jan": 0, "feb-old": 0, "feb-new": 0, "late": 5}),
    ]:
        result = run(MONTHLY, grants, t("2024-01-10T00:00:00Z"), [(t("2024-01-02T00:00:00Z"), d(used))])
        assert result.end.balances == expected, used


def test_an_expired_grant_loses_its_remainder_and_later_usage_is_overage() -> None:
    expiry = t("2024-01-15T00:00:00Z")
    grants = [GrantTerms("G", d(100), START, expires_at=expiry)]
    events = [(t("2024-01-10T00:00:00Z"), d(30)), (t("2024-01-20T00:00:00Z"), d(20))]
    assert value(run(MONTHLY, grants, expiry - MINUTE_MS, events)) == (70, 30, 0)
    at_expiry = run(MONTHLY, grants, expiry, events)
    assert value(at_expiry) == (0, 30, 0)
    assert at_expiry.end.balances == {}
    assert value(run(MONTHLY, grants, t("2024-01-25T00:00:00Z"), events)) == (0, 50, 20)
    # a grant starting later does not inherit the remainder, it pays the overage
    late = GrantTerms("L", d(5), t("2024-01-28T00:00:00Z"))
    assert value(run(MONTHLY, [*grants, late], t("2024-01-28T00:00:00Z"), events)) == (0, 50, 15)


def test_an_expired_grant_is_not_used_even_when_it_comes_first() -> None:
    grants = [GrantTerms("first", d(100), START, priority=1, expires_at=t("2024-01-05T00:00:00Z")),
              GrantTerms("second", d(100), START, priority=2)]
    result = run(MONTHLY, grants, t("2024-01-10T00:00:00Z"), [(t("2024-01-06T00:00:00Z"), d(30))])
    assert result.end.balances == {"second": 70}


def test_void_keeps_what_was_used_and_later_usage_burns_other_grants_then_becomes_overage() -> None:
    voided = t("2024-01-10T00:00:00Z")
    grants = [GrantTerms("V", d(100), START, priority=1, voided_at=voided),
              GrantTerms("K", d(20), START, priority=2)]
    events = [(t("2024-01-05T00:00:00Z"), d(40)), (t("2024-01-12T00:00:00Z"), d(30))]
    result = run(MONTHLY, grants, t("2024-01-20T00:00:00Z"), events)
    assert value(result) == (0, 70, 10)
    assert result.end.balances == {"K": 0}
    assert [s.grant_usages for s in result.segments] == [{"V": 40}, {"K": 20}]
    # a void time before the grant starts: the grant never counts
    never = GrantTerms("N", d(100), t("2024-01-05T00:00:00Z"), voided_at=t("2024-01-03T00:00:00Z"))
    assert value(run(MONTHLY, [never], t("2024-01-20T00:00:00Z"), events)) == (0, 70, 70)


def test_a_grant_before_measure_usage_from_holds_its_amount_and_earlier_usage_is_not_counted() -> None:
    measure = t("2024-01-10T00:00:00Z")
    periods = UsagePeriods(measure, Interval.MONTH, START)
    grants = [GrantTerms("G", d(100), START)]
    events = [(t("2024-01-05T00:00:00Z"), d(50)), (t("2024-01-12T00:00:00Z"), d(10))]
    assert start_of(periods, grants) == Balances(measure, {"G": d(100)})
    assert value(run(periods, grants, t("2024-01-20T00:00:00Z"), events)) == (90, 10, 0)
    # a grant effective exactly at measureUsageFrom gets its amount at that minute
    exact = [GrantTerms("E", d(100), measure)]
    assert start_of(periods, exact).balances == {}
    assert value(run(periods, exact, t("2024-01-20T00:00:00Z"), events)) == (90, 10, 0)


# --- recurrence ----------------------------------------------------------------------------------------


def test_a_recurrence_at_a_reset_restores_the_amount_once() -> None:
    # amount 10, rollover clamps to 4, recurring daily on the period anchor: at Feb 1 the reset clamps
    # and the recurrence restores 10 (not 4, and not 4 + 10)
    grant = GrantTerms("R", d(10), START, min_rollover=d(4), max_rollover=d(4),
                       recurrence=Recurrence(Interval.DAY, START))
    for used in (3, 10):
        events = [(t("2024-01-31T05:00:00Z"), d(used)), (t("2024-02-01T06:00:00Z"), d(2))]
        assert value(run(MONTHLY, [grant], t("2024-01-31T23:59:00Z"), events)) == (10 - used, used, 0)
        assert value(run(MONTHLY, [grant], t("2024-02-01T00:00:00Z"), events)) == (10, 0, 0)
        assert value(run(MONTHLY, [grant], t("2024-02-01T12:00:00Z"), events)) == (8, 2, 0)


def test_a_reset_between_recurrences_clamps_and_the_next_recurrence_restores() -> None:
    noon = START + 12 * HOUR_MS
    grant = GrantTerms("R", d(10), noon, min_rollover=d(0), max_rollover=d(4),
                       recurrence=Recurrence(Interval.DAY, noon))
    events = [(t("2024-01-31T13:00:00Z"), d(3))]
    assert value(run(MONTHLY, [grant], t("2024-01-31T23:59:00Z"), events)) == (7, 3, 0)
    assert value(run(MONTHLY, [grant], t("2024-02-01T00:00:00Z"), events)) == (4, 0, 0)  # clamped
    assert value(run(MONTHLY, [grant], t("2024-02-01T11:59:00Z"), events)) == (4, 0, 0)
    assert value(run(MONTHLY, [grant], t("2024-02-01T12:00:00Z"), events)) == (10, 0, 0)  # recurred


def test_recurrence_stops_at_expiry_and_ignores_times_before_the_grant_starts() -> None:
    grant = GrantTerms("R", d(10), t("2024-01-03T06:00:00Z"), expires_at=t("2024-01-06T00:00:00Z"),
                       recurrence=Recurrence(Interval.DAY, START))
    events = [(t("2024-01-03T07:00:00Z"), d(8)), (t("2024-01-04T07:00:00Z"), d(8)),
              (t("2024-01-05T07:00:00Z"), d(1))]
    assert value(run(MONTHLY, [grant], t("2024-01-03T23:00:00Z"), events)) == (2, 8, 0)
    assert value(run(MONTHLY, [grant], t("2024-01-04T00:00:00Z"), events)) == (10, 8, 0)
    assert value(run(MONTHLY, [grant], t("2024-01-05T12:00:00Z"), events)) == (9, 17, 0)
    assert value(run(MONTHLY, [grant], t("2024-01-06T00:00:00Z"), events)) == (0, 17, 0)


def test_weekly_recurrence_with_its_own_anchor() -> None:
    anchor = t("2024-01-03T09:00:00Z")  # a Wednesday
    grant = GrantTerms("W", d(50), START, recurrence=Recurrence(Interval.WEEK, anchor),
                       max_rollover=d(50))
    events = [(t("2024-01-02T00:00:00Z"), d(45)), (t("2024-01-09T00:00:00Z"), d(20))]
    assert value(run(MONTHLY, [grant], t("2024-01-03T08:59:00Z"), events)) == (5, 45, 0)
    assert value(run(MONTHLY, [grant], t("2024-01-03T09:00:00Z"), events)) == (50, 45, 0)
    assert value(run(MONTHLY, [grant], t("2024-01-10T08:59:00Z"), events)) == (30, 65, 0)
    assert value(run(MONTHLY, [grant], t("2024-01-10T09:00:00Z"), events)) == (50, 65, 0)


# --- rollover and resets ---------------------------------------------------------------------------------


def test_rollover_clamps_to_min_and_max_at_a_monthly_boundary() -> None:
    grants = [
        GrantTerms("mid", d(100), START, priority=1, min_rollover=d(20), max_rollover=d(50)),  # 30: kept
        GrantTerms("low", d(10), START, priority=2, min_rollover=d(20), max_rollover=d(50)),  # 10: raised
        GrantTerms("high", d(100), START, priority=3, min_rollover=d(20), max_rollover=d(50)),  # 100: cut
        GrantTerms("plain", d(100), START, priority=4),  # defaults 0/0: dropped
        GrantTerms("exact", d("12.5"), START, priority=5, min_rollover=d("12.5"), max_rollover=d("12.5")),
    ]
    events = [(t("2024-01-20T00:00:00Z"), d(70))]
    before = run(MONTHLY, grants, t("2024-01-31T23:59:00Z"), events)
    assert before.end.balances == {"mid": 30, "low": 10, "high": 100, "plain": 100, "exact": d("12.5")}
    after = run(MONTHLY, grants, t("2024-02-01T00:00:00Z"), events)
    assert after.end.balances == {"mid": 30, "low": 20, "high": 50, "plain": 0, "exact": d("12.5")}
    assert value(after) == (d("112.5"), 0, 0)
    assert len(after.checkpoints) == 1 and after.checkpoints[0].at == t("2024-02-01T00:00:00Z")


def test_a_manual_reset_with_a_new_anchor_moves_the_cadence() -> None:
    reset = t("2024-01-20T12:00:00Z")
    periods = UsagePeriods(START, Interval.MONTH, START, (ManualReset(reset, reset, False),))
    grant = GrantTerms("A", d(100), START, min_rollover=d(10), max_rollover=d(40))
    events = [(t("2024-01-10T00:00:00Z"), d(50)), (t("2024-01-25T00:00:00Z"), d(35))]
    assert value(run(periods, [grant], reset - MINUTE_MS, events)) == (50, 50, 0)
    assert value(run(periods, [grant], reset, events)) == (40, 0, 0)  # clamped to max
    # no reset at Feb 1 any more (it would have clamped 5 up to 10)
    assert value(run(periods, [grant], t("2024-02-10T00:00:00Z"), events)) == (5, 35, 0)
    assert value(run(periods, [grant], t("2024-02-20T11:59:00Z"), events)) == (5, 35, 0)
    assert value(run(periods, [grant], t("2024-02-20T12:00:00Z"), events)) == (10, 0, 0)  # clamped to min
    assert periods.period_at(t("2024-02-10T00:00:00Z")) == (reset, t("2024-02-20T12:00:00Z"))


def test_a_manual_reset_that_retains_the_anchor_keeps_the_monthly_cadence() -> None:
    reset = t("2024-01-20T12:00:00Z")
    periods = UsagePeriods(START, Interval.MONTH, START, (ManualReset(reset, START, False),))
    grant = GrantTerms("A", d(100), START, min_rollover=d(10), max_rollover=d(40))
    events = [(t("2024-01-10T00:00:00Z"), d(50)), (t("2024-01-25T00:00:00Z"), d(35))]
    assert value(run(periods, [grant], reset, events)) == (40, 0, 0)
    assert value(run(periods, [grant], t("2024-01-31T23:59:00Z"), events)) == (5, 35, 0)
    assert value(run(periods, [grant], t("2024-02-01T00:00:00Z"), events)) == (10, 0, 0)
    assert periods.period_at(t("2024-01-25T00:00:00Z")) == (reset, t("2024-02-01T00:00:00Z"))
    assert periods.period_at(t("2024-02-10T00:00:00Z")) == (t("2024-02-01T00:00:00Z"), t("2024-03-01T00:00:00Z"))


def test_a_manual_reset_on_a_boundary_is_one_reset_with_the_manual_flag() -> None:
    feb = t("2024-02-01T00:00:00Z")
    periods = UsagePeriods(START, Interval.MONTH, START, (ManualReset(feb, START, True),),
                           preserve_overage_at_reset=False)
    events = [(t("2024-01-10T00:00:00Z"), d(130))]
    result = run(periods, [allowance(100)], t("2024-02-10T00:00:00Z"), events)
    assert value(result) == (70, 0, 0)
    assert [c.at for c in result.checkpoints] == [feb]


# --- periods ---------------------------------------------------------------------------------------------


def test_period_at_across_month_ends_and_leap_years() -> None:
    anchor, measure = t("2024-01-31T10:00:00Z"), t("2024-01-15T00:00:00Z")
    periods = UsagePeriods(measure, Interval.MONTH, anchor)
    first = (measure, anchor)
    assert periods.period_at(t("2024-01-20T00:00:00Z")) == first
    assert periods.period_at(measure) == first
    assert periods.period_at(START) == first  # earlier times: the first period
    assert periods.period_at(anchor) == (anchor, t("2024-02-29T10:00:00Z"))
    assert periods.period_at(t("2024-02-29T09:59:59.999Z")) == (anchor, t("2024-02-29T10:00:00Z"))
    assert periods.period_at(t("2024-02-29T10:00:00Z")) == (t("2024-02-29T10:00:00Z"), t("2024-03-31T10:00:00Z"))
    assert periods.period_at(t("2024-04-30T10:00:00Z")) == (t("2024-04-30T10:00:00Z"), t("2024-05-31T10:00:00Z"))
    assert periods.period_at(t("2024-12-31T12:00:00Z")) == (t("2024-12-31T10:00:00Z"), t("2025-01-31T10:00:00Z"))
    assert periods.period_at(t("2025-02-28T12:00:00Z")) == (t("2025-02-28T10:00:00Z"), t("2025-03-31T10:00:00Z"))

    yearly = UsagePeriods(t("2024-02-29T00:00:00Z"), Interval.YEAR, t("2024-02-29T00:00:00Z"))
    assert yearly.period_at(t("2025-03-01T00:00:00Z")) == (t("2025-02-28T00:00:00Z"), t("2026-02-28T00:00:00Z"))
    assert yearly.period_at(t("2027-06-01T00:00:00Z")) == (t("2027-02-28T00:00:00Z"), t("2028-02-29T00:00:00Z"))


def test_period_at_after_manual_resets() -> None:
    anchor = t("2024-01-31T10:00:00Z")
    first_reset, second_reset = t("2024-03-10T12:00:00Z"), t("2024-04-20T00:00:00Z")
    periods = UsagePeriods(anchor, Interval.MONTH, anchor, (
        ManualReset(first_reset, first_reset, False),  # new anchor
        ManualReset(second_reset, first_reset, False),  # retains the anchor in force
    ))
    assert periods.period_at(t("2024-03-05T00:00:00Z")) == (t("2024-02-29T10:00:00Z"), first_reset)
    assert periods.period_at(first_reset) == (first_reset, t("2024-04-10T12:00:00Z"))
    assert periods.period_at(t("2024-04-10T12:00:00Z")) == (t("2024-04-10T12:00:00Z"), second_reset)
    assert periods.period_at(t("2024-04-25T00:00:00Z")) == (second_reset, t("2024-05-10T12:00:00Z"))
    assert periods.period_at(t("2024-06-30T00:00:00Z")) == (t("2024-06-10T12:00:00Z"), t("2024-07-10T12:00:00Z"))
    assert periods.last_manual_reset == second_reset
    assert periods.current_anchor == first_reset
    assert UsagePeriods(anchor, Interval.MONTH, anchor).last_manual_reset is None


# --- checkpoints, segments, observed times --------------------------------------------------------------


def _busy_scenario() -> tuple[UsagePeriods, list[GrantTerms], list[Event], int]:
    manual = t("2024-02-10T06:00:00Z")
    periods = UsagePeriods(START, Interval.MONTH, START, (ManualReset(manual, START, True),),
                           preserve_overage_at_reset=True)
    grants = [
        allowance(100),
        GrantTerms("big", d(300), t("2024-01-05T00:00:00Z"), 2, t("2024-03-20T00:00:00Z"),
                   min_rollover=d(25), max_rollover=d(120), created_at=1),
        GrantTerms("daily", d(5), START, 1, recurrence=Recurrence(Interval.DAY, START + 3 * HOUR_MS),
                   max_rollover=d(5), created_at=2),
        GrantTerms("void", d(40), t("2024-02-15T00:00:00Z"), 0, voided_at=t("2024-02-25T00:00:00Z")),
    ]
    events = [(START + k * 7 * HOUR_MS + 11 * MINUTE_MS, d(k % 13) + d("0.25")) for k in range(400)]
    return periods, grants, events, t("2024-04-10T00:00:00Z")


def test_running_from_any_checkpoint_gives_the_same_end() -> None:
    periods, grants, events, end = _busy_scenario()
    full = run(periods, grants, end, events)
    assert [c.at for c in full.checkpoints] == [
        t("2024-02-01T00:00:00Z"), t("2024-02-10T06:00:00Z"), t("2024-03-01T00:00:00Z"), t("2024-04-01T00:00:00Z")]
    assert all(c.reset_due for c in full.checkpoints)
    for checkpoint in full.checkpoints:
        resumed = run(periods, grants, end, events, start=checkpoint)
        assert resumed.end == full.end, checkpoint.at
        # a checkpoint is the state just before its reset
        before = run(periods, grants, checkpoint.at - MINUTE_MS, events)
        assert (checkpoint.usage, checkpoint.overage) == (before.end.usage, before.end.overage)
        held = {k: v for k, v in before.end.balances.items() if v}
        assert {k: v for k, v in checkpoint.balances.items() if v} == held
    # a checkpoint does not change when taken from a later checkpoint
    second = run(periods, grants, end, events, start=full.checkpoints[1])
    assert second.checkpoints[-2:] == full.checkpoints[-2:]


def test_resuming_at_a_manual_reset_checkpoint_uses_the_reset_s_own_preserve_flag() -> None:
    # regression: resuming once applied periods.preserve_overage_at_reset at a manual reset's checkpoint
    reset = t("2024-01-15T00:00:00Z")
    periods = UsagePeriods(START, Interval.MONTH, START, (ManualReset(reset, reset, True),),
                           preserve_overage_at_reset=False)
    grants, events, end = [allowance(100)], [(t("2024-01-10T00:00:00Z"), d(130))], t("2024-01-20T00:00:00Z")
    full = run(periods, grants, end, events)
    assert value(full) == (70, 0, 0)
    [checkpoint] = full.checkpoints
    assert (checkpoint.at, checkpoint.overage) == (reset, 30)
    resumed = run(periods, grants, end, events, start=checkpoint)
    assert value(resumed) == (70, 0, 0)  # not (100, 0, 0): the carried 30 is not forgotten


def test_segments_split_at_grant_changes_and_resets() -> None:
    jan_10, jan_20, feb = t("2024-01-10T00:00:00Z"), t("2024-01-20T00:00:00Z"), t("2024-02-01T00:00:00Z")
    end = t("2024-02-05T00:00:00Z")
    grants = [GrantTerms("A", d(100), START, 2, expires_at=jan_20),
              GrantTerms("B", d(50), jan_10, 1, max_rollover=d(30))]
    events = [(t("2024-01-03T00:00:00Z"), d(30)), (t("2024-01-12T00:00:00Z"), d(60)),
              (t("2024-01-25T00:00:00Z"), d(10)), (t("2024-02-02T00:00:00Z"), d(45))]
    result = run(MONTHLY, grants, end, events)
    assert [(s.from_ms, s.to_ms) for s in result.segments] == [(START, jan_10), (jan_10, jan_20), (jan_20, feb),
                                                              (feb, end)]
    first, second, third, fourth = result.segments
    assert (first.usage, first.grant_usages, first.balance_at_start, first.balance_at_end) == (30, {"A": 30}, 100, 70)
    assert second.grant_usages == {"B": 50, "A": 10}
    assert (second.grant_balances_at_start, second.grant_balances_at_end) == ({"B": 50, "A": 70}, {"B": 0, "A": 60})
    assert (third.usage, third.overage, third.grant_usages, third.grant_balances_at_start) == (10, 10, {}, {"B": 0})
    # Feb 1: B rolls over min(30, max(0, 0)) = 0, the overage is forgotten
    assert (fourth.balance_at_start, fourth.usage, fourth.overage) == (0, 45, 45)
    _assert_segments_add_up(result, events)


def _assert_segments_add_up(result: BurnDown, events: Sequence[Event]) -> None:
    for segment in result.segments:
        assert segment.usage == sum((a for at, a in events if segment.from_ms <= at < segment.to_ms), Decimal(0))
        assert sum(segment.grant_usages.values(), Decimal(0)) == segment.balance_at_start - segment.balance_at_end
        assert segment.balance_at_start == sum(segment.grant_balances_at_start.values(), Decimal(0))
        assert segment.balance_at_end == sum(segment.grant_balances_at_end.values(), Decimal(0))
        for gid, start in segment.grant_balances_at_start.items():
            assert start - segment.grant_usages.get(gid, Decimal(0)) == segment.grant_balances_at_end[gid]
    for previous, segment in zip(result.segments, result.segments[1:], strict=False):
        assert previous.to_ms == segment.from_ms
        if segment.from_ms not in {c.at for c in result.checkpoints}:  # no reset between: overage carries
            burnt = sum(segment.grant_usages.values(), Decimal(0))
            assert previous.overage + segment.usage == burnt + segment.overage


def test_segments_of_a_busy_scenario_add_up() -> None:
    periods, grants, events, end = _busy_scenario()
    result = run(periods, grants, end, events)
    _assert_segments_add_up(result, events)
    assert result.segments[-1].to_ms == end
    assert sum((s.usage for s in result.segments), Decimal(0)) == sum(
        (a for at, a in events if START <= at < end), Decimal(0))


def test_observed_times_report_balances_without_splitting_segments() -> None:
    periods, grants, events, end = _busy_scenario()
    plain = run(periods, grants, end, events)
    observe = [START, t("2024-01-07T13:17:00Z"), t("2024-02-01T00:00:00Z"), t("2024-02-10T06:00:00Z"),
               t("2024-03-03T03:03:00Z"), end, end + DAY_MS, START - DAY_MS]
    observed = run(periods, grants, end, events, observe=observe)
    assert observed.segments == plain.segments
    assert observed.end == plain.end
    assert observed.checkpoints == plain.checkpoints
    assert set(observed.balance_at) == {at for at in observe if START <= at <= end}
    for at, balance in observed.balance_at.items():
        assert balance == run(periods, grants, at, events).balance, at


# --- kept overage at a reset where a grant starts or recurs ---------------------------------------------


def test_preserved_overage_is_paid_by_a_grant_starting_at_the_reset() -> None:
    periods = UsagePeriods(START, Interval.MONTH, START, preserve_overage_at_reset=True)
    feb = t("2024-02-01T00:00:00Z")
    grants = [GrantTerms("jan", d(100), START), GrantTerms("feb", d(100), feb, min_rollover=d(100),
                                                           max_rollover=d(100))]
    events = [(t("2024-01-10T00:00:00Z"), d(130))]
    assert value(run(periods, grants, feb - MINUTE_MS, events)) == (0, 130, 30)
    result = run(periods, grants, feb, events)
    assert value(result) == (70, 0, 0)  # the starting grant pays the kept 30


def test_preserved_overage_is_paid_by_a_grant_starting_at_the_reset_without_min_rollover() -> None:
    # the same with the default min_rollover 0
    periods = UsagePeriods(START, Interval.MONTH, START, preserve_overage_at_reset=True)
    feb = t("2024-02-01T00:00:00Z")
    grants = [GrantTerms("jan", d(100), START), GrantTerms("feb", d(100), feb, max_rollover=d(100))]
    events = [(t("2024-01-10T00:00:00Z"), d(130))]
    assert value(run(periods, grants, feb, events)) == (70, 0, 0)


def test_preserved_overage_is_paid_by_a_grant_recurring_at_the_reset() -> None:
    periods = UsagePeriods(START, Interval.MONTH, START, preserve_overage_at_reset=True)
    grant = GrantTerms("R", d(100), START, min_rollover=d(10), max_rollover=d(10),
                       recurrence=Recurrence(Interval.MONTH, START))
    events = [(t("2024-01-10T00:00:00Z"), d(130))]
    feb = t("2024-02-01T00:00:00Z")
    assert value(run(periods, [grant], feb - MINUTE_MS, events)) == (0, 130, 30)
    assert value(run(periods, [grant], feb, events)) == (70, 0, 0)  # restored to 100, then pays the kept 30


# --- property: the engine against a slow reference ------------------------------------------------------


def _cadence(anchor: int, interval: Interval, after: int, before: int) -> list[int]:
    """add(anchor, interval, k) strictly between after and before, by stepping k."""
    k = 0
    while add(anchor, interval, k) > after:
        k -= 1
    while add(anchor, interval, k) <= after:
        k += 1
    found = []
    while (moment := add(anchor, interval, k)) < before:
        found.append(moment)
        k += 1
    return found


def _reference_resets(periods: UsagePeriods, after: int, through: int) -> dict[int, bool]:
    """Reset time -> preserve overage, for resets in (after, through]."""
    stretches: list[tuple[int, int, bool | None]] = [(periods.measure_usage_from, periods.anchor_ms, None)]
    stretches += [(r.at, r.anchor_ms, r.preserve_overage) for r in periods.resets]
    resets: dict[int, bool] = {}
    for i, (begin, anchor, flag) in enumerate(stretches):
        end = stretches[i + 1][0] if i + 1 < len(stretches) else through + 1
        if flag is not None:
            resets[begin] = flag
        for moment in _cadence(anchor, periods.interval, begin, min(end, through + 1)):
            resets[moment] = periods.preserve_overage_at_reset
    return {at: flag for at, flag in resets.items() if after < at <= through}


@dataclass
class _Reference:
    balances: dict[str, Decimal]  # of the grants active at the end
    balance: Decimal
    usage: Decimal
    overage: Decimal
    balance_at: dict[int, Decimal]  # at each hour (and the end), before that hour's usage
    balances_at: dict[int, dict[str, Decimal]]  # the same, by active grant


def _reference(periods: UsagePeriods, grants: Sequence[GrantTerms], to_ms: int,
               events: Sequence[Event]) -> _Reference:
    """Replays [measureUsageFrom, to_ms] hour by hour (every change of state is on a whole hour; usage may be
    at any minute). At each hour: a reset (clamp the grants held before it, recurrences, then burn the carried
    overage if preserved, else forget it; usage restarts), recurrences, expired/voided grants drop to 0, grants
    starting get their amount; then that hour's usage plus the carried overage burns through the active grants
    in (priority, expiry, creation, id) order.

    Where A.7 leaves the order within one instant open, the reference never loses preserved overage: a grant
    that starts at a reset held nothing before it, so it is not clamped; the kept overage is paid at the
    reset, after grants starting or recurring then got their amount, by every grant active from then on."""
    t0 = periods.measure_usage_from
    zero = Decimal(0)
    resets = _reference_resets(periods, t0, to_ms)
    order = sorted(grants, key=lambda g: (g.priority, g.expires_at, g.created_at, g.id))

    def ends(g: GrantTerms) -> int:
        return g.expires_at if g.voided_at is None else min(g.expires_at, g.voided_at)

    def active(g: GrantTerms, at: int) -> bool:
        return g.effective_at <= at < ends(g)

    recurs = {g.id: set() if g.recurrence is None else set(
        _cadence(g.recurrence.anchor_ms, g.recurrence.interval, g.effective_at, min(ends(g), to_ms + 1)))
        for g in grants}
    held = {g.id: g.amount if g.effective_at < t0 and active(g, t0) else zero for g in grants}

    def burn(amount: Decimal, through: list[GrantTerms]) -> Decimal:
        for g in through:
            take = min(held[g.id], amount)
            if take > 0:
                held[g.id] -= take
                amount -= take
        return amount

    overage = usage = zero
    balances_at: dict[int, dict[str, Decimal]] = {}
    times = [*range(t0, to_ms, HOUR_MS), to_ms]
    for i, at in enumerate(times):
        reset = at in resets
        held_before = [g for g in order if active(g, at) and g.effective_at < at]
        if reset:
            for g in held_before:
                held[g.id] = min(g.max_rollover, max(g.min_rollover, held[g.id]))
        for g in grants:
            if active(g, at) and at in recurs[g.id]:
                held[g.id] = g.amount
        if reset:
            overage = overage if resets[at] else zero
            usage = zero
        for g in grants:
            if not active(g, at):
                held[g.id] = zero
            elif g.effective_at == at:
                held[g.id] = g.amount
        if reset:  # kept overage is paid at the reset itself, by every grant active from then on
            overage = burn(overage, [g for g in order if active(g, at)])
        balances_at[at] = {g.id: held[g.id] for g in grants if active(g, at)}
        until = times[i + 1] if i + 1 < len(times) else to_ms
        used = sum((a for when, a in events if at <= when < until), zero)
        overage = burn(used + overage, [g for g in order if active(g, at)])
        usage += used
    balances = {g.id: held[g.id] for g in grants if active(g, to_ms)}
    balance_at = {at: sum(held_then.values(), zero) for at, held_then in balances_at.items()}
    return _Reference(balances, sum(balances.values(), zero), usage, overage, balance_at, balances_at)


T0 = t("2024-02-19T00:00:00Z")
SPAN_H = 21 * 24
_AMOUNTS = st.one_of(st.integers(0, 100).map(Decimal),
                     st.decimals(0, 100, places=2, allow_nan=False, allow_infinity=False))


def _hour(lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.integers(lo, hi).map(lambda h: T0 + h * HOUR_MS)


@st.composite
def _grant(draw: st.DrawFn, index: int) -> GrantTerms:
    effective = draw(_hour(-48, SPAN_H))
    expires = effective + draw(st.integers(1, SPAN_H)) * HOUR_MS if draw(st.booleans()) else NEVER
    voided = draw(st.none() | _hour(-48, SPAN_H))
    recurrence = None
    if draw(st.booleans()):
        interval = draw(st.sampled_from([Interval.DAY, Interval.WEEK]))
        recurrence = Recurrence(interval, effective + draw(st.integers(-48, 48)) * HOUR_MS)
    low, high = sorted([draw(_AMOUNTS), draw(_AMOUNTS)])
    return GrantTerms(f"g{index}", draw(_AMOUNTS), effective, draw(st.integers(1, 3)), expires, voided,
                      low, high, recurrence, draw(st.integers(0, 3)))


@st.composite
def _scenario(draw: st.DrawFn) -> tuple[UsagePeriods, list[GrantTerms], list[Event], int]:
    interval = draw(st.sampled_from([Interval.DAY, Interval.WEEK]))
    anchor = draw(_hour(-200, 200))
    resets: tuple[ManualReset, ...] = ()
    if draw(st.booleans()):
        at = draw(_hour(1, SPAN_H))
        resets = (ManualReset(at, anchor if draw(st.booleans()) else at, draw(st.booleans())),)
    periods = UsagePeriods(T0, interval, anchor, resets, draw(st.booleans()))
    grants = [draw(_grant(i)) for i in range(draw(st.integers(1, 4)))]
    usage_amounts = st.one_of(st.integers(0, 25).map(Decimal),
                              st.decimals(0, 25, places=2, allow_nan=False, allow_infinity=False))
    minutes = st.integers(-60, SPAN_H * 60).map(lambda m: T0 + m * MINUTE_MS)
    events = draw(st.lists(st.tuples(minutes, usage_amounts), max_size=15))
    to_ms = draw(_hour(0, SPAN_H) | st.integers(0, SPAN_H * 60).map(lambda m: T0 + m * MINUTE_MS))
    return periods, grants, events, to_ms


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_scenario())
def test_engine_matches_the_slow_reference(scenario: tuple[UsagePeriods, list[GrantTerms], list[Event], int]) -> None:
    periods, grants, events, to_ms = scenario
    expected = _reference(periods, grants, to_ms, events)
    result = run(periods, grants, to_ms, events)
    assert value(result) == (expected.balance, expected.usage, expected.overage)
    assert result.end.balances == expected.balances
    assert result.balance >= 0 and result.end.overage >= 0
    _assert_segments_add_up(result, events)
    for segment in result.segments:  # each grant's balance at each change
        assert segment.grant_balances_at_start == expected.balances_at[segment.from_ms]
    # and the balance at every hour: observed times split phases, not segments
    observed = run(periods, grants, to_ms, events, observe=list(expected.balance_at))
    assert observed.balance_at == expected.balance_at
    assert (observed.end, observed.segments) == (result.end, result.segments)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_scenario())
def test_running_from_any_checkpoint_matches_running_from_the_start(
        scenario: tuple[UsagePeriods, list[GrantTerms], list[Event], int]) -> None:
    periods, grants, events, to_ms = scenario
    full = run(periods, grants, to_ms, events)
    for checkpoint in full.checkpoints:
        resumed = run(periods, grants, to_ms, events, start=checkpoint)
        assert resumed.end == full.end
