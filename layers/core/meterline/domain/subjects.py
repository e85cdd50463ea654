"""Subjects: who usage is attributed to (a CloudEvent's `subject`), with a display name and metadata that
dashboards and billing read. Creating one is an upsert by key; usage does not need one to exist."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from meterline.domain.events import SubjectKey
from meterline.domain.timeutil import format_ms
from meterline.domain.validation import EpochMs, QueryParameters

READ_ONLY_FIELDS = ("id", "createdAt", "updatedAt", "deletedAt")


class SubjectInput(QueryParameters):
    """One element of POST /api/v1/subjects (an upsert by `key`)."""

    key: SubjectKey
    display_name: str | None = Field(None, alias="displayName", max_length=256)
    metadata: dict[str, Any] | None = None
    current_period_start_ms: EpochMs | None = Field(None, alias="currentPeriodStart")
    current_period_end_ms: EpochMs | None = Field(None, alias="currentPeriodEnd")
    stripe_customer_id: str | None = Field(None, alias="stripeCustomerId", max_length=256)



def subject_record(given: SubjectInput, subject_id: str, created_ms: int, now_ms: int) -> dict[str, Any]:
    """The stored (and shown) subject: OpenMeter's fields, absent ones omitted."""
    record: dict[str, Any] = {"id": subject_id, "key": given.key, "createdAt": format_ms(created_ms),
                              "updatedAt": format_ms(now_ms)}
    optional = {"displayName": given.display_name, "metadata": given.metadata,
                "stripeCustomerId": given.stripe_customer_id,
                "currentPeriodStart": format_ms(given.current_period_start_ms)
                if given.current_period_start_ms is not None else None,
                "currentPeriodEnd": format_ms(given.current_period_end_ms)
                if given.current_period_end_ms is not None else None}
    record.update({name: value for name, value in optional.items() if value is not None})
    return record
