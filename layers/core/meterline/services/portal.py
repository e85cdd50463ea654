"""Portal tokens: POST /api/v1/portal/tokens makes one (an admin's call); GET
/api/v1/portal/meters/{meterSlug}/query answers the token's subject's usage of an allowed meter."""

from __future__ import annotations

from typing import Any

from meterline.domain import portal
from meterline.domain.access import Caller
from meterline.domain.meters import Meter
from meterline.domain.query_plan import UsageQuery
from meterline.errors import FieldError, NotFound, Unauthenticated
from meterline.services.usage_query import UsageQueryParameters, query_usage
from meterline.settings import QueryLimits
from meterline.storage.meters_store import MetersStore
from meterline.storage.usage_store import UsageStore


def create_token(meters: MetersStore, secret: bytes, namespace: str, request: portal.PortalTokenRequest,
                 now_ms: int) -> dict[str, Any]:
    """A token for the request's subject; every allowed meter slug must name a meter (404 otherwise)."""
    known = {meter.slug for meter in meters.meters(namespace)}
    missing = [slug for slug in request.allowed_meter_slugs or [] if slug not in known]
    if missing:
        raise NotFound(f"there is no meter {missing[0]!r}",
                       [FieldError("allowedMeterSlugs", f"{slug!r} names no meter") for slug in missing])
    token, signed = portal.issue(request, namespace, now_ms, secret)
    return token.to_api(signed)


def query(meters: MetersStore, store: UsageStore, caller: Caller, meter_slug: str,
          parameters: UsageQueryParameters, now_ms: int, default_range_ms: int, limits: QueryLimits
          ) -> tuple[Meter, UsageQuery, list[dict[str, Any]]]:
    """The token's subject's usage of one meter: the `subject` filter is always the token's."""
    token = caller.portal
    assert token is not None, "the portal route is authorized by a portal token"
    if not token.allows(meter_slug):
        raise Unauthenticated(f"this portal token is not good for meter {meter_slug!r}")
    forced = parameters.model_copy(update={"subject": [token.subject]})
    return query_usage(meters, store, caller.namespace, meter_slug, forced, now_ms, default_range_ms, limits)
