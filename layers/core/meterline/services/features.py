"""Features: POST/GET /api/v1/features, GET/DELETE /api/v1/features/{idOrKey}."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError

from meterline.domain.features import Feature, check_against_meter
from meterline.domain.meters import is_ulid
from meterline.domain.paging import ListParameters, csv_values
from meterline.domain.timeutil import format_ms
from meterline.domain.validation import QueryBool
from meterline.errors import Conflict, FieldError, NotFound
from meterline.services.meters import new_ulid
from meterline.storage.features_store import FeaturesStore
from meterline.storage.meters_store import MetersStore

ORDER_BY = {
    "id": lambda f: (f.id,),
    "key": lambda f: (f.key, f.id),
    "name": lambda f: (f.name, f.id),
    "createdAt": lambda f: (f.created_at or "", f.id),
    "updatedAt": lambda f: (f.updated_at or "", f.id),
}


def _order_by(value: Any) -> str:
    if value not in ORDER_BY:
        raise PydanticCustomError("order_by", "must be one of {names}", {"names": ", ".join(ORDER_BY)})
    return str(value)


class ListFeaturesQuery(ListParameters):
    meter_slug: Annotated[list[str] | None, BeforeValidator(csv_values)] = Field(None, alias="meterSlug")
    include_archived: QueryBool = Field(False, alias="includeArchived")
    order_by: Annotated[str, BeforeValidator(_order_by)] = Field("createdAt", alias="orderBy")


def _not_found(id_or_key: str) -> NotFound:
    return NotFound(f"there is no feature {id_or_key!r}", [FieldError("featureId", "no active feature has this id "
                                                                                   "or key")])


def create_feature(features: FeaturesStore, meters: MetersStore, namespace: str, definition: Feature,
                   now_ms: int) -> Feature:
    """404 for an unknown meter, 400 for a meter that is not SUM or COUNT or filters it cannot apply, 409
    when an active feature has the key (naming it)."""
    if definition.meter_slug is not None:
        stored = meters.find(namespace, definition.meter_slug)
        if stored is None or stored.meter.slug != definition.meter_slug:
            raise NotFound(f"there is no meter {definition.meter_slug!r}",
                           [FieldError("meterSlug", "no meter has this slug")])
        check_against_meter(definition, stored.meter)
    now = format_ms(now_ms)
    feature = definition.model_copy(update={"id": new_ulid(), "created_at": now, "updated_at": now})
    holder = features.create(namespace, feature)
    if holder is not None:
        raise Conflict(f"an active feature with key {feature.key!r} exists", [FieldError("key", "is taken")],
                       conflicting_id=holder)
    return feature


def get_feature(features: FeaturesStore, namespace: str, id_or_key: str) -> Feature:
    """An active feature by id or key; an archived one is 404."""
    feature_id = id_or_key if is_ulid(id_or_key) else features.active_id(namespace, id_or_key)
    feature = features.get(namespace, feature_id) if feature_id else None
    if feature is None or feature.archived:
        raise _not_found(id_or_key)
    return feature


def list_features(features: FeaturesStore, namespace: str, query: ListFeaturesQuery) -> Any:
    found = [f for f in features.list(namespace)
             if (query.include_archived or not f.archived)
             and (query.meter_slug is None or f.meter_slug in query.meter_slug)]
    return query.answer(found, ORDER_BY[query.order_by], Feature.to_api)


def archive_feature(features: FeaturesStore, namespace: str, id_or_key: str, now_ms: int) -> None:
    feature = get_feature(features, namespace, id_or_key)
    now = format_ms(now_ms)
    if not features.archive(namespace, feature, feature.model_copy(update={"archived_at": now, "updated_at": now})):
        raise _not_found(id_or_key)
