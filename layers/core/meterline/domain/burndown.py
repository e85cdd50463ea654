"""The burn-down engine of metered entitlements: grant balances, usage and overage at a moment.

Pure (no I/O, no clock): usage comes from a callable asked once for every phase, so the caller reads it
through the usage query path in one query. Balances are Decimal.

Time is cut into phases at every point where something changes: a usage-period reset (programmatic
boundaries of the anchor cadence, and manual resets), and a grant starting, ending (expiry, void) or
recurring. At each point, in this order:
1. a reset clamps each grant that held a balance to [minRollover, maxRollover], keeps the carried
   overage (preserveOverage) or forgets it, and restarts the period's usage;
2. a grant that recurs gets its amount back;
3. a grant that is no longer active loses its remainder;
4. a grant that starts gets its amount;
5. at a reset, the kept overage burns from these balances.
Each phase's usage, plus any overage carried so far, then burns through the active grants in order:
lowest priority number first, then earliest expiry, then the earliest created.

The state just before each reset is a checkpoint: the caller may keep one as a snapshot and start a
later computation from it, so the cost of a value does not grow with the number of past periods.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal

from meterline.domain.periods import Interval, add, boundaries, index_of

ZERO = Decimal(0)
NEVER = 2**62  # an end that is never reached

# Usage of each [from, to) window given, in order.
UsageOf = Callable[[list[tuple[int, int]]], list[Decimal]]


@dataclass(frozen=True)
class Recurrence:
    interval: Interval
    anchor_ms: int

    def times(self, after_ms: int, before_ms: int) -> list[int]:
        return boundaries(self.anchor_ms, self.interval, after_ms, before_ms)


@dataclass(frozen=True)
class GrantTerms:
    """What the engine needs of a grant."""

    id: str
    amount: Decimal
    effective_at: int
    priority: int = 1
    expires_at: int = NEVER
    voided_at: int | None = None
    min_rollover: Decimal = ZERO
    max_rollover: Decimal = ZERO
    recurrence: Recurrence | None = None
    created_at: int = 0

    @property
    def ends_at(self) -> int:
        return self.expires_at if self.voided_at is None else min(self.expires_at, self.voided_at)

    def active(self, at_ms: int) -> bool:
        return self.effective_at <= at_ms < self.ends_at

    def recurrences(self, after_ms: int, through_ms: int) -> list[int]:
        """Times in (after, through] at which the grant, active then, gets its amount back."""
        if self.recurrence is None:
            return []
        lo = max(after_ms, self.effective_at)
        hi = min(through_ms + 1, self.ends_at)
        return self.recurrence.times(lo, hi) if hi > lo else []


def burn_order(grants: Sequence[GrantTerms]) -> list[GrantTerms]:
    return sorted(grants, key=lambda g: (g.priority, g.expires_at, g.created_at, g.id))


@dataclass(frozen=True)
class ManualReset:
    at: int
    anchor_ms: int  # the cadence from this reset on (the reset time itself unless the anchor was retained)
    preserve_overage: bool


@dataclass(frozen=True)
class UsagePeriods:
    """A metered entitlement's usage periods: from `measure_usage_from`, periods of `interval` on the
    cadence of `anchor_ms`, each manual reset starting a period and (unless it retained the anchor) a new
    cadence."""

    measure_usage_from: int
    interval: Interval
    anchor_ms: int
    resets: tuple[ManualReset, ...] = ()
    preserve_overage_at_reset: bool = False

    def _segments(self) -> list[tuple[int, int, int]]:
        """(start, end, anchor) of each stretch between manual resets."""
        starts = [(self.measure_usage_from, self.anchor_ms)] + [(r.at, r.anchor_ms) for r in self.resets]
        return [(start, starts[i + 1][0] if i + 1 < len(starts) else NEVER, anchor)
                for i, (start, anchor) in enumerate(starts)]

    def reset_points(self, after_ms: int, through_ms: int) -> dict[int, bool]:
        """The resets in (after, through]: time -> whether overage is preserved."""
        points: dict[int, bool] = {}
        manual = {r.at: r.preserve_overage for r in self.resets}
        for start, end, anchor in self._segments():
            if end <= after_ms or start > through_ms:
                continue
            if start in manual and start > after_ms:
                points[start] = manual[start]
            for boundary in boundaries(anchor, self.interval, max(start, after_ms), min(end, through_ms + 1)):
                points[boundary] = self.preserve_overage_at_reset
        return points

    def period_at(self, at_ms: int) -> tuple[int, int]:
        """The usage period [from, to) holding `at_ms` (the first period for earlier times)."""
        at_ms = max(at_ms, self.measure_usage_from)
        start, end, anchor = next(s for s in reversed(self._segments()) if s[0] <= at_ms)
        k = index_of(anchor, self.interval, at_ms)
        return max(start, add(anchor, self.interval, k)), min(end, add(anchor, self.interval, k + 1))

    @property
    def last_manual_reset(self) -> int | None:
        return self.resets[-1].at if self.resets else None

    @property
    def current_anchor(self) -> int:
        return self.resets[-1].anchor_ms if self.resets else self.anchor_ms


@dataclass
class Balances:
    """The burn-down state at `at`. `reset_due`: a reset at `at` is still to be applied (a checkpoint)."""

    at: int
    balances: dict[str, Decimal] = field(default_factory=dict)
    overage: Decimal = ZERO
    usage: Decimal = ZERO
    reset_due: bool = False

    def copy(self) -> Balances:
        return replace(self, balances=dict(self.balances))


@dataclass
class Segment:
    """A stretch with one set of active grants (OpenMeter's burn-down history segment)."""

    from_ms: int
    to_ms: int
    usage: Decimal
    overage: Decimal
    balance_at_start: Decimal
    grant_balances_at_start: dict[str, Decimal]
    balance_at_end: Decimal
    grant_balances_at_end: dict[str, Decimal]
    grant_usages: dict[str, Decimal]


@dataclass
class BurnDown:
    end: Balances  # the state at the end, balances of grants active then only
    segments: list[Segment]
    checkpoints: list[Balances]  # the state just before each reset passed
    balance_at: dict[int, Decimal]  # the balance at each observed time
    usage: dict[tuple[int, int], Decimal]  # the usage of each phase

    @property
    def balance(self) -> Decimal:
        return sum(self.end.balances.values(), ZERO)


def start_of(periods: UsagePeriods, grants: Sequence[GrantTerms]) -> Balances:
    """The state at measureUsageFrom, before anything happens at that minute: grants that started
    earlier hold their amount."""
    at = periods.measure_usage_from
    return Balances(at, {g.id: g.amount for g in grants if g.effective_at < at and g.active(at)})


def burn_down(periods: UsagePeriods, grants: Sequence[GrantTerms], start: Balances, to_ms: int,
              usage_of: UsageOf, observe: Sequence[int] = (), cut: Sequence[int] = ()) -> BurnDown:
    """Run from `start` through `to_ms`. `observe`: times whose balance to report (they split phases but
    not history segments); `cut`: times that also start a segment (a history's `from`)."""
    # a checkpoint's own reset is still to apply (as a manual reset, if one was made at that time since)
    resets = periods.reset_points(start.at - 1 if start.reset_due else start.at, to_ms)
    if start.reset_due:
        resets.setdefault(start.at, periods.preserve_overage_at_reset)
    changes = {start.at, *resets, *(t for t in cut if start.at < t <= to_ms)}
    for g in grants:
        changes.update(t for t in (g.effective_at, g.ends_at) if start.at < t <= to_ms)
        changes.update(g.recurrences(start.at, to_ms))
    observed = {t for t in observe if start.at <= t <= to_ms}
    points = sorted(changes | observed)
    phases = [(p, points[i + 1] if i + 1 < len(points) else to_ms) for i, p in enumerate(points)]
    wanted = [(a, b) for a, b in phases if b > a]
    usage = dict(zip(wanted, usage_of(wanted), strict=True)) if wanted else {}

    order = burn_order(grants)
    state = start.copy()
    state.reset_due = False
    known = {g.id for g in grants}
    state.balances = {gid: value for gid, value in state.balances.items() if gid in known}
    segments: list[Segment] = []
    checkpoints: list[Balances] = []
    balance_at: dict[int, Decimal] = {}
    for phase_start, phase_end in phases:
        if phase_start in resets:
            checkpoints.append(replace(state.copy(), at=phase_start, reset_due=True))
            _reset(state, order, phase_start, resets[phase_start])
        for g in grants:
            if not g.active(phase_start):
                if state.balances.get(g.id):
                    state.balances[g.id] = ZERO
            elif g.effective_at == phase_start or phase_start in g.recurrences(phase_start - 1, phase_start):
                state.balances[g.id] = g.amount
        active = [g for g in order if g.active(phase_start)]
        if phase_start in resets and state.overage:
            _burn(state, active, state.overage)  # kept overage, from the balances the new period starts with
        at_start = {g.id: state.balances.get(g.id, ZERO) for g in active}
        if phase_start in observed:
            balance_at[phase_start] = sum(at_start.values(), ZERO)
        used = usage.get((phase_start, phase_end), ZERO)
        burnt = _burn(state, active, used + state.overage)
        state.usage += used
        if phase_start in changes or not segments:
            segments.append(Segment(phase_start, phase_end, used, state.overage, sum(at_start.values(), ZERO),
                                    at_start, ZERO, {}, burnt))
        else:  # an observed time inside a segment: extend it
            last = segments[-1]
            last.to_ms, last.usage, last.overage = phase_end, last.usage + used, state.overage
            for gid, amount in burnt.items():
                last.grant_usages[gid] = last.grant_usages.get(gid, ZERO) + amount
        at_end = {g.id: state.balances.get(g.id, ZERO) for g in active}
        segments[-1].grant_balances_at_end, segments[-1].balance_at_end = at_end, sum(at_end.values(), ZERO)
    state.at = to_ms
    state.balances = {g.id: state.balances.get(g.id, ZERO) for g in grants if g.active(to_ms)}
    return BurnDown(state, [s for s in segments if s.to_ms > s.from_ms], checkpoints, balance_at, usage)


def _burn(state: Balances, active: Sequence[GrantTerms], amount: Decimal) -> dict[str, Decimal]:
    """Burn `amount` through `active` (in burn order); what is left becomes the overage."""
    burnt: dict[str, Decimal] = {}
    remaining = amount
    for g in active:
        if remaining <= 0:
            break
        held = state.balances.get(g.id, ZERO)
        if held <= 0:
            continue
        take = min(held, remaining)
        state.balances[g.id] = held - take
        remaining -= take
        burnt[g.id] = take
    state.overage = remaining
    return burnt


def _reset(state: Balances, order: Sequence[GrantTerms], at_ms: int, preserve_overage: bool) -> None:
    """Roll over the grants that held a balance before the reset. Kept overage stays carried until grants
    starting or recurring at this instant got their amount (burning it before would lose what it took
    from them)."""
    for g in order:
        if g.active(at_ms) and g.effective_at < at_ms:
            held = state.balances.get(g.id, ZERO)
            state.balances[g.id] = min(g.max_rollover, max(g.min_rollover, held))
    if not preserve_overage:
        state.overage = ZERO
    state.usage = ZERO
