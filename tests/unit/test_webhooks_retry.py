from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterline.webhooks import RetryPolicy

policies = st.builds(
    RetryPolicy,
    max_attempts=st.integers(1, 50),
    base_seconds=st.floats(0.01, 2000, allow_nan=False),
    max_seconds=st.floats(1, 5000, allow_nan=False),
)


@given(policy=policies, attempt=st.integers(1, 10_000), seed=st.integers(0, 2**32))
def test_delay_is_whole_seconds_between_1_and_the_cap(policy: RetryPolicy, attempt: int, seed: int) -> None:
    delay = policy.delay_seconds(attempt, random.Random(seed))
    assert isinstance(delay, int)
    assert 1 <= delay <= max(1, math.floor(min(policy.max_seconds, 900)))


@given(policy=policies, attempt=st.integers(1, 60), seed=st.integers(0, 2**32))
def test_delay_lies_between_half_the_backoff_and_the_backoff(policy: RetryPolicy, attempt: int, seed: int) -> None:
    backoff = min(policy.max_seconds, 900, policy.base_seconds * 2 ** (attempt - 1))
    delay = policy.delay_seconds(attempt, random.Random(seed))
    assert math.ceil(backoff / 2) <= delay <= max(1, math.ceil(backoff))


@given(policy=policies, seeds=st.lists(st.integers(0, 2**32), min_size=40, max_size=40))
def test_delays_grow_until_the_cap(policy: RetryPolicy, seeds: list[int]) -> None:
    cap = min(policy.max_seconds, 900)
    delays = [policy.delay_seconds(attempt, random.Random(seed)) for attempt, seed in enumerate(seeds, start=1)]
    for attempt, (delay, next_delay) in enumerate(zip(delays, delays[1:], strict=False), start=1):
        if policy.base_seconds * 2**attempt <= cap:  # the next backoff is not capped yet
            assert next_delay >= delay
    assert delays[-1] >= math.floor(cap / 2)  # 40 doublings reach any cap


def test_default_schedule() -> None:
    policy = RetryPolicy()
    lowest = [policy.delay_seconds(n, _FixedRandom(0.0)) for n in range(1, 9)]
    highest = [policy.delay_seconds(n, _FixedRandom(1.0)) for n in range(1, 9)]
    assert lowest == [15, 30, 60, 120, 240, 450, 450, 450]
    assert highest == [30, 60, 120, 240, 480, 900, 900, 900]


def test_cap_is_900_seconds_whatever_max_seconds_says() -> None:
    assert RetryPolicy(base_seconds=3600, max_seconds=7200).delay_seconds(1, _FixedRandom(1.0)) == 900


def test_small_base_still_waits_one_second() -> None:
    assert RetryPolicy(base_seconds=0.1).delay_seconds(1, _FixedRandom(0.0)) == 1


def test_gives_up_after_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert [policy.gives_up_after(n) for n in (1, 2, 3, 4)] == [False, False, True, True]


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MAX_ATTEMPTS", "BACKOFF_BASE_SECONDS", "BACKOFF_MAX_SECONDS", "TIMEOUT_SECONDS"):
        monkeypatch.delenv(f"METERLINE_WEBHOOK_{name}", raising=False)
    assert RetryPolicy.from_env() == RetryPolicy()
    monkeypatch.setenv("METERLINE_WEBHOOK_MAX_ATTEMPTS", "5")
    monkeypatch.setenv("METERLINE_WEBHOOK_BACKOFF_BASE_SECONDS", "2.5")
    monkeypatch.setenv("METERLINE_WEBHOOK_BACKOFF_MAX_SECONDS", "600")
    monkeypatch.setenv("METERLINE_WEBHOOK_TIMEOUT_SECONDS", "4")
    assert RetryPolicy.from_env() == RetryPolicy(max_attempts=5, base_seconds=2.5, max_seconds=600, timeout_seconds=4)


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("METERLINE_WEBHOOK_MAX_ATTEMPTS", "0"),
        ("METERLINE_WEBHOOK_MAX_ATTEMPTS", "2.5"),
        ("METERLINE_WEBHOOK_BACKOFF_BASE_SECONDS", "0"),
        ("METERLINE_WEBHOOK_BACKOFF_BASE_SECONDS", "nan"),
        ("METERLINE_WEBHOOK_BACKOFF_MAX_SECONDS", "0.5"),
        ("METERLINE_WEBHOOK_TIMEOUT_SECONDS", "-1"),
        ("METERLINE_WEBHOOK_TIMEOUT_SECONDS", "ten"),
    ],
)
def test_from_env_names_the_invalid_variable(monkeypatch: pytest.MonkeyPatch, name: str, raw: str) -> None:
    monkeypatch.setenv(name, raw)
    with pytest.raises(RuntimeError, match=name):
        RetryPolicy.from_env()


class _FixedRandom(random.Random):
    """uniform(a, b) at a fixed fraction of the way from a to b."""

    def __init__(self, fraction: float) -> None:
        super().__init__(0)
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.fraction
