"""Calendar arithmetic for entitlements, in UTC: usage periods, grant expirations and recurrences.

Months and years are calendar steps that keep the time of day and clamp the day to the month's last
day: from a Jan 31 anchor the monthly boundaries are Feb 28 (29 in a leap year), Mar 31, Apr 30, ...
The k-th boundary is always computed from the anchor, never from the previous boundary, so a short
month does not pull later boundaries earlier. Hours, days and weeks are fixed lengths (UTC has no DST).
"""

from __future__ import annotations

import calendar
from enum import StrEnum

from meterline.domain.timeutil import DAY_MS, HOUR_MS, MINUTE_MS, from_epoch_ms, to_epoch_ms


class Interval(StrEnum):
    HOUR = "HOUR"
    DAY = "DAY"
    WEEK = "WEEK"
    MONTH = "MONTH"
    YEAR = "YEAR"

    @property
    def iso(self) -> str:
        """The ISO 8601 duration of one interval (OpenMeter's `intervalISO`)."""
        return _ISO[self]


_ISO = {Interval.HOUR: "PT1H", Interval.DAY: "P1D", Interval.WEEK: "P1W", Interval.MONTH: "P1M",
        Interval.YEAR: "P1Y"}
_FIXED_MS = {Interval.HOUR: HOUR_MS, Interval.DAY: DAY_MS, Interval.WEEK: 7 * DAY_MS}
_MONTHS = {Interval.MONTH: 1, Interval.YEAR: 12}


def floor_minute(ms: int) -> int:
    return ms - ms % MINUTE_MS


def ceil_minute(ms: int) -> int:
    return ms + (-ms) % MINUTE_MS


def add(ms: int, interval: Interval, count: int = 1) -> int:
    """`ms` plus `count` intervals (count may be negative), months clamped to the month's last day."""
    if interval in _FIXED_MS:
        return ms + count * _FIXED_MS[interval]
    moment = from_epoch_ms(ms)
    months = moment.month - 1 + count * _MONTHS[interval]
    year, month = moment.year + months // 12, months % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return to_epoch_ms(moment.replace(year=year, month=month, day=day))


def index_of(anchor_ms: int, interval: Interval, ms: int) -> int:
    """The k of the interval [add(anchor, k), add(anchor, k + 1)) that holds `ms` (k < 0 before the anchor)."""
    if interval in _FIXED_MS:
        return (ms - anchor_ms) // _FIXED_MS[interval]
    a, m = from_epoch_ms(anchor_ms), from_epoch_ms(ms)
    k = ((m.year - a.year) * 12 + m.month - a.month) // _MONTHS[interval]
    while add(anchor_ms, interval, k) > ms:
        k -= 1
    while add(anchor_ms, interval, k + 1) <= ms:
        k += 1
    return k


def boundaries(anchor_ms: int, interval: Interval, after_ms: int, before_ms: int) -> list[int]:
    """The boundaries add(anchor, k) with after_ms < boundary < before_ms, in order."""
    k = index_of(anchor_ms, interval, after_ms) + 1
    found = []
    while (boundary := add(anchor_ms, interval, k)) < before_ms:
        found.append(boundary)
        k += 1
    return found
