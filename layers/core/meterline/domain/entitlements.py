"""Entitlements and grants: who may use which feature, and how much.

An entitlement gives a subject access to a feature:
- boolean: access, no more;
- static: access with a `config` (a string holding JSON) the application reads;
- metered: access while the subject's balance lasts. Usage of the feature's meter (filtered by subject
  and the feature's groupBy filters) burns through the entitlement's grants, period by period
  (meterline.domain.burndown). `issueAfterReset` is a grant that refills at every period start.

Stored forms keep times as epoch milliseconds and amounts as Decimal; `to_api` writes OpenMeter's shape.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from meterline.domain.burndown import GrantTerms, ManualReset, Recurrence, UsagePeriods
from meterline.domain.periods import Interval, add, floor_minute
from meterline.domain.timeutil import format_ms, parse_rfc3339, to_epoch_ms
from meterline.domain.validation import EpochMs, QueryParameters, bounded_integer, invalid, validated
from meterline.errors import FieldError

USAGE_INTERVALS = (Interval.DAY, Interval.WEEK, Interval.MONTH, Interval.YEAR)
EXPIRATION_DURATIONS = tuple(Interval)
MAX_AMOUNT = Decimal("1e15")
MEASURE_NOW = "NOW"
MEASURE_CURRENT_PERIOD_START = "CURRENT_PERIOD_START"
# What the default grant of `issueAfterReset` looks like (OpenMeter's AfterCreate).
DEFAULT_GRANT_EXPIRATION = (Interval.YEAR, 100)
DEFAULT_GRANT_METADATA = {"issueAfterReset": "true"}
METERED_ONLY = ("measureUsageFrom", "issueAfterReset", "issueAfterResetPriority", "isSoftLimit",
                "preserveOverageAtReset", "isUnlimited")
# The times a burn-down may run from or to: it steps whole usage periods (up to a year) past them, and
# calendar arithmetic fails outside the years 1..9999 (a 500, or an entitlement no listing can show).
EARLIEST_MS = to_epoch_ms(parse_rfc3339("1970-01-01T00:00:00Z"))
LATEST_MS = to_epoch_ms(parse_rfc3339("9000-01-01T00:00:00Z"))


def number(value: Decimal) -> int | float:
    """An amount as a JSON number: an integer when it is whole."""
    return int(value) if value == value.to_integral_value() else float(value)


def _amount(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("amount", "must be a number")
    amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not amount.is_finite() or not 0 <= amount <= MAX_AMOUNT:
        raise PydanticCustomError("amount", "must be a number from 0 to 1e15")
    return amount


def _interval(allowed: tuple[Interval, ...]) -> Any:
    by_iso = {i.iso: i for i in allowed}

    def check(value: Any) -> Interval:
        if isinstance(value, str):
            if value in by_iso:
                return by_iso[value]
            if value in Interval.__members__ and Interval(value) in allowed:
                return Interval(value)
        names = ", ".join(i.value for i in allowed)
        raise PydanticCustomError("interval", "must be one of {names} (or as ISO 8601: {iso})",
                                  {"names": names, "iso": ", ".join(by_iso)})
    return check


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise PydanticCustomError("bool", "must be true or false")
    return value


Amount = Annotated[Decimal, BeforeValidator(_amount)]
Priority = Annotated[int, BeforeValidator(bounded_integer(1, 255))]
UsageInterval = Annotated[Interval, BeforeValidator(_interval(USAGE_INTERVALS))]
Strict = Annotated[bool, BeforeValidator(_boolean)]


def _in_range(value: int) -> int:
    if not EARLIEST_MS <= value < LATEST_MS:
        raise PydanticCustomError("date_time_range", "must be from 1970-01-01T00:00:00Z to before 9000-01-01T00:00:00Z")
    return value


# An RFC 3339 date-time a burn-down may run from or to, as epoch ms.
Moment = Annotated[EpochMs, AfterValidator(_in_range)]


def _measure_from(value: Any) -> str | int:
    if value in (MEASURE_NOW, MEASURE_CURRENT_PERIOD_START):
        return str(value)
    if isinstance(value, str):
        try:
            moment = to_epoch_ms(parse_rfc3339(value))
        except ValueError:
            pass
        else:
            return _in_range(moment)
    raise PydanticCustomError("measure_usage_from", "must be NOW, CURRENT_PERIOD_START or an RFC 3339 date-time")


class UsagePeriodInput(QueryParameters):
    interval: UsageInterval
    anchor_ms: EpochMs | None = Field(None, alias="anchor")


class EntitlementInput(QueryParameters):
    """The body of POST /api/v1/subjects/{s}/entitlements (and of an override), every type's fields."""

    type: Literal["metered", "static", "boolean"]
    feature_key: str | None = Field(None, alias="featureKey", min_length=1, max_length=64)
    feature_id: str | None = Field(None, alias="featureId", min_length=1, max_length=64)
    metadata: dict[str, str] | None = None
    usage_period: UsagePeriodInput | None = Field(None, alias="usagePeriod")
    is_soft_limit: Strict | None = Field(None, alias="isSoftLimit")
    is_unlimited: Strict | None = Field(None, alias="isUnlimited")  # deprecated by OpenMeter; accepted, ignored
    measure_usage_from: Annotated[str | int | None, BeforeValidator(_measure_from)] = Field(
        None, alias="measureUsageFrom")
    issue_after_reset: Amount | None = Field(None, alias="issueAfterReset")
    issue_after_reset_priority: Priority | None = Field(None, alias="issueAfterResetPriority")
    preserve_overage_at_reset: Strict | None = Field(None, alias="preserveOverageAtReset")
    config: str | None = None


def entitlement_input(raw: Any) -> EntitlementInput:
    """A create (or override) body, with every rule of its type checked; InvalidInput names each field."""
    given = validated(EntitlementInput, raw, what="an entitlement", root="entitlement",
                      prefix="invalid entitlement: ")
    sent = raw if isinstance(raw, dict) else {}
    errors = []
    if given.feature_key is None and given.feature_id is None:
        errors.append(FieldError("featureKey", "featureKey or featureId is required"))
    if given.type == "metered":
        if given.usage_period is None:
            errors.append(FieldError("usagePeriod", "is required for a metered entitlement"))
        if given.config is not None:
            errors.append(FieldError("config", "is only for static entitlements"))
        if given.issue_after_reset_priority is not None and given.issue_after_reset is None:
            errors.append(FieldError("issueAfterResetPriority", "needs issueAfterReset"))
    else:
        errors += [FieldError(name, f"is only for metered entitlements, not {given.type} ones")
                   for name in METERED_ONLY if sent.get(name) is not None]
        if given.type == "boolean" and given.config is not None:
            errors.append(FieldError("config", "is only for static entitlements"))
        if given.type == "static":
            if given.config is None:
                errors.append(FieldError("config", "is required for a static entitlement"))
            else:
                try:
                    orjson.loads(given.config)
                except orjson.JSONDecodeError:
                    errors.append(FieldError("config", "must be a string holding valid JSON, such as "
                                                       "\"{\\\"integrations\\\":[\\\"github\\\"]}\""))
    if errors:
        raise invalid(errors, "invalid entitlement: ")
    return given


class StoredReset(BaseModel):
    at: int
    anchor_ms: int
    preserve_overage: bool


class Entitlement(BaseModel):
    """An entitlement as stored."""

    model_config = ConfigDict(extra="ignore")

    id: str
    type: Literal["metered", "static", "boolean"]
    subject_key: str
    feature_key: str
    feature_id: str
    metadata: dict[str, str] | None = None
    created_at: int
    updated_at: int
    deleted_at: int | None = None
    usage_interval: Interval | None = None
    anchor_ms: int | None = None
    # metered only
    measure_usage_from: int | None = None
    is_soft_limit: bool = False
    issue_after_reset: Decimal | None = None
    issue_after_reset_priority: int | None = None
    preserve_overage_at_reset: bool = False
    resets: list[StoredReset] = []
    meter_slug: str | None = None
    meter_group_by_filters: dict[str, str] | None = None
    # static only
    config: str | None = None

    @property
    def metered(self) -> bool:
        return self.type == "metered"

    @property
    def active_from(self) -> int:
        return floor_minute(self.created_at)

    def active_at(self, at_ms: int) -> bool:
        return self.active_from <= at_ms and (self.deleted_at is None or at_ms < self.deleted_at)

    def periods(self) -> UsagePeriods:
        """The usage periods (a metered entitlement's, or the display cadence of another type's)."""
        assert self.usage_interval is not None and self.anchor_ms is not None
        start = self.measure_usage_from if self.measure_usage_from is not None else self.anchor_ms
        return UsagePeriods(start, self.usage_interval, self.anchor_ms,
                            tuple(ManualReset(r.at, r.anchor_ms, r.preserve_overage) for r in self.resets),
                            self.preserve_overage_at_reset)

    @property
    def last_reset(self) -> int | None:
        """The last manual reset, or measureUsageFrom if there was none (OpenMeter's `lastReset`)."""
        return self.resets[-1].at if self.resets else self.measure_usage_from

    def to_api(self, now_ms: int) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "id": self.id, "type": self.type, "subjectKey": self.subject_key, "featureKey": self.feature_key,
            "featureId": self.feature_id, "createdAt": format_ms(self.created_at),
            "updatedAt": format_ms(self.updated_at), "activeFrom": format_ms(self.active_from),
        }
        if self.metadata is not None:
            shown["metadata"] = self.metadata
        if self.deleted_at is not None:
            shown["deletedAt"] = format_ms(self.deleted_at)
            shown["activeTo"] = format_ms(self.deleted_at)
        if self.usage_interval is not None:
            periods = self.periods()
            start, end = periods.period_at(now_ms)
            shown["usagePeriod"] = {"interval": self.usage_interval.value, "intervalISO": self.usage_interval.iso,
                                    "anchor": format_ms(periods.current_anchor)}
            shown["currentUsagePeriod"] = {"from": format_ms(start), "to": format_ms(end)}
        if self.metered:
            assert self.measure_usage_from is not None and self.last_reset is not None
            shown.update({"isSoftLimit": self.is_soft_limit, "isUnlimited": False,
                          "preserveOverageAtReset": self.preserve_overage_at_reset,
                          "measureUsageFrom": format_ms(self.measure_usage_from),
                          "lastReset": format_ms(self.last_reset)})
            if self.issue_after_reset is not None:
                shown["issueAfterReset"] = number(self.issue_after_reset)
                shown["issueAfterResetPriority"] = self.issue_after_reset_priority or 1
        if self.config is not None:
            shown["config"] = self.config
        return shown


class ExpirationInput(QueryParameters):
    duration: Annotated[Interval, BeforeValidator(_interval(EXPIRATION_DURATIONS))]
    count: Annotated[int, BeforeValidator(bounded_integer(1, 100_000))]


class RecurrenceInput(QueryParameters):
    interval: UsageInterval
    anchor_ms: EpochMs | None = Field(None, alias="anchor")


class GrantInput(QueryParameters):
    """The body of POST .../entitlements/{idOrFeatureKey}/grants."""

    amount: Amount
    priority: Priority = 1  # OpenMeter's code makes an omitted priority 0; its spec (and Meterline) say 1
    effective_at: EpochMs = Field(alias="effectiveAt")
    expiration: ExpirationInput
    max_rollover_amount: Amount = Field(Decimal(0), alias="maxRolloverAmount")
    min_rollover_amount: Amount = Field(Decimal(0), alias="minRolloverAmount")
    metadata: dict[str, str] | None = None
    recurrence: RecurrenceInput | None = None


def grant_input(raw: Any) -> GrantInput:
    given = validated(GrantInput, raw, what="a grant", root="grant", prefix="invalid grant: ")
    if given.min_rollover_amount > given.max_rollover_amount:
        reason = "must not exceed maxRolloverAmount (a reset keeps between the two)"
        raise invalid([FieldError("minRolloverAmount", reason)], "invalid grant: ")
    return given


class Grant(BaseModel):
    """A grant as stored."""

    model_config = ConfigDict(extra="ignore")

    id: str
    entitlement_id: str
    subject_key: str
    feature_key: str
    amount: Decimal
    priority: int
    effective_at: int
    expiration_duration: Interval
    expiration_count: int
    expires_at: int
    max_rollover: Decimal
    min_rollover: Decimal
    metadata: dict[str, str] | None = None
    recurrence_interval: Interval | None = None
    recurrence_anchor: int | None = None
    created_at: int
    updated_at: int
    voided_at: int | None = None

    @property
    def ends_at(self) -> int:
        return self.expires_at if self.voided_at is None else min(self.expires_at, self.voided_at)

    def terms(self) -> GrantTerms:
        recurrence = (Recurrence(self.recurrence_interval, self.recurrence_anchor)
                      if self.recurrence_interval is not None and self.recurrence_anchor is not None else None)
        return GrantTerms(self.id, self.amount, self.effective_at, self.priority, self.expires_at, self.voided_at,
                          self.min_rollover, self.max_rollover, recurrence, self.created_at)

    def to_api(self, now_ms: int) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "id": self.id, "entitlementId": self.entitlement_id, "subjectKey": self.subject_key,
            "featureKey": self.feature_key, "amount": number(self.amount), "priority": self.priority,
            "effectiveAt": format_ms(self.effective_at),
            "expiration": {"duration": self.expiration_duration.value, "count": self.expiration_count},
            "expiresAt": format_ms(self.expires_at), "maxRolloverAmount": number(self.max_rollover),
            "minRolloverAmount": number(self.min_rollover), "createdAt": format_ms(self.created_at),
            "updatedAt": format_ms(self.updated_at),
        }
        if self.metadata is not None:
            shown["metadata"] = self.metadata
        if self.voided_at is not None:
            shown["voidedAt"] = format_ms(self.voided_at)
        if self.recurrence_interval is not None and self.recurrence_anchor is not None:
            shown["recurrence"] = {"interval": self.recurrence_interval.value,
                                   "intervalISO": self.recurrence_interval.iso,
                                   "anchor": format_ms(self.recurrence_anchor)}
            upcoming = self.terms().recurrences(now_ms, self.ends_at)
            if upcoming:
                shown["nextRecurrence"] = format_ms(upcoming[0])
        return shown


def new_grant(given: GrantInput, grant_id: str, entitlement: Entitlement, now_ms: int) -> Grant:
    effective = floor_minute(given.effective_at)
    duration, count = given.expiration.duration, given.expiration.count
    recurrence = given.recurrence
    return Grant(id=grant_id, entitlement_id=entitlement.id, subject_key=entitlement.subject_key,
                 feature_key=entitlement.feature_key, amount=given.amount, priority=given.priority,
                 effective_at=effective, expiration_duration=duration, expiration_count=count,
                 expires_at=add(effective, duration, count), max_rollover=given.max_rollover_amount,
                 min_rollover=given.min_rollover_amount, metadata=given.metadata,
                 recurrence_interval=recurrence.interval if recurrence else None,
                 recurrence_anchor=floor_minute(recurrence.anchor_ms if recurrence and recurrence.anchor_ms is not None
                                                else effective) if recurrence else None,
                 created_at=now_ms, updated_at=now_ms)


class ResetInput(QueryParameters):
    """The body of POST .../entitlements/{id}/reset."""

    effective_at: EpochMs | None = Field(None, alias="effectiveAt")
    retain_anchor: Strict = Field(False, alias="retainAnchor")
    preserve_overage: Strict | None = Field(None, alias="preserveOverage")
