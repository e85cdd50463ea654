"""When an export window can be exported as final, from the stream processor's lag reports."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from meterline.domain.processing_lag import Completeness, LagPolicy, LagSample, readiness

POLICY = LagPolicy(report_after_ms=30_000, lookback_ms=120_000)
END = 1_700_000_040_000 - 1_700_000_040_000 % 3_600_000  # an hour boundary


def test_a_batch_within_the_threshold_reports_nothing() -> None:
    assert POLICY.sample(oldest_arrival_ms=END, now_ms=END + 30_000) is None
    assert POLICY.sample(oldest_arrival_ms=END, now_ms=END + 30_001) == LagSample(END, END)
    assert POLICY.sample(oldest_arrival_ms=END, now_ms=END + 95_000) == LagSample(END + 60_000, END)


def test_never_final_before_the_settle() -> None:
    early = readiness(END, END + POLICY.settle_ms - 1, [], POLICY)
    assert (early.final, early.retry_at_ms) == (False, END + POLICY.settle_ms)
    assert early.completeness is Completeness.PROVISIONAL
    assert readiness(END, END + POLICY.settle_ms, [], POLICY).final


def test_a_report_of_a_record_from_before_the_end_holds_the_window_until_it_leaves_the_lookback() -> None:
    sample = LagSample(END + 120_000, END - 1)
    held = readiness(END, END + 200_000, [sample], POLICY)
    assert (held.final, held.retry_at_ms) == (False, END + 120_000 + 60_000 + 120_000)
    assert readiness(END, held.retry_at_ms, [sample], POLICY).final


def test_reports_of_records_from_after_the_end_do_not_hold_it() -> None:
    assert readiness(END, END + 200_000, [LagSample(END + 120_000, END)], POLICY).final


def test_the_minute_holding_the_start_of_the_lookback_still_counts() -> None:
    # a report stored for minute END+60 s may have been taken at END+119 s: within 120 s of END+239 s
    assert not readiness(END, END + 239_000, [LagSample(END + 60_000, END - 1)], POLICY).final
    assert readiness(END, END + 240_000, [LagSample(END + 60_000, END - 1)], POLICY).final


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(-600_000, 600_000)), max_size=8),
       st.integers(0, 1_800_000))
def test_final_only_when_no_report_in_the_lookback_names_an_earlier_record(raw: list[tuple[int, int]],
                                                                           after: int) -> None:
    samples = [LagSample(END + minute * 60_000, END + arrival) for minute, arrival in raw]
    now = END + after
    ready = readiness(END, now, samples, POLICY)
    blocking = [s for s in samples if s.minute_ms + 60_000 > now - POLICY.lookback_ms and s.oldest_arrival_ms < END]
    assert ready.final == (now >= END + POLICY.settle_ms and not blocking)
    if not ready.final:
        assert ready.retry_at_ms > now or now < END + POLICY.settle_ms
