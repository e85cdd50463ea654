"""A local stand-in for EventBridge Scheduler firing the schedules of one group.

moto stores schedules but never fires them. This thread reads the
group's schedules (ListSchedules, and GetSchedule when a schedule's LastModificationDate changes) and
invokes the function whose ARN is the schedule's Target.Arn with json.loads(Target.Input), as
Scheduler invokes a Lambda target: asynchronously, the input as the event.

Supported expressions: `rate(N minute|minutes|hour|hours|day|days)`, firing at StartDate + k * period
(k >= 0; from the schedule's CreationDate when it has no StartDate) and before EndDate, and
`at(yyyy-mm-ddThh:mm:ss)` in ScheduleExpressionTimezone. Like Scheduler it does not back-fill: only
firing times after the schedule was last modified count, each fires once, and when several fell due
since the last look (a late poll) only the latest fires. DISABLED schedules do not fire; a schedule
with ActionAfterCompletion DELETE is deleted once it has no firing left.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

log = logging.getLogger("dev.scheduler")

Invoke = Callable[[dict[str, Any]], Any]

_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_AT = re.compile(r"^at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)$")
_UNITS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}


@dataclass(frozen=True)
class Timing:
    """When a schedule fires: its expression and the dates that bound it."""

    expression: str
    created: datetime
    start: datetime | None = None
    end: datetime | None = None
    timezone: str = "UTC"

    @classmethod
    def of(cls, schedule: Mapping[str, Any]) -> Timing:
        """The timing of a GetSchedule answer."""
        return cls(
            expression=schedule["ScheduleExpression"],
            created=_utc(schedule["CreationDate"]),
            start=_utc(schedule.get("StartDate")),
            end=_utc(schedule.get("EndDate")),
            timezone=schedule.get("ScheduleExpressionTimezone") or "UTC",
        )


def rate_period(expression: str) -> timedelta | None:
    """The period of a `rate(...)` expression; None for any other expression."""
    match = _RATE.match(expression)
    if match is None:
        return None
    value, unit = int(match.group(1)), match.group(2).removesuffix("s")
    if value < 1 or (value == 1) != (unit == match.group(2)):  # "1 minute" but "2 minutes", as Scheduler says
        raise ValueError(f"invalid rate expression {expression!r}")
    return value * _UNITS[unit]


def at_time(expression: str, timezone: str = "UTC") -> datetime | None:
    """The UTC time of an `at(...)` expression read in `timezone`; None for any other expression."""
    match = _AT.match(expression)
    if match is None:
        return None
    local = datetime.fromisoformat(match.group(1)).replace(tzinfo=ZoneInfo(timezone))
    return local.astimezone(UTC)


def is_supported(timing: Timing) -> bool:
    """Whether the local scheduler can fire the schedule (a valid rate or at expression and time zone)."""
    try:
        return rate_period(timing.expression) is not None or at_time(timing.expression, timing.timezone) is not None
    except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
        return False


def latest_due(timing: Timing, after: datetime, now: datetime) -> datetime | None:
    """The latest firing time t of the schedule with after < t <= now, or None."""
    at = at_time(timing.expression, timing.timezone)
    if at is not None:
        return at if after < at <= now else None
    period = _period(timing)
    anchor = timing.start or timing.created
    if now < anchor:
        return None
    k = math.floor((now - anchor) / period)
    if timing.end is not None and anchor + k * period >= timing.end:
        k = math.ceil((timing.end - anchor) / period) - 1  # the last firing before EndDate
    if k < 0:
        return None
    due = anchor + k * period
    return due if due > after else None


def next_firing(timing: Timing, now: datetime) -> datetime | None:
    """The first firing time after `now`, or None when the schedule has none left."""
    at = at_time(timing.expression, timing.timezone)
    if at is not None:
        return at if at > now else None
    period = _period(timing)
    anchor = timing.start or timing.created
    k = 0 if now < anchor else math.floor((now - anchor) / period) + 1
    due = anchor + k * period
    return None if timing.end is not None and due >= timing.end else due


def _period(timing: Timing) -> timedelta:
    period = rate_period(timing.expression)
    if period is None:
        raise ValueError(f"unsupported schedule expression {timing.expression!r}")
    return period


def _utc(value: Any) -> Any:
    return value.astimezone(UTC) if isinstance(value, datetime) else value


@dataclass
class _Tracked:
    """What the scheduler knows of one schedule, as of its LastModificationDate `version`."""

    version: datetime
    schedule: dict[str, Any]  # the GetSchedule answer
    timing: Timing | None  # None: an expression the local scheduler cannot fire
    done_until: datetime  # firing times up to this one are fired or do not count


class LocalScheduler(threading.Thread):
    def __init__(self, client: Any, group_name: str, targets: Mapping[str, Invoke], *,
                 poll_interval_s: float = 0.5, max_concurrent_invocations: int = 4,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        super().__init__(name="scheduler", daemon=True)
        self.client = client
        self.group_name = group_name
        self.targets = dict(targets)  # function ARN -> invoke
        self.poll_interval_s = poll_interval_s
        self.clock = clock
        self.fired: deque[tuple[str, datetime]] = deque(maxlen=1000)  # (schedule name, firing time), latest last
        self._tracked: dict[str, _Tracked] = {}
        self._invocations = ThreadPoolExecutor(max_concurrent_invocations, thread_name_prefix="scheduler-invoke")
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                try:
                    wait = self.tick()
                except Exception:
                    log.exception("reading the schedules of %s failed", self.group_name)
                    wait = self.poll_interval_s
                self._stop_event.wait(wait)
        finally:
            self._invocations.shutdown(wait=True, cancel_futures=True)

    def tick(self) -> float:
        """Fire what is due now. Returns how long to wait before the next look."""
        now = self.clock()
        summaries = [s for page in self.client.get_paginator("list_schedules").paginate(GroupName=self.group_name)
                     for s in page["Schedules"]]
        self._tracked = {s["Name"]: self._refresh(s) for s in summaries}
        wait = self.poll_interval_s
        for name, tracked in self._tracked.items():
            if tracked.timing is None:
                continue
            if tracked.schedule["State"] == "ENABLED":
                due = latest_due(tracked.timing, tracked.done_until, now)
                if due is not None:
                    tracked.done_until = due
                    self._fire(name, tracked.schedule, due)
            following = next_firing(tracked.timing, now)
            if following is None:
                if tracked.schedule.get("ActionAfterCompletion") == "DELETE":
                    self.client.delete_schedule(Name=name, GroupName=self.group_name)
            else:
                wait = min(wait, max(0.0, (following - self.clock()).total_seconds()))
        return wait

    def _refresh(self, summary: Mapping[str, Any]) -> _Tracked:
        name, version = summary["Name"], _utc(summary["LastModificationDate"])
        tracked = self._tracked.get(name)
        if tracked is not None and tracked.version == version:
            return tracked
        schedule = self.client.get_schedule(Name=name, GroupName=self.group_name)
        timing = Timing.of(schedule)
        if not is_supported(timing):
            log.warning("schedule %s/%s: the local scheduler cannot fire %r (%s); it fires valid rate and at "
                        "expressions", self.group_name, name, timing.expression, timing.timezone)
            timing = None
        # A created or changed schedule fires from now on, never for times before the change.
        return _Tracked(version=version, schedule=schedule, timing=timing, done_until=version)

    def _fire(self, name: str, schedule: Mapping[str, Any], due: datetime) -> None:
        target = schedule["Target"]
        invoke = self.targets.get(target["Arn"])
        self.fired.append((name, due))
        if invoke is None:
            log.warning("schedule %s/%s is due at %s but targets %s, which is not a local function",
                        self.group_name, name, due.isoformat(), target["Arn"])
            return
        event = json.loads(target.get("Input") or "{}")
        log.info("schedule %s/%s fired (due %s) -> %s", self.group_name, name, due.isoformat(),
                 target["Arn"].rpartition(":")[2])
        self._invocations.submit(self._invoke, name, invoke, event)

    def _invoke(self, name: str, invoke: Invoke, event: dict[str, Any]) -> None:
        try:
            invoke(event)
        except Exception:
            log.exception("the target of schedule %s/%s failed", self.group_name, name)
