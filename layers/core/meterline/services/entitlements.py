"""Entitlements, grants, values, history and resets (OpenMeter's v1 entitlements API).

A metered entitlement's usage is the meter's usage read through the exact usage-query path
(UsageReader), filtered to the subject and the feature's groupBy filters, one query per value with a
window per burn-down phase: never a second count. A value starts from the entitlement's snapshot (the
state just before the latest period reset older than the snapshot grace) so its cost stays flat however
many periods have passed; computing a value keeps a newer snapshot when it passes one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError

from meterline.domain.burndown import ZERO, Balances, BurnDown, burn_down, start_of
from meterline.domain.entitlements import (
    DEFAULT_GRANT_EXPIRATION,
    DEFAULT_GRANT_METADATA,
    MEASURE_CURRENT_PERIOD_START,
    MEASURE_NOW,
    Entitlement,
    EntitlementInput,
    Grant,
    GrantInput,
    Moment,
    ResetInput,
    StoredReset,
    new_grant,
    number,
)
from meterline.domain.features import Feature
from meterline.domain.meters import is_ulid
from meterline.domain.paging import ListParameters, csv_values
from meterline.domain.periods import add, ceil_minute, floor_minute, index_of
from meterline.domain.query_plan import UsageQuery
from meterline.domain.timeutil import format_ms
from meterline.domain.validation import EpochMs, QueryBool, QueryParameters
from meterline.domain.windows import TooManyWindows, WindowSize, plan_windows, resolve_time_zone
from meterline.errors import Conflict, FieldError, InvalidInput, NotFound
from meterline.services.meters import new_ulid
from meterline.services.usage_query import UsageReader
from meterline.settings import QueryLimits
from meterline.storage.entitlements_store import EntitlementsStore
from meterline.storage.features_store import FeaturesStore
from meterline.storage.meters_store import MetersStore
from meterline.storage.subjects_store import SubjectsStore
from meterline.storage.usage_store import UsageStore

NO_ACCESS: dict[str, Any] = {"hasAccess": False}
ENTITLEMENT_TYPES = ("metered", "static", "boolean")


@dataclass
class EntitlementsContext:
    store: EntitlementsStore
    features: FeaturesStore
    meters: MetersStore
    subjects: SubjectsStore
    usage: UsageStore
    limits: QueryLimits
    snapshot_grace_ms: int  # late events older than this do not change the balances of later periods
    # False for read-only callers (the entitlement authorizer): values start from the kept snapshot but
    # never write one
    keep_snapshots: bool = True


# --- query strings ------------------------------------------------------------------------------------

def _choice(names: Iterable[str], kind: str) -> Callable[[Any], str]:
    allowed = tuple(names)

    def check(value: Any) -> str:
        if value not in allowed:
            raise PydanticCustomError(kind, "must be one of {names}", {"names": ", ".join(allowed)})
        return str(value)
    return check


def _types(value: Any) -> list[str] | None:
    listed = csv_values(value)
    for kind in listed or []:
        if kind not in ENTITLEMENT_TYPES:
            raise PydanticCustomError("entitlement_type", "must be metered, static or boolean")
    return listed


Values = Annotated[list[str] | None, BeforeValidator(csv_values)]


class ListEntitlementsQuery(ListParameters):
    feature: Values = None
    subject: Values = None
    entitlement_type: Annotated[list[str] | None, BeforeValidator(_types)] = Field(None, alias="entitlementType")
    exclude_inactive: QueryBool = Field(False, alias="excludeInactive")
    order_by: Annotated[str, BeforeValidator(_choice(("createdAt", "updatedAt"), "order_by"))] = Field(
        "createdAt", alias="orderBy")


class ListGrantsQuery(ListParameters):
    feature: Values = None
    subject: Values = None
    include_deleted: QueryBool = Field(False, alias="includeDeleted")
    order_by: Annotated[str, BeforeValidator(_choice(("id", "createdAt", "updatedAt"), "order_by"))] = Field(
        "updatedAt", alias="orderBy")


class SubjectGrantsQuery(QueryParameters):
    include_deleted: QueryBool = Field(False, alias="includeDeleted")
    order_by: Annotated[str, BeforeValidator(_choice(("id", "createdAt", "updatedAt"), "order_by"))] = Field(
        "updatedAt", alias="orderBy")


class SubjectEntitlementsQuery(QueryParameters):
    include_deleted: QueryBool = Field(False, alias="includeDeleted")


class ValueQuery(QueryParameters):
    time_ms: Moment | None = Field(None, alias="time")


class VoidQuery(QueryParameters):
    at_ms: EpochMs | None = Field(None, alias="at")


class HistoryQuery(QueryParameters):
    window_size: Annotated[str, BeforeValidator(_choice(("MINUTE", "HOUR", "DAY"), "window_size"))] = Field(
        alias="windowSize")
    from_ms: Moment | None = Field(None, alias="from")
    to_ms: Moment | None = Field(None, alias="to")
    window_time_zone: str = Field("UTC", alias="windowTimeZone")


_ORDER = {
    "id": lambda x: (x.id,),
    "createdAt": lambda x: (x.created_at, x.id),
    "updatedAt": lambda x: (x.updated_at, x.id),
}


# --- lookups ------------------------------------------------------------------------------------------

def subject_key(ctx: EntitlementsContext, namespace: str, id_or_key: str) -> str:
    """The subject key a path names: a subject's id (when one has it) or the key itself. The subject
    need not exist."""
    if is_ulid(id_or_key):
        for subject in ctx.subjects.list(namespace):
            if subject["id"] == id_or_key:
                return str(subject["key"])
    return id_or_key


def _no_entitlement(what: str) -> NotFound:
    return NotFound(f"there is no entitlement {what}", [FieldError("entitlementId", "no entitlement of the subject "
                                                                                    "has this id or feature key")])


def _by_id(ctx: EntitlementsContext, namespace: str, entitlement_id: str
           ) -> tuple[Entitlement, Balances | None] | None:
    return ctx.store.get(namespace, entitlement_id) if is_ulid(entitlement_id) else None


def _of_subject(ctx: EntitlementsContext, namespace: str, subject: str, entitlement_id: str
                ) -> tuple[Entitlement, Balances | None]:
    """An entitlement of the subject by id (deleted ones included)."""
    found = _by_id(ctx, namespace, entitlement_id)
    if found is None or found[0].subject_key != subject:
        raise _no_entitlement(f"{entitlement_id!r} of subject {subject!r}")
    return found


def _resolve(ctx: EntitlementsContext, namespace: str, subject: str, id_or_feature: str,
             at_ms: int | None = None) -> tuple[Entitlement, Balances | None] | None:
    """By entitlement id, else the subject's entitlement of the feature key: the active one, or (for a
    time in the past) the one active then."""
    found = _by_id(ctx, namespace, id_or_feature)
    if found is not None and found[0].subject_key == subject:
        return found
    active = ctx.store.active_id(namespace, id_or_feature, subject)
    found = ctx.store.get(namespace, active) if active else None
    if found is not None and (at_ms is None or found[0].active_at(at_ms)):
        return found
    if at_ms is not None:
        then = [pair for pair in ctx.store.of_subject(namespace, subject)
                if pair[0].feature_key == id_or_feature and pair[0].active_at(at_ms)]
        if then:
            return then[-1]
    return found


def _feature_for(ctx: EntitlementsContext, namespace: str, given: EntitlementInput) -> Feature:
    if given.feature_id is not None:
        feature = ctx.features.get(namespace, given.feature_id) if is_ulid(given.feature_id) else None
        name, field = given.feature_id, "featureId"
    else:
        assert given.feature_key is not None
        feature_id = ctx.features.active_id(namespace, given.feature_key)
        feature = ctx.features.get(namespace, feature_id) if feature_id else None
        name, field = given.feature_key, "featureKey"
    if feature is None or feature.archived:
        raise NotFound(f"there is no feature {name!r}", [FieldError(field, "no active feature has it")])
    return feature


# --- entitlements -------------------------------------------------------------------------------------

def _build(ctx: EntitlementsContext, namespace: str, subject: str, given: EntitlementInput, now_ms: int
           ) -> tuple[Entitlement, list[Grant]]:
    feature = _feature_for(ctx, namespace, given)
    assert feature.id is not None
    fields: dict[str, Any] = {"id": new_ulid(), "type": given.type, "subject_key": subject,
                              "feature_key": feature.key, "feature_id": feature.id, "metadata": given.metadata,
                              "created_at": now_ms, "updated_at": now_ms}
    if given.usage_period is not None:
        anchor = given.usage_period.anchor_ms
        fields["usage_interval"] = given.usage_period.interval
        fields["anchor_ms"] = floor_minute(now_ms if anchor is None else anchor)
    if given.type == "static":
        fields["config"] = given.config
    if given.type != "metered":
        return Entitlement(**fields), []
    if feature.meter_slug is None:
        raise InvalidInput(f"feature {feature.key!r} has no meter: a metered entitlement needs a metered feature",
                           [FieldError("featureKey", "names a feature without a meter (use static or boolean)")])
    interval, anchor = fields["usage_interval"], fields["anchor_ms"]
    measured = given.measure_usage_from
    if measured is None or measured == MEASURE_NOW:
        measure_from = floor_minute(now_ms)
    elif measured == MEASURE_CURRENT_PERIOD_START:
        measure_from = add(anchor, interval, index_of(anchor, interval, now_ms))
    else:
        measure_from = floor_minute(int(measured))
    entitlement = Entitlement(
        **fields, measure_usage_from=measure_from, is_soft_limit=bool(given.is_soft_limit),
        issue_after_reset=given.issue_after_reset, issue_after_reset_priority=given.issue_after_reset_priority,
        preserve_overage_at_reset=bool(given.preserve_overage_at_reset), meter_slug=feature.meter_slug,
        meter_group_by_filters=feature.meter_group_by_filters)
    grants = []
    if given.issue_after_reset:
        amount = given.issue_after_reset
        default = GrantInput.model_validate({
            "amount": 0, "effectiveAt": format_ms(measure_from),
            "expiration": {"duration": DEFAULT_GRANT_EXPIRATION[0].value, "count": DEFAULT_GRANT_EXPIRATION[1]},
            "priority": given.issue_after_reset_priority or 1, "metadata": DEFAULT_GRANT_METADATA})
        default = default.model_copy(update={"amount": amount, "max_rollover_amount": amount,
                                             "min_rollover_amount": amount})
        grants.append(new_grant(default, new_ulid(), entitlement, now_ms))
    return entitlement, grants


def create_entitlement(ctx: EntitlementsContext, namespace: str, subject: str, given: EntitlementInput,
                       now_ms: int) -> dict[str, Any]:
    """201: 404 for an unknown or archived feature, 400 for a metered entitlement of a feature without a
    meter, 409 (naming it) when the subject has an active entitlement of the feature."""
    entitlement, grants = _build(ctx, namespace, subject, given, now_ms)
    holder = ctx.store.create(namespace, entitlement, grants)
    if holder is not None:
        raise Conflict(f"subject {subject!r} already has an active entitlement of feature {entitlement.feature_key!r}",
                       [FieldError("featureKey", "the subject has an active entitlement of it")],
                       conflicting_id=holder)
    return entitlement.to_api(now_ms)


def override_entitlement(ctx: EntitlementsContext, namespace: str, subject: str, id_or_feature: str,
                         given: EntitlementInput, now_ms: int) -> dict[str, Any]:
    """Replace the subject's active entitlement (by id or feature key) by a new one, in one transaction."""
    found = _resolve(ctx, namespace, subject, id_or_feature)
    if found is None:
        raise _no_entitlement(f"{id_or_feature!r} of subject {subject!r}")
    old = found[0]
    if old.deleted_at is not None:
        raise InvalidInput(f"entitlement {old.id} is deleted; create a new one instead",
                           [FieldError("entitlementIdOrFeatureKey", "names a deleted entitlement")])
    new, grants = _build(ctx, namespace, subject, given, now_ms)
    if new.feature_key != old.feature_key:
        reason = f"must be the overridden entitlement's feature ({old.feature_key})"
        raise InvalidInput(f"featureKey {reason}", [FieldError("featureKey", reason)])
    deleted = old.model_copy(update={"deleted_at": now_ms, "updated_at": now_ms})
    if not ctx.store.replace(namespace, old, deleted, new, grants):
        raise Conflict(f"entitlement {old.id} changed meanwhile; retry", conflicting_id=old.id)
    return new.to_api(now_ms)


def list_subject_entitlements(ctx: EntitlementsContext, namespace: str, subject: str,
                              query: SubjectEntitlementsQuery, now_ms: int) -> list[dict[str, Any]]:
    return [e.to_api(now_ms) for e, _ in ctx.store.of_subject(namespace, subject)
            if query.include_deleted or e.deleted_at is None]


def get_subject_entitlement(ctx: EntitlementsContext, namespace: str, subject: str, entitlement_id: str,
                            now_ms: int) -> dict[str, Any]:
    return _of_subject(ctx, namespace, subject, entitlement_id)[0].to_api(now_ms)


def delete_entitlement(ctx: EntitlementsContext, namespace: str, subject: str, entitlement_id: str,
                       now_ms: int) -> None:
    """Soft delete: values before now still see it; the feature is free for a new entitlement."""
    entitlement = _of_subject(ctx, namespace, subject, entitlement_id)[0]
    if entitlement.deleted_at is not None:
        raise _no_entitlement(f"{entitlement_id!r} of subject {subject!r} (it is deleted)")
    deleted = entitlement.model_copy(update={"deleted_at": now_ms, "updated_at": now_ms})
    if not ctx.store.delete(namespace, entitlement, deleted):
        raise Conflict(f"entitlement {entitlement.id} changed meanwhile; retry", conflicting_id=entitlement.id)


def _matches_feature(entitlement: Entitlement, features: list[str] | None) -> bool:
    return features is None or entitlement.feature_key in features or entitlement.feature_id in features


def list_entitlements(ctx: EntitlementsContext, namespace: str, query: ListEntitlementsQuery, now_ms: int) -> Any:
    found = [e for e in ctx.store.list(namespace)
             if _matches_feature(e, query.feature)
             and (query.subject is None or e.subject_key in query.subject)
             and (query.entitlement_type is None or e.type in query.entitlement_type)
             and (not query.exclude_inactive or e.active_at(now_ms))]
    return query.answer(found, _ORDER[query.order_by], lambda e: e.to_api(now_ms))


def get_entitlement(ctx: EntitlementsContext, namespace: str, entitlement_id: str, now_ms: int) -> dict[str, Any]:
    found = _by_id(ctx, namespace, entitlement_id)
    if found is None:
        raise _no_entitlement(repr(entitlement_id))
    return found[0].to_api(now_ms)


# --- grants -------------------------------------------------------------------------------------------

def _current_period_start(entitlement: Entitlement, now_ms: int) -> int:
    return entitlement.periods().period_at(now_ms)[0]


def _metered(entitlement: Entitlement, field: str) -> None:
    if not entitlement.metered:
        raise InvalidInput(f"entitlement {entitlement.id} is {entitlement.type}; only metered entitlements have "
                           "grants, balances, history and resets", [FieldError(field, "names a "
                                                                            f"{entitlement.type} entitlement")])


def create_grant(ctx: EntitlementsContext, namespace: str, subject: str, id_or_feature: str, given: GrantInput,
                 now_ms: int) -> dict[str, Any]:
    """201: 404 without such an active entitlement, 400 for one that is not metered or an effectiveAt
    before the current usage period."""
    found = _resolve(ctx, namespace, subject, id_or_feature)
    if found is None or found[0].deleted_at is not None:
        raise _no_entitlement(f"{id_or_feature!r} of subject {subject!r}")
    entitlement = found[0]
    _metered(entitlement, "entitlementIdOrFeatureKey")
    period_start = _current_period_start(entitlement, now_ms)
    if floor_minute(given.effective_at) < period_start:
        reason = f"must not be before the current usage period's start ({format_ms(period_start)})"
        raise InvalidInput(f"effectiveAt {reason}", [FieldError("effectiveAt", reason)])
    try:
        grant = new_grant(given, new_ulid(), entitlement, now_ms)
    except (OverflowError, ValueError):
        raise InvalidInput("the grant would expire after the year 9999",
                           [FieldError("expiration", "ends after the year 9999")]) from None
    ctx.store.add_grant(namespace, grant)
    return grant.to_api(now_ms)


def list_subject_grants(ctx: EntitlementsContext, namespace: str, subject: str, id_or_feature: str,
                        query: SubjectGrantsQuery, now_ms: int) -> list[dict[str, Any]]:
    found = _resolve(ctx, namespace, subject, id_or_feature)
    if found is None:
        raise _no_entitlement(f"{id_or_feature!r} of subject {subject!r}")
    grants = ctx.store.grants_of(namespace, found[0].id)
    if not query.include_deleted:
        grants = [g for g in grants if g.voided_at is None]
    return [g.to_api(now_ms) for g in sorted(grants, key=_ORDER[query.order_by])]


def list_grants(ctx: EntitlementsContext, namespace: str, query: ListGrantsQuery, now_ms: int) -> Any:
    entitlements = {e.id: e for e in ctx.store.list(namespace)}
    found = []
    for grant in ctx.store.list_grants(namespace):
        entitlement = entitlements.get(grant.entitlement_id)
        if entitlement is None or not _matches_feature(entitlement, query.feature):
            continue
        if query.subject is not None and grant.subject_key not in query.subject:
            continue
        if not query.include_deleted and (grant.voided_at is not None or entitlement.deleted_at is not None):
            continue
        found.append(grant)
    return query.answer(found, _ORDER[query.order_by], lambda g: g.to_api(now_ms))


def void_grant(ctx: EntitlementsContext, namespace: str, grant_id: str, query: VoidQuery, now_ms: int) -> None:
    """204: from `at` (default now) the grant counts no more; what it covered stays covered."""
    grant = ctx.store.grant(namespace, grant_id) if is_ulid(grant_id) else None
    if grant is None:
        raise NotFound(f"there is no grant {grant_id!r}", [FieldError("grantId", "no grant has this id")])
    if grant.voided_at is not None:
        raise Conflict(f"grant {grant_id} was voided at {format_ms(grant.voided_at)}", conflicting_id=grant_id)
    at = floor_minute(now_ms if query.at_ms is None else query.at_ms)
    if at > now_ms:
        raise InvalidInput("at must not be in the future", [FieldError("at", "must not be in the future")])
    found = ctx.store.get(namespace, grant.entitlement_id)
    if found is not None and at < (start := _current_period_start(found[0], now_ms)):
        reason = f"must not be before the current usage period's start ({format_ms(start)})"
        raise InvalidInput(f"at {reason}", [FieldError("at", reason)])
    voided = grant.model_copy(update={"voided_at": at, "updated_at": now_ms})
    if not ctx.store.void_grant(namespace, grant, voided):
        raise Conflict(f"grant {grant_id} was voided meanwhile", conflicting_id=grant_id)


# --- values -------------------------------------------------------------------------------------------

def _usage_of(ctx: EntitlementsContext, namespace: str, entitlement: Entitlement, now_ms: int
              ) -> Callable[[list[tuple[int, int]]], list[Decimal]]:
    def usage_of(windows: list[tuple[int, int]]) -> list[Decimal]:
        assert entitlement.meter_slug is not None
        stored = ctx.meters.find(namespace, entitlement.meter_slug)
        if stored is None:
            raise NotFound(f"the meter {entitlement.meter_slug!r} of feature {entitlement.feature_key!r} is gone",
                           [FieldError("featureKey", "its meter was deleted")])
        meter = stored.meter
        filters = entitlement.meter_group_by_filters or {}
        missing = [key for key in filters if key not in meter.group_by]
        if missing:
            raise Conflict(f"meter {meter.slug!r} no longer groups by {', '.join(missing)}, which feature "
                           f"{entitlement.feature_key!r} filters on")
        query = UsageQuery(windows[0][0], windows[-1][1], subjects=[entitlement.subject_key],
                           filter_group_by={key: [value] for key, value in filters.items()}, windows=windows)
        rows = UsageReader(ctx.usage, ctx.limits).query(namespace, meter, query, now_ms)
        by_start = {row["windowStart"]: Decimal(str(row["value"])) for row in rows if row["value"] is not None}
        return [by_start.get(format_ms(start), ZERO) for start, _ in windows]
    return usage_of


def burn_down_to(ctx: EntitlementsContext, namespace: str, entitlement: Entitlement, snapshot: Balances | None,
                 to_ms: int, now_ms: int, observe: Iterable[int] = (), cut: Iterable[int] = ()) -> BurnDown:
    """The metered entitlement's burn-down through `to_ms`, from its snapshot when that is not later;
    keeps a newer snapshot when it passes a reset older than the grace."""
    assert entitlement.measure_usage_from is not None
    periods = entitlement.periods()
    usable = snapshot is not None and snapshot.at <= to_ms
    grants = [g.terms() for g in ctx.store.grants_of(namespace, entitlement.id,
                                                      snapshot.at if usable and snapshot else None)]
    start = snapshot if usable and snapshot else start_of(periods, grants)
    result = burn_down(periods, grants, start, max(to_ms, start.at), _usage_of(ctx, namespace, entitlement, now_ms),
                       list(observe), list(cut))
    settled = [c for c in result.checkpoints
               if c.at <= now_ms - ctx.snapshot_grace_ms and (snapshot is None or c.at > snapshot.at)]
    if settled and ctx.keep_snapshots:
        ctx.store.put_snapshot(namespace, entitlement.id, settled[-1])
    return result


def _value(ctx: EntitlementsContext, namespace: str, found: tuple[Entitlement, Balances | None], at_ms: int,
           now_ms: int) -> dict[str, Any]:
    entitlement, snapshot = found
    if not entitlement.active_at(at_ms):
        return dict(NO_ACCESS)
    if entitlement.type == "boolean":
        return {"hasAccess": True}
    if entitlement.type == "static":
        return {"hasAccess": True, "config": entitlement.config}
    result = burn_down_to(ctx, namespace, entitlement, snapshot, at_ms, now_ms)
    balance = result.balance
    return {"hasAccess": entitlement.is_soft_limit or balance > 0, "balance": number(balance),
            "usage": number(result.end.usage), "overage": number(result.end.overage)}


def _value_time(query: ValueQuery, now_ms: int) -> int:
    """The value's time, rounded up to a whole minute so the current minute's usage counts."""
    return ceil_minute(now_ms if query.time_ms is None else query.time_ms)


def entitlement_value(ctx: EntitlementsContext, namespace: str, subject: str, id_or_feature: str,
                      query: ValueQuery, now_ms: int) -> dict[str, Any]:
    at = _value_time(query, now_ms)
    found = _resolve(ctx, namespace, subject, id_or_feature, at)
    if found is None:
        raise _no_entitlement(f"{id_or_feature!r} of subject {subject!r}")
    return _value(ctx, namespace, found, at, now_ms)


def customer_value(ctx: EntitlementsContext, namespace: str, customer: str, feature_key: str, query: ValueQuery,
                   now_ms: int) -> dict[str, Any]:
    """The customer (a subject key) without an entitlement of the feature has no access: 200, not 404."""
    at = _value_time(query, now_ms)
    found = _resolve(ctx, namespace, customer, feature_key, at)
    return dict(NO_ACCESS) if found is None else _value(ctx, namespace, found, at, now_ms)


def customer_access(ctx: EntitlementsContext, namespace: str, customer: str, now_ms: int) -> dict[str, Any]:
    at = ceil_minute(now_ms)
    values = {}
    for found in ctx.store.of_subject(namespace, customer):
        if found[0].active_at(at):
            values[found[0].feature_key] = _value(ctx, namespace, found, at, now_ms)
    return {"entitlements": values}


# --- history and reset --------------------------------------------------------------------------------

def _shown(balances: dict[str, Decimal]) -> dict[str, int | float]:
    return {grant_id: number(amount) for grant_id, amount in balances.items()}


def history(ctx: EntitlementsContext, namespace: str, subject: str, entitlement_id: str, query: HistoryQuery,
            now_ms: int) -> dict[str, Any]:
    """Windows of `windowSize` in `windowTimeZone` from `from` (default: lastReset) to `to` (default now),
    each with its usage and the balance at its start (every window, usage 0 included), and the burn-down
    segments."""
    entitlement, snapshot = _of_subject(ctx, namespace, subject, entitlement_id)
    _metered(entitlement, "entitlementId")
    assert entitlement.measure_usage_from is not None and entitlement.last_reset is not None
    start = floor_minute(entitlement.last_reset if query.from_ms is None else query.from_ms)
    end = ceil_minute(now_ms if query.to_ms is None else query.to_ms)
    if start < entitlement.measure_usage_from:
        reason = f"must not be before measureUsageFrom ({format_ms(entitlement.measure_usage_from)})"
        raise InvalidInput(f"from {reason}", [FieldError("from", reason)])
    if start >= end:
        raise InvalidInput("from must be before to", [FieldError("from", "must be before to")])
    try:
        zone = resolve_time_zone(query.window_time_zone)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"windowTimeZone {exc}", [FieldError("windowTimeZone", str(exc))]) from None
    try:
        windows = plan_windows(start, end, WindowSize(query.window_size), zone, max_windows=ctx.limits.max_rows)
    except TooManyWindows as exc:
        raise InvalidInput(str(exc), [FieldError("windowSize", str(exc))]) from None
    usable = snapshot if snapshot is not None and snapshot.at <= start else None
    # `from` cuts a segment, so the burn-down history starts exactly there
    result = burn_down_to(ctx, namespace, entitlement, usable, end, now_ms, [w for w, _ in windows], [start])
    windowed = []
    for window_start, window_end in windows:
        used = sum((amount for (a, b), amount in result.usage.items() if window_start <= a and b <= window_end), ZERO)
        windowed.append({"period": {"from": format_ms(window_start), "to": format_ms(window_end)},
                         "usage": number(used), "balanceAtStart": number(result.balance_at.get(window_start, ZERO))})
    segments = [{
        "period": {"from": format_ms(s.from_ms), "to": format_ms(s.to_ms)},
        "usage": number(s.usage), "overage": number(s.overage),
        "balanceAtStart": number(s.balance_at_start), "grantBalancesAtStart": _shown(s.grant_balances_at_start),
        "balanceAtEnd": number(s.balance_at_end), "grantBalancesAtEnd": _shown(s.grant_balances_at_end),
        "grantUsages": [{"grantId": g, "usage": number(u)} for g, u in s.grant_usages.items()],
    } for s in result.segments if s.from_ms >= start]
    return {"windowedHistory": windowed, "burndownHistory": segments}


def reset(ctx: EntitlementsContext, namespace: str, subject: str, entitlement_id: str, given: ResetInput,
          now_ms: int) -> None:
    """204: a new usage period starts at effectiveAt (default now); grants roll over, usage restarts."""
    entitlement = _of_subject(ctx, namespace, subject, entitlement_id)[0]
    if entitlement.deleted_at is not None:
        raise _no_entitlement(f"{entitlement_id!r} of subject {subject!r} (it is deleted)")
    _metered(entitlement, "entitlementId")
    assert entitlement.measure_usage_from is not None
    at = floor_minute(now_ms if given.effective_at is None else given.effective_at)
    periods = entitlement.periods()
    period_start = periods.period_at(now_ms)[0]
    problems = []
    if at > now_ms:
        problems.append("must not be in the future")
    if at < period_start:
        problems.append(f"must not be before the current usage period's start ({format_ms(period_start)})")
    last = periods.last_manual_reset
    if last is not None and at <= last:
        problems.append(f"must be after the last reset ({format_ms(last)})")
    if at <= entitlement.measure_usage_from:
        problems.append(f"must be after measureUsageFrom ({format_ms(entitlement.measure_usage_from)})")
    if problems:
        raise InvalidInput("effectiveAt " + "; ".join(problems), [FieldError("effectiveAt", p) for p in problems])
    preserve = entitlement.preserve_overage_at_reset if given.preserve_overage is None else given.preserve_overage
    anchor = periods.current_anchor if given.retain_anchor else at
    updated = entitlement.model_copy(update={
        "resets": [*entitlement.resets, StoredReset(at=at, anchor_ms=anchor, preserve_overage=preserve)],
        "updated_at": now_ms})
    if not ctx.store.update(namespace, entitlement, updated):
        raise Conflict(f"entitlement {entitlement.id} changed meanwhile; retry", conflicting_id=entitlement.id)

