"""Usage export reports: what a user declares (OpenMeter's report body), how its windows are laid out in
time (WindowGrid), and which usage rows its filters keep."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from meterline.domain.meters import MAX_SLUG_LENGTH, SLUG_PATTERN, ULID_PATTERN, Meter
from meterline.domain.processing_lag import Completeness
from meterline.domain.timeutil import MINUTE_MS, format_ms, parse_rfc3339, to_epoch_ms
from meterline.domain.validation import field_errors
from meterline.domain.windows import resolve_time_zone
from meterline.errors import FieldError, InvalidInput

SUBJECT = "subject"
_INTERVAL = re.compile(r"^([1-9][0-9]{0,4})([mhd])$")
_UNIT_MS = {"m": MINUTE_MS, "h": 60 * MINUTE_MS, "d": 1440 * MINUTE_MS}
_UNIT_NAME = {"m": "minute", "h": "hour", "d": "day"}
MAX_INTERVAL_MS = 31 * _UNIT_MS["d"]
# Header names the sender sets itself (or http.client manages): an endpoint's headers cannot replace them,
# nor any webhook-* header (Standard Webhooks' namespace).
RESERVED_HEADERS = frozenset({"content-type", "content-length", "host", "user-agent", "connection",
                              "transfer-encoding"})


def is_reserved_header(name: str) -> bool:
    lowered = name.lower()
    return lowered in RESERVED_HEADERS or lowered.startswith("webhook-")

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")
MAX_HEADERS = 20
MAX_URL_LENGTH = 2048

NUMBER_OPERATORS = ("$gt", "$gte", "$lt", "$lte", "$eq", "$ne")
LIST_OPERATORS = ("$in", "$nin")
OPERATORS = NUMBER_OPERATORS + LIST_OPERATORS
MAX_FILTER_VALUES = 1000


def interval_ms(interval: str) -> int:
    """"15m" -> 900000; ValueError with a reason otherwise."""
    match = _INTERVAL.match(interval) if isinstance(interval, str) else None
    if match is None:
        raise ValueError("must be a whole number of minutes, hours or days, such as 1m, 15m, 1h or 1d")
    length = int(match.group(1)) * _UNIT_MS[match.group(2)]
    if length > MAX_INTERVAL_MS:
        raise ValueError("must be at most 31 days")
    return length


def rate_expression(interval: str) -> str:
    """EventBridge Scheduler's rate expression for an interval: "15m" -> "rate(15 minutes)"."""
    interval_ms(interval)
    count, unit = int(interval[:-1]), _UNIT_NAME[interval[-1]]
    return f"rate({count} {unit}{'' if count == 1 else 's'})"


def _operator_filter(raw: Any, *, kind: type, what: str) -> dict[str, Any]:
    """A {"$op": operand} mapping: scalar operands for comparisons, lists for $in/$nin."""
    if not isinstance(raw, Mapping) or not raw:
        raise ValueError(f"must be a JSON object of operators ({', '.join(OPERATORS)})")
    out: dict[str, Any] = {}
    for op, operand in raw.items():
        if op not in OPERATORS:
            raise ValueError(f"has unknown operator {op!r}; use one of {', '.join(OPERATORS)}")
        values = operand if op in LIST_OPERATORS else [operand]
        if op in LIST_OPERATORS and (not isinstance(operand, list) or len(operand) > MAX_FILTER_VALUES):
            raise ValueError(f"{op} takes a list of at most {MAX_FILTER_VALUES} {what}s")
        for value in values:
            ok = isinstance(value, kind) and not isinstance(value, bool)
            if kind is float:
                ok = isinstance(value, int | float) and not isinstance(value, bool) and value == value \
                    and value not in (float("inf"), float("-inf"))
            if not ok:
                raise ValueError(f"{op} takes {'a list of ' if op in LIST_OPERATORS else ''}{what}s, not {value!r}")
        out[op] = list(operand) if op in LIST_OPERATORS else operand
    return out


def matches(conditions: Mapping[str, Any] | None, value: Any) -> bool:
    """Whether `value` passes every operator of a filter (no filter passes everything)."""
    if not conditions:
        return True
    for op, operand in conditions.items():
        if op == "$in":
            ok = value in operand
        elif op == "$nin":
            ok = value not in operand
        elif op == "$eq":
            ok = value == operand
        elif op == "$ne":
            ok = value != operand
        elif value is None:
            ok = False
        elif op == "$gt":
            ok = value > operand
        elif op == "$gte":
            ok = value >= operand
        elif op == "$lt":
            ok = value < operand
        else:  # $lte
            ok = value <= operand
        if not ok:
            return False
    return True


class _Strict(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")


class Schedule(_Strict):
    interval: str
    start_at: str = Field(alias="startAt")

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: str) -> str:
        interval_ms(value)
        return value

    @field_validator("start_at", mode="before")
    @classmethod
    def _start_at(cls, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError("must be an RFC 3339 date-time string")
        return format_ms(to_epoch_ms(parse_rfc3339(value)))

    @property
    def interval_ms(self) -> int:
        return interval_ms(self.interval)

    @property
    def start_ms(self) -> int:
        return to_epoch_ms(parse_rfc3339(self.start_at))


class ReportQuery(_Strict):
    group_by: list[str] = Field(default_factory=list, alias="groupBy", max_length=20)
    window_time_zone: str = Field(default="UTC", alias="windowTimeZone")

    @field_validator("window_time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        resolve_time_zone(value)
        return value

    @field_validator("group_by")
    @classmethod
    def _group_by(cls, keys: list[str]) -> list[str]:
        if len(set(keys)) != len(keys):
            raise ValueError("must not repeat a key")
        return keys


# What GET shows, and a PUT may send back, in place of a header's value (receivers' credentials).
REDACTED = "<redacted>"


class Endpoint(_Strict):
    url: str = Field(min_length=1, max_length=MAX_URL_LENGTH)
    headers: dict[str, str] = Field(default_factory=dict)

    def redacted(self) -> Endpoint:
        return self.model_copy(update={"headers": dict.fromkeys(self.headers, REDACTED)})

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, str]) -> dict[str, str]:
        if len(headers) > MAX_HEADERS:
            raise ValueError(f"must have at most {MAX_HEADERS} headers")
        for name, value in headers.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if is_reserved_header(name):
                raise ValueError(f"{name!r} is set by Meterline and cannot be configured")
            if len(value) > 1024 or any(ch in value for ch in "\r\n\0") or not value.isascii():
                raise ValueError(f"the value of {name!r} must be one line of at most 1024 ASCII characters")
        return headers


class ReportFilter(_Strict):
    usage: dict[str, Any] | None = None
    subject: dict[str, Any] | None = None

    @field_validator("usage", mode="before")
    @classmethod
    def _usage(cls, raw: Any) -> dict[str, Any] | None:
        return None if raw is None else _operator_filter(raw, kind=float, what="number")

    @field_validator("subject", mode="before")
    @classmethod
    def _subject(cls, raw: Any) -> dict[str, Any] | None:
        return None if raw is None else _operator_filter(raw, kind=str, what="string")


class Report(_Strict):
    """A report as a user declares it, plus the read-only fields Meterline sets (id, timestamps)."""

    slug: str = Field(pattern=SLUG_PATTERN, max_length=MAX_SLUG_LENGTH)
    meter_id_or_slug: str = Field(alias="meterIdOrSlug", min_length=1, max_length=MAX_SLUG_LENGTH)
    type: Literal["webhook"] = "webhook"
    schedule: Schedule
    query: ReportQuery = Field(default_factory=ReportQuery)
    endpoint: Endpoint
    filter: ReportFilter = Field(default_factory=ReportFilter)
    id: str | None = Field(default=None, pattern=ULID_PATTERN.pattern)
    created_at: str | None = Field(default=None, alias="createdAt")
    updated_at: str | None = Field(default=None, alias="updatedAt")

    def to_api(self) -> dict[str, Any]:
        """As the API shows it (and as it is stored): endpoint header values redacted (they are kept
        encrypted beside the report, meterline.services.reports)."""
        return self.model_copy(update={"endpoint": self.endpoint.redacted()}).model_dump(
            by_alias=True, exclude_none=True, mode="json")

    @property
    def created_ms(self) -> int:
        return to_epoch_ms(parse_rfc3339(self.created_at)) if self.created_at else 0


READ_ONLY_FIELDS = ("id", "createdAt", "updatedAt", "signingSecret")
_ALIASES = {name: info.alias or name for model in (Report, Schedule, ReportQuery, Endpoint, ReportFilter)
            for name, info in model.model_fields.items()}


def report_definition(raw: Any, *, slug: str | None = None) -> Report:
    """A report from a request body; InvalidInput naming every offending field. For a PUT, `slug` is the
    report's own: the body may repeat it but not change it."""
    if not isinstance(raw, Mapping):
        raise InvalidInput("the body must be a JSON object (a report)", [FieldError("report", "must be a JSON object")])
    errors = [FieldError(key, "is read-only; Meterline sets it") for key in READ_ONLY_FIELDS if key in raw]
    body = {key: value for key, value in raw.items() if key not in READ_ONLY_FIELDS}
    if slug is not None and body.setdefault("slug", slug) != slug:
        errors.append(FieldError("slug", "cannot be changed"))
        body["slug"] = slug
    try:
        report = Report.model_validate(body, by_alias=True, by_name=False)
    except ValidationError as exc:
        errors += field_errors(exc, aliases=_ALIASES, what="a report", root="report")
        report = None
    if errors or report is None:
        raise InvalidInput("invalid report: " + "; ".join(f"{e.field} {e.reason}" for e in errors), errors)
    return report


def check_against_meter(report: Report, meter: Meter) -> None:
    """The report's groupBy keys must be the meter's (or "subject", which every export groups by)."""
    unknown = [key for key in report.query.group_by if key != SUBJECT and key not in meter.group_by]
    if unknown:
        known = ", ".join(sorted(meter.group_by)) or "none"
        raise InvalidInput(f"meter {meter.slug!r} has no groupBy key {', '.join(map(repr, unknown))}",
                           [FieldError("query.groupBy", f"{key!r} is not a groupBy key of meter {meter.slug!r} "
                                                        f"(it has: {known})") for key in unknown])


# --- windows -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    start_ms: int
    end_ms: int

    @property
    def start(self) -> str:
        return format_ms(self.start_ms)

    @property
    def end(self) -> str:
        return format_ms(self.end_ms)


@dataclass(frozen=True)
class WindowGrid:
    """Where a report's windows lie. Window k starts `k` intervals after `startAt`: fixed durations for
    minute and hour intervals (and in UTC); for whole-day intervals in another `windowTimeZone`, calendar
    days in that zone at `startAt`'s wall-clock time, so a New York "1d" window stays midnight to midnight
    and is 23 or 25 hours long across DST."""

    start_ms: int
    interval: str
    zone: ZoneInfo | None = None  # calendar days in this zone

    @property
    def length_ms(self) -> int:
        return interval_ms(self.interval)

    @classmethod
    def of(cls, report: Report) -> WindowGrid:
        schedule = report.schedule
        calendar = schedule.interval.endswith("d") and report.query.window_time_zone != "UTC"
        return cls(schedule.start_ms, schedule.interval,
                   resolve_time_zone(report.query.window_time_zone) if calendar else None)

    def window(self, index: int) -> Window:
        if self.zone is None:
            start = self.start_ms + index * self.length_ms
            return Window(start, start + self.length_ms)
        return Window(self._calendar_ms(index), self._calendar_ms(index + 1))

    def _calendar_ms(self, index: int) -> int:
        first = datetime.fromtimestamp(self.start_ms / 1000, self.zone)
        # Aware datetime + timedelta moves the wall clock; the UTC offset is that of the new date.
        return round((first + timedelta(milliseconds=index * self.length_ms)).timestamp() * 1000)

    def index_at(self, t_ms: int) -> int:
        """The window containing `t_ms` (negative before `startAt`)."""
        index = (t_ms - self.start_ms) // self.length_ms
        while self.window(index).start_ms > t_ms:
            index -= 1
        while self.window(index).end_ms <= t_ms:
            index += 1
        return index

    def next_boundary_ms(self, now_ms: int) -> int:
        """The first window end after `now_ms` (where a schedule starting now should first fire)."""
        return self.window(max(0, self.index_at(now_ms))).end_ms

    @property
    def schedule_expression(self) -> str:
        """Fixed windows: a rate of the interval, which keeps firing on window ends. Calendar days: hourly
        (window ends move with DST by whole hours, so an hourly rate started on one keeps hitting them; the
        exporter exports a window only once it has closed)."""
        return "rate(1 hour)" if self.zone is not None else rate_expression(self.interval)


def closed_windows(grid: WindowGrid, now_ms: int, *, created_ms: int, last_start_ms: int | None,
                   bound: int) -> list[Window]:
    """The windows a scheduled invocation at `now_ms` exports, oldest first: every window that has closed
    since the last one exported (`last_start_ms`), or since the report was created, looking back at most
    `bound` windows. Windows that ended before the report existed are left to manual runs."""
    last_closed = grid.index_at(now_ms) - 1
    if last_closed < 0:
        return []
    first = max(0, grid.index_at(created_ms), last_closed - bound + 1)
    if last_start_ms is not None:
        first = max(first, grid.index_at(last_start_ms) + 1)
    return [grid.window(k) for k in range(first, last_closed + 1)]


# --- payload --------------------------------------------------------------------------------------------


def group_keys(report: Report) -> list[str]:
    return [key for key in report.query.group_by if key != SUBJECT]


def filtered_usage(report: Report, rows: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Usage rows of one window (grouped by subject and the report's keys) per subject, after the report's
    subject and usage filters; subjects left without rows get no webhook."""
    by_subject: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        subject, value = row["subject"], row["value"]
        if not matches(report.filter.subject, subject) or not matches(report.filter.usage, value):
            continue
        by_subject.setdefault(subject, []).append({
            "subject": subject,
            "value": value,
            "groupBy": row["groupBy"],
            "windowStart": row["windowStart"],
            "windowEnd": row["windowEnd"],
        })
    return by_subject


def webhook_payload(report: Report, meter: Meter, window: Window, subject: str,
                    usage: list[dict[str, Any]], completeness: Completeness) -> dict[str, Any]:
    """One subject's webhook body, in the shape of OpenMeter's usage syncs; `completeness` says whether the
    stream processor was past the window's end (final) or the export stopped waiting for it (provisional)."""
    return {
        "report": {"slug": report.slug},
        "completeness": completeness.value,
        "usage": usage,
        "query": {"from": window.start, "to": window.end, "subject": subject, "groupBy": group_keys(report)},
        "meter": {key: value for key, value in {
            "id": meter.id,
            "slug": meter.slug,
            "description": meter.description,
            "aggregation": meter.aggregation.value,
            "eventType": meter.event_type,
            "valueProperty": meter.value_property,
            "groupBy": meter.group_by,
        }.items() if value is not None},
    }
