"""RFC 3339 parsing and formatting at millisecond precision, always in UTC."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

# Lengths of time, in the units Meterline stores: milliseconds (event times, windows) and seconds (TTLs).
MINUTE_MS = 60_000
QUARTER_MS = 15 * MINUTE_MS
HOUR_MS = 4 * QUARTER_MS
DAY_MS = 24 * HOUR_MS
DAY_S = DAY_MS // 1000


def floor_to(ms: int, step: int) -> int:
    """The start of the UTC-aligned step containing `ms` (a floor, also for negative times)."""
    return ms - ms % step


def ceil_to(ms: int, step: int) -> int:
    """The first UTC-aligned step boundary at or after `ms`."""
    return ms + (-ms) % step

# RFC 3339 date-time (section 5.6); the space separator is the RFC's own allowance.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))\Z"
)


def parse_rfc3339(value: str) -> datetime:
    """Parse an RFC 3339 timestamp into an aware UTC datetime truncated to milliseconds.

    Raises ValueError with a reason a user can act on.
    """
    m = _RFC3339.match(value)
    if m is None:
        raise ValueError("must be an RFC 3339 date-time such as 2024-01-01T00:00:00.001Z")
    year, month, day, hour, minute, second, frac, zulu, sign, off_h, off_m = m.groups()
    micros = int((frac or "0")[:3].ljust(3, "0")) * 1000
    if zulu:
        tz = UTC
    else:
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        if offset >= timedelta(hours=24):
            raise ValueError("has an out-of-range UTC offset")
        tz = timezone(-offset if sign == "-" else offset)
    try:
        parsed = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tz)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"is not a valid date-time ({exc})") from None


def to_epoch_ms(moment: datetime) -> int:
    return (moment - _EPOCH) // _ONE_MS


def from_epoch_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def format_ms(ms: int) -> str:
    """Epoch milliseconds as RFC 3339 UTC with exactly three fractional digits."""
    moment = from_epoch_ms(ms)
    return f"{moment.year:04d}-" + moment.strftime("%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"  # %Y: no zeros


def now_ms() -> int:
    return to_epoch_ms(datetime.now(UTC))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
