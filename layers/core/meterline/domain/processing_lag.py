"""How far behind the stream processor is, and whether an export window can be exported as final.

Lambda's stream records carry no shard id, so the processor cannot publish a per-shard position. What
every invocation does know is the arrival time of the oldest record it was handed: a shard that is
behind (failing, throttled downstream, or slow) is handed old records. So an invocation whose oldest
record waited longer than `report_after_ms` reports that arrival time as a lag sample, whether the
invocation then succeeds or fails; an invocation that keeps up reports nothing (no write, no cost).

An export window ending at E is final when nothing that arrived before E can still be unprocessed:
- at least `report_after_ms + lookback_ms` have passed since E, so every invocation of the last
  `lookback_ms` was late enough to report a record that arrived before E as lagging;
- and no lag sample taken in the last `lookback_ms` names a record that arrived before E.
This holds as long as Lambda hands a shard that is behind to the function at least once per
`lookback_ms` (it retries a failing batch with a backoff well below that); a mapping that stops invoking
altogether (disabled, or the function throttled to zero) shows in the IteratorAge alarm instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from meterline.domain.timeutil import MINUTE_MS, floor_to


@dataclass(frozen=True)
class LagSample:
    """A lagging invocation: the minute it ran in, and the arrival time of its oldest record (earliest
    over the invocations of that minute)."""

    minute_ms: int
    oldest_arrival_ms: int


@dataclass(frozen=True)
class LagPolicy:
    report_after_ms: int = 30_000
    lookback_ms: int = 120_000

    @property
    def settle_ms(self) -> int:
        """The least time after a window's end before it can be final."""
        return self.report_after_ms + self.lookback_ms

    def sample(self, oldest_arrival_ms: int, now_ms: int) -> LagSample | None:
        """What an invocation at `now_ms` whose oldest record arrived at `oldest_arrival_ms` reports."""
        if now_ms - oldest_arrival_ms <= self.report_after_ms:
            return None
        return LagSample(floor_to(now_ms, MINUTE_MS), oldest_arrival_ms)

    def samples_since(self, now_ms: int) -> int:
        """The first minute whose samples matter at `now_ms` (whole minutes: a sample's minute is all
        that is stored, so the minute holding now - lookback counts)."""
        return floor_to(now_ms - self.lookback_ms, MINUTE_MS)


class Completeness(StrEnum):
    FINAL = "final"  # processing was past the window's end when it was exported
    PROVISIONAL = "provisional"  # exported while processing might still have been behind


@dataclass(frozen=True)
class Readiness:
    """Whether a window ending at `end_ms` can be exported at `now_ms` as final, and if not, the earliest
    time worth asking again."""

    final: bool
    retry_at_ms: int

    @property
    def completeness(self) -> Completeness:
        return Completeness.FINAL if self.final else Completeness.PROVISIONAL


def readiness(end_ms: int, now_ms: int, samples: Iterable[LagSample], policy: LagPolicy) -> Readiness:
    earliest = end_ms + policy.settle_ms
    if now_ms < earliest:
        return Readiness(final=False, retry_at_ms=earliest)
    since = policy.samples_since(now_ms)
    behind = [s for s in samples if s.minute_ms >= since and s.oldest_arrival_ms < end_ms]
    if not behind:
        return Readiness(final=True, retry_at_ms=now_ms)
    # The latest sample still naming the window keeps it open until it leaves the lookback.
    last = max(s.minute_ms for s in behind)
    return Readiness(final=False, retry_at_ms=last + MINUTE_MS + policy.lookback_ms)
