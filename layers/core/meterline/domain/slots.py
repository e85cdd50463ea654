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

from meterline.domain.timeutil import DAY_MS, HOUR_MS, QUARTER_MS, floor_to


def month_start(day_ms: int) -> int:
    moment = datetime.fromtimestamp(day_ms / 1000, UTC)
    return int(datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp() * 1000)


def next_month_start(day_ms: int) -> int:
    moment = datetime.fromtimestamp(month_start(day_ms) / 1000, UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)


@dataclass(frozen=True)
class Level:
    """One slot level: `name` is its key letter, `length_ms` a slot's length, `period_ms` the length of
    its partitions (0: a UTC month), `width` the digits of a slot's index in its partition."""

    name: str
    length_ms: int
    period_ms: int
    width: int

    def period(self, start_ms: int) -> int:
        """The start of the partition period holding the slot that starts at start_ms."""
        return floor_to(start_ms, self.period_ms) if self.period_ms else month_start(start_ms)

    def index(self, start_ms: int) -> int:
        return (start_ms - self.period(start_ms)) // self.length_ms

    def start(self, period_ms: int, index: int) -> int:
        return period_ms + index * self.length_ms


QUARTER = Level("q", QUARTER_MS, HOUR_MS, width=1)  # 0-3 in a UTC hour
HOUR = Level("h", HOUR_MS, DAY_MS, width=2)  # 0-23 in a UTC day
DAY = Level("d", DAY_MS, 0, width=2)  # 0-30 in a UTC month
LEVELS = (QUARTER, HOUR, DAY)  # finest first; each folds from the one before it


