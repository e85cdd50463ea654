"""UTC time slots of the counters: minutes (raw rows), then quarter-hours, hours and days (slot levels).

Quarter-hours are the finest slot: every UTC offset in the IANA database is a multiple of 15 minutes
(+05:30 Kolkata, +05:45 Kathmandu), so every HOUR, DAY or MONTH window of any time zone is a whole
number of UTC quarter-hours and composes exactly from quarter, hour and day slots. Hours exist so that
a day of a zone that is not on a whole-hour offset (Kolkata's day starts at 18:30 UTC) reads 23 hours
and 4 quarters instead of 96 quarters, and so that "today so far" reads hours.

A level's slots live in one partition per period, numbered by their offset in it: quarters per UTC hour,
hours per UTC day, days per UTC month. So folding an hour (a day) reads exactly one partition of the
level below, and a query of one day reads one partition of hours.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum

from meterline.domain.timeutil import DAY_MS, HOUR_MS, MINUTE_MS, QUARTER_MS, floor_to


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


@dataclass
class Horizons:
    """How far the compactor has folded: quarter, hour and day slots are complete below `quarter`, `hour`
    and `day`, and the late lists of processing quarters before `late_through` are folded in."""

    quarter: int
    hour: int
    day: int
    late_through: int

    def named(self) -> dict[str, int]:
        """By the names the compaction item and the compactor's logs use."""
        return {name: getattr(self, field) for field, name in HORIZON_NAMES.items()}


HORIZON_NAMES = {"quarter": "quarterHorizon", "hour": "hourHorizon", "day": "dayHorizon",
                 "late_through": "lateThrough"}
