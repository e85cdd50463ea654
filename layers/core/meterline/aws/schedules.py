"""One EventBridge Scheduler schedule per report, in the stack's schedule group, invoking the exporter.

The schedule starts on the first window boundary after now plus the settle time and repeats every
interval (a rate expression; hourly for calendar-day windows), so each firing comes `settle` after a
window closed."""

from __future__ import annotations

import contextlib
import hashlib
import re
from datetime import UTC, datetime
from typing import Any

import orjson

from meterline.aws.clients import AwsAdapter
from meterline.domain.reports import Report, WindowGrid
from meterline.settings import required_env

_NAME_OK = re.compile(r"^[0-9A-Za-z_.-]{1,64}$")


def schedule_name(namespace: str, slug: str) -> str:
    """Schedule names allow 64 characters of [0-9A-Za-z-_.]; long namespace/slug pairs are hashed."""
    name = f"{namespace}.{slug}"
    if _NAME_OK.match(name):
        return name
    return "r-" + hashlib.sha256(f"{namespace}/{slug}".encode()).hexdigest()[:40]


class ReportSchedules(AwsAdapter):
    service = "scheduler"

    @property
    def group(self) -> str:
        return required_env("SCHEDULE_GROUP_NAME", "the report schedule group")

    def definition(self, namespace: str, report: Report, now_ms: int, settle_ms: int) -> dict[str, Any]:
        grid = WindowGrid.of(report)
        first = grid.next_boundary_ms(now_ms) + settle_ms
        return {
            "Name": schedule_name(namespace, report.slug),
            "GroupName": self.group,
            "Description": f"Meterline usage export {namespace}/{report.slug}",
            "ScheduleExpression": grid.schedule_expression,
            "StartDate": datetime.fromtimestamp(first / 1000, UTC),
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "State": "ENABLED",
            "Target": {
                "Arn": required_env("EXPORTER_FUNCTION_ARN", "the exporter function"),
                "RoleArn": required_env("SCHEDULER_ROLE_ARN", "the role Scheduler assumes"),
                "Input": orjson.dumps({"namespace": namespace, "report": report.slug, "reportId": report.id}).decode(),
                # A missed firing is caught up by the next one, so Scheduler need not retry for long.
                "RetryPolicy": {"MaximumRetryAttempts": 3, "MaximumEventAgeInSeconds": 3600},
            },
        }

    def put(self, namespace: str, report: Report, now_ms: int, settle_ms: int, *, new: bool) -> None:
        """Create the schedule of a new report, or replace an existing report's (a changed interval or
        start); either call falls back to the other if the schedule is (or is not) there already."""
        definition = self.definition(namespace, report, now_ms, settle_ms)
        first, second = ((self.client.create_schedule, self.client.update_schedule) if new
                         else (self.client.update_schedule, self.client.create_schedule))
        try:
            first(**definition)
        except (self.client.exceptions.ConflictException, self.client.exceptions.ResourceNotFoundException):
            second(**definition)

    def delete(self, namespace: str, slug: str) -> None:
        with contextlib.suppress(self.client.exceptions.ResourceNotFoundException):
            self.client.delete_schedule(Name=schedule_name(namespace, slug), GroupName=self.group)
