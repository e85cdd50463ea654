"""Features: what entitlements grant access to. A feature with a meter (`meterSlug`, SUM or COUNT, and
optional exact `meterGroupByFilters`) is metered; one without is for static and boolean entitlements.
Features are immutable; deleting one archives it (new entitlements for it are refused, existing ones
keep working), and an archived feature's key may be taken again."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from meterline.domain.meters import ULID_PATTERN, Aggregation, Meter, is_ulid
from meterline.domain.validation import field_errors, invalid
from meterline.errors import FieldError, InvalidInput

# OpenMeter's key pattern, with dashes as its v1 servers accepted them (gateway examples use "api-request").
FEATURE_KEY_PATTERN = r"^[a-z0-9]+(?:[_-][a-z0-9]+)*$"
MAX_KEY_LENGTH = 64
METERED_AGGREGATIONS = (Aggregation.SUM, Aggregation.COUNT)
READ_ONLY_FIELDS = ("id", "createdAt", "updatedAt", "archivedAt", "deletedAt")
_KEY = re.compile(FEATURE_KEY_PATTERN)


class Feature(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    key: str = Field(pattern=FEATURE_KEY_PATTERN, max_length=MAX_KEY_LENGTH)
    name: str = Field(min_length=1, max_length=256)
    metadata: dict[str, str] | None = None
    meter_slug: str | None = Field(None, alias="meterSlug", min_length=1)
    meter_group_by_filters: dict[str, str] | None = Field(None, alias="meterGroupByFilters")
    id: str | None = Field(default=None, pattern=ULID_PATTERN.pattern)
    created_at: str | None = Field(default=None, alias="createdAt")
    updated_at: str | None = Field(default=None, alias="updatedAt")
    archived_at: str | None = Field(default=None, alias="archivedAt")

    @field_validator("key")
    @classmethod
    def _not_an_id(cls, key: str) -> str:
        if is_ulid(key):
            raise ValueError("must not be a valid ULID (ids and keys share the path of GET /features/{idOrKey})")
        return key

    @property
    def archived(self) -> bool:
        return self.archived_at is not None

    def to_api(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


_ALIASES = {name: info.alias or name for name, info in Feature.model_fields.items()}


def feature_definition(raw: Any) -> Feature:
    """A feature from a create request's body; InvalidInput naming every offending field."""
    errors = [FieldError(key, "is read-only; Meterline sets it") for key in READ_ONLY_FIELDS
              if isinstance(raw, dict) and key in raw]
    body = {k: v for k, v in raw.items() if k not in READ_ONLY_FIELDS} if isinstance(raw, dict) else raw
    try:
        feature = Feature.model_validate(body, by_alias=True, by_name=False)
    except ValidationError as exc:
        errors += field_errors(exc, aliases=_ALIASES, what="a feature", root="feature")
        raise invalid(errors, "invalid feature: ") from None
    if errors:
        raise invalid(errors, "invalid feature: ")
    if feature.meter_group_by_filters and feature.meter_slug is None:
        raise InvalidInput("meterGroupByFilters needs a meterSlug",
                           [FieldError("meterGroupByFilters", "needs a meterSlug")])
    return feature


def check_against_meter(feature: Feature, meter: Meter) -> None:
    """A metered feature's meter must SUM or COUNT, and its filters name the meter's groupBy keys."""
    errors = []
    if meter.aggregation not in METERED_AGGREGATIONS:
        errors.append(FieldError("meterSlug", f"meter {meter.slug!r} aggregates with {meter.aggregation}; a "
                                              "feature's meter must SUM or COUNT"))
    for key in feature.meter_group_by_filters or {}:
        if key not in meter.group_by:
            known = ", ".join(sorted(meter.group_by)) or "none"
            errors.append(FieldError(f"meterGroupByFilters.{key}",
                                     f"is not a groupBy key of meter {meter.slug!r} (it has: {known})"))
    if errors:
        raise invalid(errors, "invalid feature: ")
