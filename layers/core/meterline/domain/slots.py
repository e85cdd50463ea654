"""UTC time slots of the counters: minutes (raw rows), then quarter-hours, hours and days (slot levels),
and *zone days*: days that start at a fixed time of the UTC day, for time zones off UTC.

Quarter-hours are the finest slot: every UTC offset in the IANA database is a multiple of 15 minutes
(+05:30 Kolkata, +05:45 Kathmandu), so every HOUR, DAY or MONTH window of any time zone is a whole
number of UTC quarter-hours and composes exactly from quarter, hour and day slots. Hours exist so that
"today so far" reads hours, and so that a zone day folds from 23 or 24 slots.

A local day of a zone off UTC never contains a UTC day: Kolkata's starts at 18:30 UTC, New York's at
05:00 or 04:00 UTC. Read from UTC slots it costs 23 hours and 4 quarters (24 hours in a whole-hour zone).
A zone day level (`ZoneDays`, one per *phase*: the time of the UTC day at which its days start) holds
each such day as one slot, folded by the compactor from those hours and quarters once they are complete.
Zone days are built only for the phases that DAY queries ask for (see services/compaction.py).

A level's slots live in one partition per period, numbered by their offset in it: quarters per UTC hour,
hours per UTC day, days per UTC month, zone days per UTC month of the UTC day they start in. So folding an
hour (a day) reads exactly one partition of the level below, and a query of one day reads one partition of
hours.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import IntEnum

from meterline.domain.timeutil import DAY_MS, HOUR_MS, MINUTE_MS, QUARTER_MS, ceil_to, floor_to


def month_start(day_ms: int) -> int:
    moment = datetime.fromtimestamp(day_ms / 1000, UTC)
    return int(datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp() * 1000)


def next_month_start(day_ms: int) -> int:
    moment = datetime.fromtimestamp(month_start(day_ms) / 1000, UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)


class Resolution(IntEnum):
    """A UTC time slot length, its value in milliseconds: minutes (raw rows) and the slot levels. Also
    how its slots are partitioned: `key` names the level in keys, `period_ms` is the length of a
    partition (0: a UTC month), `width` the digits of a slot's index in its partition."""

    MINUTE = MINUTE_MS
    QUARTER = QUARTER_MS  # every IANA UTC offset is a multiple of 15 minutes
    HOUR = HOUR_MS
    DAY = DAY_MS

    @property
    def length_ms(self) -> int:
        return int(self)

    @property
    def key(self) -> str:
        return self.name[0].lower()

    @property
    def period_ms(self) -> int:
        return _PERIOD_MS[self]

    @property
    def width(self) -> int:
        return 1 if self is Resolution.QUARTER else 2

    def period(self, start_ms: int) -> int:
        """The start of the partition period holding the slot that starts at start_ms."""
        return floor_to(start_ms, self.period_ms) if self.period_ms else month_start(start_ms)

    def index(self, start_ms: int) -> int:
        return (start_ms - self.period(start_ms)) // self.length_ms

    def start(self, period_ms: int, index: int) -> int:
        return period_ms + index * self.length_ms


_PERIOD_MS = {Resolution.MINUTE: QUARTER_MS, Resolution.QUARTER: HOUR_MS, Resolution.HOUR: DAY_MS, Resolution.DAY: 0}
# The slot levels: quarters 0-3 in a UTC hour, hours 0-23 in a UTC day, days 0-30 in a UTC month.
QUARTER, HOUR, DAY = Resolution.QUARTER, Resolution.HOUR, Resolution.DAY
LEVELS = (QUARTER, HOUR, DAY)  # finest first; each folds from the one before it


@dataclass(frozen=True)
class ZoneDays:
    """The level of 24-hour days that start `phase_ms` after UTC midnight (a multiple of 15 minutes,
    0 < phase < 24 h): Asia/Kolkata's days (+05:30) have phase 18:30, Asia/Kathmandu's (+05:45) 18:15,
    New York's 05:00 in winter and 04:00 in summer. Partitioned like days: per UTC month of the UTC day
    a zone day starts in, indexed by that day."""

    phase_ms: int

    def __post_init__(self) -> None:
        if not 0 < self.phase_ms < DAY_MS or self.phase_ms % QUARTER_MS:
            raise ValueError(f"a zone day phase must be a multiple of 15 minutes inside a day, not {self.phase_ms}")

    @property
    def length_ms(self) -> int:
        return DAY_MS

    @property
    def key(self) -> str:
        return f"z{self.phase_ms // MINUTE_MS}"

    @property
    def width(self) -> int:
        return 2

    @property
    def name(self) -> str:
        return f"ZONE_DAY_{self.phase_ms // MINUTE_MS}"

    def period(self, start_ms: int) -> int:
        return month_start(start_ms - self.phase_ms)

    def index(self, start_ms: int) -> int:
        return (start_ms - self.phase_ms - self.period(start_ms)) // DAY_MS

    def start(self, period_ms: int, index: int) -> int:
        return period_ms + index * DAY_MS + self.phase_ms

    def containing(self, ms: int) -> int:
        """The start of the zone day holding the instant `ms`."""
        return ms - (ms - self.phase_ms) % DAY_MS

    def needs_quarters(self) -> bool:
        """Whether its days fold quarter slots too (a phase off the whole hour), which may be kept
        shorter than hours (METERLINE_QUARTER_RETENTION_DAYS)."""
        return self.phase_ms % HOUR_MS != 0


SlotLevel = Resolution | ZoneDays


def phase_of(start_ms: int) -> int:
    """The time of the UTC day at which a day starting at start_ms starts (0 for UTC days)."""
    return start_ms % DAY_MS


def lower_parts(level: SlotLevel, start_ms: int) -> list[tuple[Resolution, int, int, int]]:
    """The slots one level down that a slot folds from, as (level, partition period, first index, last
    index), one entry per partition: an hour's 4 quarters, a day's 24 hours, and for a zone day the hours
    (and, off the whole hour, the quarters) it covers in the UTC days it straddles, in time order."""
    if level is HOUR:
        return [(QUARTER, start_ms, 0, 3)]
    if level is DAY:
        return [(HOUR, start_ms, 0, 23)]
    if not isinstance(level, ZoneDays):
        raise ValueError(f"{level.name} slots are not folded from slots")
    end = start_ms + DAY_MS
    first_hour, last_hour = ceil_to(start_ms, HOUR_MS), floor_to(end, HOUR_MS)
    parts: list[tuple[Resolution, int, int, int]] = []
    if start_ms < first_hour:
        parts.append((QUARTER, floor_to(start_ms, HOUR_MS), QUARTER.index(start_ms), 3))
    hour = first_hour
    while hour < last_hour:
        day = floor_to(hour, DAY_MS)
        stop = min(last_hour, day + DAY_MS)
        parts.append((HOUR, day, HOUR.index(hour), HOUR.index(stop - HOUR_MS)))
        hour = stop
    if last_hour < end:
        parts.append((QUARTER, last_hour, 0, QUARTER.index(end - QUARTER_MS)))
    return parts


@dataclass
class ZoneRange:
    """The zone days of one phase the compactor keeps: complete for the days starting in
    [from_ms, through_ms); `requested_ms`: when a query last asked for the phase; `created_ms`: when the
    compactor started keeping them (a phase dropped and requested again is a new range)."""

    from_ms: int
    through_ms: int
    requested_ms: int
    created_ms: int

    def holds(self, start_ms: int) -> bool:
        return self.from_ms <= start_ms and start_ms + DAY_MS <= self.through_ms


@dataclass
class Horizons:
    """How far the compactor has folded: quarter, hour and day slots are complete below `quarter`, `hour`
    and `day`, and the late lists of processing quarters before `late_through` are folded in; zone days
    by phase (ms after UTC midnight) as `zones` says.

    `settled`: the horizons as they were at least SETTLE_MS ago (None until the compactor has kept them
    that long); `snapshot`: (when, horizons) the compactor took last, to be settled in turn. A reader may
    read a slot eventually consistently when `settled` already covers it (see query_plan.settled)."""

    quarter: int
    hour: int
    day: int
    late_through: int
    zones: dict[int, ZoneRange] = field(default_factory=dict)
    settled: Horizons | None = None
    snapshot: tuple[int, Horizons] | None = None
    # Slots of periods from here on are written in bundles only (quarters, folded days' hours): the quarter
    # horizon when the compactor first ran with bundles. Before it, a period without bundles may have
    # per-subject items of the layout before them. BUNDLED_FROM_UNKNOWN until the compactor has noted it.
    bundled_from: int = 0

    def hours_bundled(self, level: SlotLevel, period_ms: int) -> bool:
        """Whether a slot partition is a folded day's hours, read from (and written to) the day's bundles:
        they are written before the day horizon passes the day."""
        return level is HOUR and period_ms + DAY_MS <= self.day

    def before_bundles(self, period_ms: int) -> bool:
        """Whether a period may have per-subject slot items from before bundles (`bundled_from`)."""
        return period_ms < self.bundled_from

    def named(self) -> dict[str, int]:
        """By the names the compaction item and the compactor's logs use."""
        return {name: getattr(self, field) for field, name in HORIZON_NAMES.items()}

    def plain(self) -> Horizons:
        """What a snapshot keeps: a copy without `settled` and `snapshot`, and without when zone days were
        last requested."""
        return Horizons(self.quarter, self.hour, self.day, self.late_through,
                        {phase: replace(zone, requested_ms=0) for phase, zone in self.zones.items()})


BUNDLED_FROM_UNKNOWN = 1 << 62
HORIZON_NAMES = {"quarter": "quarterHorizon", "hour": "hourHorizon", "day": "dayHorizon",
                 "late_through": "lateThrough"}
# How long a slot must have stayed unwritten before a reader may read it eventually consistently. DynamoDB's
# eventually consistent reads usually reflect a write within a second; five minutes leaves a wide margin.
SETTLE_MS = 5 * MINUTE_MS
# Zone days are kept 62 days after their day (or the event retention, if shorter): "this month", "last
# month" and "the last 30 days" read them; older local days are read from hours and quarters again. (Kept as
# long as day slots, a phase would cost about 3% more all-in at 1 event/s, mostly their storage and backups.)
ZONE_DAYS_KEPT_MS = 62 * DAY_MS


def zone_days_kept_from(now_ms: int, kept_ms: int) -> int:
    """The start of the oldest zone day kept `kept_ms` that expires more than an hour after now: the
    oldest one a query may read or the compactor folds again (TTL deletes an item only after its
    `expiresAt`; the hour covers clocks that disagree)."""
    return now_ms + HOUR_MS - DAY_MS - kept_ms

# Zone days of a phase are built while DAY queries ask for it: a request lasts ZONE_REQUEST_MS, and a reader
# renews it when the compactor's copy (`ZoneRange.requested_ms`) is older than ZONE_RENEW_MS.
ZONE_REQUEST_MS = 35 * DAY_MS
ZONE_RENEW_MS = 7 * DAY_MS
