"""UTC time slots of the counters: minutes (raw rows), quarter-hours and days.

Quarter-hours rather than hours: every UTC offset in the IANA database is a multiple of 15 minutes
(+05:30 Kolkata, +05:45 Kathmandu), so every HOUR, DAY or MONTH window of any time zone is a whole
number of UTC quarter-hours, and composes exactly from quarter slots and day slots.
"""

from __future__ import annotations

from datetime import UTC, datetime

MINUTE_MS = 60_000
QUARTER_MS = 15 * MINUTE_MS
DAY_MS = 86_400_000


def floor_to(ms: int, step: int) -> int:
    return ms - ms % step


def month_start(day_ms: int) -> int:
    moment = datetime.fromtimestamp(day_ms / 1000, UTC)
    return int(datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp() * 1000)


def next_month_start(day_ms: int) -> int:
    moment = datetime.fromtimestamp(month_start(day_ms) / 1000, UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)


def quarter_index(quarter_ms: int) -> int:
    """Index 0-95 of a quarter within its UTC day."""
    return (quarter_ms % DAY_MS) // QUARTER_MS


def day_of_month(day_ms: int) -> int:
    return datetime.fromtimestamp(day_ms / 1000, UTC).day
