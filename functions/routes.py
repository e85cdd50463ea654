"""Which Lambda serves what. The CDK api construct and the local gateway both route from this,
so a route cannot exist in one and not the other."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HttpFunction:
    name: str  # folder under functions/, and the construct id stem
    routes: tuple[tuple[str, str], ...]  # (method, path template)
    description: str

    @property
    def module(self) -> str:
        return f"functions.{self.name}.handler"


INGEST = HttpFunction(
    name="ingest",
    routes=(("POST", "/api/v1/events"),),
    description="Validates and stores usage events exactly once",
)
API = HttpFunction(
    name="api",
    routes=(
        ("GET", "/api/v1/events"),
        ("GET", "/api/v1/meters"),
        ("POST", "/api/v1/meters"),
        ("GET", "/api/v1/meters/{idOrSlug}"),
        ("PUT", "/api/v1/meters/{idOrSlug}"),
        ("DELETE", "/api/v1/meters/{idOrSlug}"),
        ("GET", "/api/v1/meters/{idOrSlug}/query"),
        ("POST", "/api/v1/meters/{idOrSlug}/query"),
        ("GET", "/api/v1/meters/{idOrSlug}/subjects"),
        ("POST", "/api/v1/portal/tokens"),
        ("GET", "/api/v1/portal/meters/{meterSlug}/query"),
    ),
    description="Lists events and manages meters and answers usage queries",
)
REPORTS = HttpFunction(
    name="reports",
    routes=(
        ("GET", "/api/v1/reports"),
        ("POST", "/api/v1/reports"),
        ("GET", "/api/v1/reports/{slug}"),
        ("PUT", "/api/v1/reports/{slug}"),
        ("DELETE", "/api/v1/reports/{slug}"),
        ("POST", "/api/v1/reports/{slug}/rotate-secret"),
        ("GET", "/api/v1/reports/{slug}/runs"),
        ("POST", "/api/v1/reports/{slug}/runs"),
    ),
    description="Manages usage export reports, their schedules and signing secrets, and their runs",
)
ENTITLEMENTS = HttpFunction(
    name="entitlements",
    routes=(
        ("GET", "/api/v1/features"),
        ("POST", "/api/v1/features"),
        ("GET", "/api/v1/features/{featureId}"),
        ("DELETE", "/api/v1/features/{featureId}"),
        ("GET", "/api/v1/subjects"),
        ("POST", "/api/v1/subjects"),
        ("GET", "/api/v1/subjects/{subjectIdOrKey}"),
        ("DELETE", "/api/v1/subjects/{subjectIdOrKey}"),
        ("GET", "/api/v1/subjects/{subjectIdOrKey}/entitlements"),
        ("POST", "/api/v1/subjects/{subjectIdOrKey}/entitlements"),
        ("GET", "/api/v1/subjects/{subjectIdOrKey}/entitlements/{entitlementId}"),
        ("DELETE", "/api/v1/subjects/{subjectIdOrKey}/entitlements/{entitlementId}"),
        ("PUT", "/api/v1/subjects/{subjectIdOrKey}/entitlements/{entitlementIdOrFeatureKey}/override"),
        ("GET", "/api/v1/subjects/{subjectIdOrKey}/entitlements/{entitlementIdOrFeatureKey}/value"),
        ("GET", "/api/v1/subjects/{subjectIdOrKey}/entitlements/{entitlementId}/history"),
        ("POST", "/api/v1/subjects/{subjectIdOrKey}/entitlements/{entitlementId}/reset"),
        ("GET", "/api/v1/subjects/{subjectIdOrKey}/entitlements/{entitlementIdOrFeatureKey}/grants"),
        ("POST", "/api/v1/subjects/{subjectIdOrKey}/entitlements/{entitlementIdOrFeatureKey}/grants"),
        ("GET", "/api/v1/entitlements"),
        ("GET", "/api/v1/entitlements/{entitlementId}"),
        ("GET", "/api/v1/grants"),
        ("DELETE", "/api/v1/grants/{grantId}"),
        ("GET", "/api/v1/customers/{customerIdOrKey}/entitlements/{featureKey}/value"),
        ("GET", "/api/v1/customers/{customerIdOrKey}/access"),
    ),
    description="Manages features, subjects, entitlements and grants; answers entitlement values",
)
HTTP_FUNCTIONS = (INGEST, API, REPORTS, ENTITLEMENTS)

# The API-key authorizer of every route (auth=api-key): who an `Authorization: Bearer om_...` key is.
AUTHORIZER = HttpFunction(
    name="authorizer",
    routes=(),
    description="Resolves API keys to the caller's namespace and scope",
)

# The events-table stream consumer.
PROCESSOR_MODULE = "functions.processor.handler"

# Scheduled every minute: folds counting rows into quarter-hour and day slots.
COMPACTOR_MODULE = "functions.compactor.handler"

# Scheduled every minute: moves pending meter backfills forward (recounts through the event time index).
BACKFILL_MODULE = "functions.backfill.handler"

# Usage exports: invoked by each report's EventBridge schedule (and by the export-request queue for
# manual runs); queries the report's window and enqueues one webhook delivery per subject.
EXPORTER_MODULE = "functions.exporter.handler"

# Consumes the delivery queue: signs and POSTs each usage webhook, retries with backoff.
SENDER_MODULE = "functions.sender.handler"
