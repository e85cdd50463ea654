"""Managing meters: GET/POST /api/v1/meters, GET/PUT/DELETE /api/v1/meters/{idOrSlug}, and seeding the
meters of a YAML file. Bodies are validated as a whole before anything is written."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any

from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError

from meterline.domain.meters import BackfillState, BackfillStatus, Meter, new_meter, updated_meter
from meterline.domain.paging import SortOrder
from meterline.domain.timeutil import format_ms
from meterline.domain.validation import QueryBool, QueryParameters, bounded_integer
from meterline.errors import Conflict, FieldError, NotFound, QuotaExceeded
from meterline.services import meter_source
from meterline.storage.meters_store import MetersStore

# A PUT re-reads and re-applies itself when the meter changed between its read and its write.
UPDATE_ATTEMPTS = 5
MAX_PAGE_SIZE = 1000
ORDER_BY = {
    "key": lambda m: (m.slug,),
    "name": lambda m: (m.name or m.slug, m.slug),
    "aggregation": lambda m: (m.aggregation.value, m.slug),
    "createdAt": lambda m: (m.created_at or "", m.slug),
    "updatedAt": lambda m: (m.updated_at or "", m.slug),
}


def new_ulid() -> str:
    from ulid import ULID

    return str(ULID())


def _order_by(value: Any) -> str:
    if value not in ORDER_BY:
        raise PydanticCustomError("order_by", "must be one of {names}", {"names": ", ".join(ORDER_BY)})
    return str(value)


class ListMetersQuery(QueryParameters):
    """OpenMeter's list parameters: page (from 1), pageSize (all when absent), order ASC|DESC, orderBy
    key|name|aggregation|createdAt|updatedAt, includeDeleted (accepted; deleted meters are not kept)."""

    page: Annotated[int, BeforeValidator(bounded_integer(1, 1_000_000))] = 1
    page_size: Annotated[int | None, BeforeValidator(bounded_integer(1, MAX_PAGE_SIZE))] = Field(
        None, alias="pageSize")
    order: SortOrder = "ASC"
    order_by: Annotated[str, BeforeValidator(_order_by)] = Field("key", alias="orderBy")
    include_deleted: QueryBool = Field(False, alias="includeDeleted")

    @property
    def descending(self) -> bool:
        return self.order == "DESC"

    def apply(self, meters: Iterable[Meter]) -> list[Meter]:
        ordered = sorted(meters, key=ORDER_BY[self.order_by], reverse=self.descending)
        if self.page_size is None:
            return ordered if self.page == 1 else []
        start = (self.page - 1) * self.page_size
        return ordered[start:start + self.page_size]


def _not_found(id_or_slug: str) -> NotFound:
    return NotFound(f"there is no meter {id_or_slug!r}", [FieldError("idOrSlug", "no meter has this id or slug")])


def list_meters(store: MetersStore, namespace: str, query: ListMetersQuery) -> list[Meter]:
    return query.apply(store.meters(namespace))


def get_meter(store: MetersStore, namespace: str, id_or_slug: str) -> Meter:
    stored = store.find(namespace, id_or_slug)
    if stored is None:
        raise _not_found(id_or_slug)
    return stored.meter


def create_meter(store: MetersStore, namespace: str, definition: Meter, now_ms: int,
                 max_meters: int | None = None) -> Meter:
    """Store a new meter; 409 if its slug is taken, 400 beyond `max_meters` in the namespace. Its backfill
    starts out pending."""
    if max_meters is not None and len(store.meters(namespace)) >= max_meters:
        raise QuotaExceeded(f"namespace {namespace} has {max_meters} meters, as many as it may have "
                            "(METERLINE_MAX_METERS); delete one first", [FieldError("slug", "one meter too many")])
    meter = new_meter(definition, new_ulid(), now_ms)
    if not store.create(namespace, meter):
        raise Conflict(f"a meter with slug {meter.slug!r} already exists",
                       [FieldError("slug", "is already taken by another meter")])
    meter_source.invalidate(namespace)
    return meter


def update_meter(store: MetersStore, namespace: str, id_or_slug: str, changes: Mapping[str, Any],
                 now_ms: int) -> Meter:
    """Apply a PUT body (see meterline.domain.meters.updated_meter for what it may change)."""
    for _ in range(UPDATE_ATTEMPTS):
        stored = store.find(namespace, id_or_slug)
        if stored is None:
            raise _not_found(id_or_slug)
        meter = updated_meter(stored.meter, changes, now_ms)
        if store.replace(namespace, meter, stored.version):
            meter_source.invalidate(namespace)
            return meter
    raise Conflict(f"meter {id_or_slug!r} kept changing while it was being updated; retry")


def delete_meter(store: MetersStore, namespace: str, id_or_slug: str) -> None:
    stored = store.find(namespace, id_or_slug)
    if stored is None or not store.delete(namespace, stored.meter.slug, stored.meter.id):
        raise _not_found(id_or_slug)
    meter_source.invalidate(namespace)


def seed_meters(store: MetersStore, namespace: str, meters: Iterable[Meter], now_ms: int,
                events_exist: bool = True) -> list[str]:
    """Store declared meters (e.g. from a YAML file) whose slug the namespace does not have yet; meters
    already stored are left as they are. Returns the slugs created. With `events_exist=False` (an events
    table created just now) there is no history to count: the meters start with their backfill done."""
    created = []
    for definition in meters:
        meter = new_meter(definition, new_ulid(), now_ms)
        if not events_exist:
            meter = meter.model_copy(update={"backfill": BackfillStatus.model_validate({
                "status": BackfillState.COMPLETED, "startedAt": format_ms(now_ms), "completedAt": format_ms(now_ms),
                "eventsScanned": 0})})
        if store.create(namespace, meter):
            created.append(definition.slug)
    if created:
        meter_source.invalidate(namespace)
    return created
