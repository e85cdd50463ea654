"""Export runs and webhook deliveries: their states and how a run's status follows from its deliveries.

A run exports one window of one report. The exporter moves it pending -> running -> delivering (once
every subject's delivery is enqueued) or -> failed (the export itself failed); a scheduled run whose
window the stream processor may not have finished waits first (waiting -> running). An exported run is
final (processing was past the window's end) or provisional (exported after the longest hold anyway). Each delivery ends
succeeded or failed (dead-lettered after its last attempt); the run's status is derived from them:
succeeded when all succeeded, partial when any failed, running until all have ended.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from meterline.domain.processing_lag import Completeness
from meterline.domain.timeutil import format_ms


class Trigger(StrEnum):
    SCHEDULE = "schedule"
    MANUAL = "manual"
    CATCH_UP = "catch-up"


class RunPhase(StrEnum):
    """What the exporter last recorded on the run."""

    PENDING = "pending"
    WAITING = "waiting"  # for the stream processor to be past the window's end
    RUNNING = "running"
    DELIVERING = "delivering"
    FAILED = "failed"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED)


def webhook_id(run_id: str, subject: str) -> str:
    """Stable across every retry of one subject's delivery in one run (receivers de-duplicate on it);
    a manual re-run of the window is a new run with new ids, since it may carry different numbers."""
    digest = hashlib.sha256(f"{run_id}\n{subject}".encode()).hexdigest()[:32]
    return f"msg_{digest}"


@dataclass
class Delivery:
    subject: str
    webhook_id: str
    status: DeliveryStatus = DeliveryStatus.PENDING
    attempts: int = 0
    last_status_code: int | None = None
    last_error: str | None = None
    last_attempt_ms: int | None = None
    finished_ms: int | None = None

    def to_api(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "webhookId": self.webhook_id,
            "status": self.status.value,
            "attempts": self.attempts,
            "lastResponseStatus": self.last_status_code,
            "lastError": self.last_error,
            "lastAttemptAt": format_ms(self.last_attempt_ms) if self.last_attempt_ms is not None else None,
            "finishedAt": format_ms(self.finished_ms) if self.finished_ms is not None else None,
        }


@dataclass
class Run:
    id: str
    report_id: str
    window_start_ms: int
    window_end_ms: int
    trigger: Trigger
    phase: RunPhase
    requested_ms: int
    started_ms: int | None = None
    exported_ms: int | None = None
    subjects: int = 0
    succeeded: int = 0
    failed: int = 0
    error: str | None = None
    completeness: Completeness | None = None  # set when exported
    deliveries: list[Delivery] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.phase is not RunPhase.DELIVERING:
            return self.phase.value
        if self.succeeded + self.failed < self.subjects:
            return "running"
        return "partial" if self.failed else "succeeded"

    @property
    def finished_ms(self) -> int | None:
        status = self.status
        if status == "failed":
            return self.exported_ms
        if status not in ("succeeded", "partial"):
            return None
        ends = [d.finished_ms for d in self.deliveries if d.finished_ms is not None]
        return max([self.exported_ms or 0, *ends])

    def to_api(self) -> dict[str, Any]:
        finished = self.finished_ms
        return {
            "id": self.id,
            "windowStart": format_ms(self.window_start_ms),
            "windowEnd": format_ms(self.window_end_ms),
            "trigger": self.trigger.value,
            "status": self.status,
            "requestedAt": format_ms(self.requested_ms),
            "startedAt": format_ms(self.started_ms) if self.started_ms is not None else None,
            "finishedAt": format_ms(finished) if finished is not None else None,
            "subjects": self.subjects,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "error": self.error,
            "completeness": self.completeness.value if self.completeness else None,
            "deliveries": [d.to_api() for d in sorted(self.deliveries, key=lambda d: d.subject)],
        }


# --- queue messages: built by their producers, parsed by their consumers ---------------------------


class ExportRequest(BaseModel):
    """A manual run to export: put on the export-request queue by POST .../runs, taken by the exporter."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    namespace: str
    report: str  # the slug
    report_id: str = Field(alias="reportId")
    run_id: str = Field(alias="runId")

    def body(self) -> str:
        return self.model_dump_json(by_alias=True)


class DeliveryMessage(BaseModel):
    """One queued webhook: who it is for and the body to send."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    namespace: str
    report: str
    report_id: str = Field(alias="reportId")
    run_id: str = Field(alias="runId")
    subject: str
    webhook_id: str = Field(alias="webhookId")
    attempt: int = Field(ge=0)
    payload: dict[str, Any]

    def body(self) -> str:
        return self.model_dump_json(by_alias=True)
