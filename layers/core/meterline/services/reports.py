"""Managing usage export reports: GET/POST /api/v1/reports, GET/PUT/DELETE /api/v1/reports/{slug},
rotating a report's signing secret, requesting a manual run and listing runs.

A report and its EventBridge schedule change together: the report item is written first (conditional,
so a taken slug changes nothing), then the schedule; if the schedule call fails, a create is undone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import orjson
from pydantic import BeforeValidator, Field, model_validator

from meterline.aws.queues import ExportQueues
from meterline.aws.schedules import ReportSchedules
from meterline.aws.signing_secrets import SigningSecrets
from meterline.domain.exports import ExportRequest, Run, RunPhase, Trigger
from meterline.domain.meters import Meter
from meterline.domain.reports import REDACTED, Report, check_against_meter, report_definition
from meterline.domain.timeutil import DAY_MS, HOUR_MS, floor_to, format_ms
from meterline.domain.validation import EpochMs, QueryParameters, bounded_integer, invalid
from meterline.errors import Conflict, FieldError, InvalidInput, NotFound, QuotaExceeded, TooManyRequests
from meterline.services.meters import new_ulid
from meterline.settings import ExportSettings, Quotas, export_settings, quotas
from meterline.storage.meters_store import MetersStore
from meterline.storage.reports_store import ReportsStore, StoredReport
from meterline.webhooks import EndpointPolicy, new_signing_secret

UPDATE_ATTEMPTS = 5
ROTATION_GRACE_MS = 24 * 3_600_000
MAX_RUNS_PAGE = 100
DEFAULT_RUNS_PAGE = 20
MAX_MANUAL_SPAN_MS = 400 * DAY_MS


@dataclass
class ReportsContext:
    """What report management touches; the handlers build it once per process, tests inject fakes."""

    reports: ReportsStore
    meters: MetersStore
    secrets: SigningSecrets = field(default_factory=SigningSecrets)
    schedules: ReportSchedules = field(default_factory=ReportSchedules)
    queues: ExportQueues = field(default_factory=ExportQueues)
    endpoint_policy: EndpointPolicy = field(default_factory=EndpointPolicy.from_env)
    settings: ExportSettings = field(default_factory=export_settings)
    quotas: Quotas = field(default_factory=quotas)


def _not_found(slug: str) -> NotFound:
    return NotFound(f"there is no report {slug!r}", [FieldError("slug", "no report has this slug")])


def _stored(ctx: ReportsContext, namespace: str, slug: str) -> StoredReport:
    stored = ctx.reports.get(namespace, slug)
    if stored is None:
        raise _not_found(slug)
    return stored


def report_meter(ctx: ReportsContext, namespace: str, report: Report) -> Meter:
    meter = ctx.meters.find(namespace, report.meter_id_or_slug)
    if meter is None:
        raise NotFound(f"there is no meter {report.meter_id_or_slug!r}",
                       [FieldError("meterIdOrSlug", "no meter has this id or slug")])
    return meter.meter


def _check(ctx: ReportsContext, namespace: str, report: Report) -> None:
    """What a definition cannot check by itself: the endpoint policy and the meter's groupBy keys."""
    ctx.endpoint_policy.check_url(report.endpoint.url)
    check_against_meter(report, report_meter(ctx, namespace, report))


def create_report(ctx: ReportsContext, namespace: str, definition: Report, now_ms: int) -> dict[str, Any]:
    """Store a report and create its schedule. The response is the only place its signing secret shows.
    (meterline.domain.reports.report_definition validates a request body into `definition`.)"""
    _check(ctx, namespace, definition)
    if len(ctx.reports.list(namespace)) >= ctx.quotas.reports:
        raise QuotaExceeded(f"namespace {namespace} has {ctx.quotas.reports} reports, as many as it may have "
                            "(METERLINE_MAX_REPORTS); delete one first", [FieldError("slug", "one report too many")])
    now = format_ms(now_ms)
    report_id = new_ulid()
    report = definition.model_copy(update={"id": report_id, "created_at": now, "updated_at": now})
    secret = new_signing_secret()
    headers = _encrypted_headers(ctx, namespace, report_id, report.endpoint.headers)
    if not ctx.reports.create(namespace, report, ctx.secrets.encrypt(namespace, report_id, secret), headers):
        raise Conflict(f"a report with slug {report.slug!r} already exists",
                       [FieldError("slug", "is already taken by another report")])
    try:
        ctx.schedules.put(namespace, report, now_ms, ctx.settings.settle_ms, new=True)
    except Exception:
        ctx.reports.delete(namespace, report.slug, report_id)
        raise
    return {**report.to_api(), "signingSecret": secret}


def list_reports(ctx: ReportsContext, namespace: str) -> list[Report]:
    return [stored.report for stored in ctx.reports.list(namespace)]


def get_report(ctx: ReportsContext, namespace: str, slug: str) -> Report:
    return _stored(ctx, namespace, slug).report


def update_report(ctx: ReportsContext, namespace: str, slug: str, body: Mapping[str, Any], now_ms: int) -> Report:
    """Replace a report's definition (everything but its slug, id and secret) and its schedule. A missing
    report is 404 whatever the body holds."""
    for _ in range(UPDATE_ATTEMPTS):
        stored = _stored(ctx, namespace, slug)
        definition = report_definition(body, slug=slug)
        _check(ctx, namespace, definition)
        report = definition.model_copy(update={"id": stored.report.id, "created_at": stored.report.created_at,
                                               "updated_at": format_ms(now_ms)})
        wanted = definition.endpoint.headers
        if REDACTED in wanted.values():  # sent back as GET showed it: keep those values
            current = endpoint_headers(ctx.secrets, namespace, stored)
            unknown = [name for name, value in wanted.items() if value == REDACTED and name not in current]
            if unknown:
                raise InvalidInput(f"header {unknown[0]!r} has no stored value to keep",
                                   [FieldError(f"endpoint.headers.{name}", "has no stored value to keep; send it")
                                    for name in unknown])
            wanted = {name: current[name] if value == REDACTED else value for name, value in wanted.items()}
        headers = _encrypted_headers(ctx, namespace, stored.id, wanted)
        if ctx.reports.replace(namespace, stored, report, headers=headers):
            ctx.schedules.put(namespace, report, now_ms, ctx.settings.settle_ms, new=False)
            return report
    raise Conflict(f"report {slug!r} kept changing while it was being updated; retry")


def _encrypted_headers(ctx: ReportsContext, namespace: str, report_id: str, headers: Mapping[str, str]
                       ) -> bytes | None:
    return ctx.secrets.encrypt(namespace, report_id, orjson.dumps(dict(headers)).decode()) if headers else None


def endpoint_headers(secrets: SigningSecrets, namespace: str, stored: StoredReport) -> dict[str, str]:
    """The endpoint's headers in the clear (to send webhooks with); a report stored before headers were
    encrypted keeps them in its definition."""
    if stored.headers is None:
        return {name: value for name, value in stored.report.endpoint.headers.items() if value != REDACTED}
    decrypted: dict[str, str] = orjson.loads(secrets.decrypt(namespace, stored.id, stored.headers))
    return decrypted


def delete_report(ctx: ReportsContext, namespace: str, slug: str) -> None:
    """Delete the schedule first: a schedule without its report would fire into nothing."""
    stored = _stored(ctx, namespace, slug)
    ctx.schedules.delete(namespace, slug)
    if not ctx.reports.delete(namespace, slug, stored.id):
        raise _not_found(slug)


def restore_schedules(ctx: ReportsContext, now_ms: int) -> int:
    """Put every stored report's schedule (again): for a schedule group that lost them, as the local
    stack's in-process Scheduler does on each restart. Missed windows are caught up by the exporter."""
    reports = ctx.reports.all_reports()
    for namespace, stored in reports:
        ctx.schedules.put(namespace, stored.report, now_ms, ctx.settings.settle_ms, new=True)
    return len(reports)


def rotate_secret(ctx: ReportsContext, namespace: str, slug: str, now_ms: int) -> dict[str, Any]:
    """Issue a new signing secret. For ROTATION_GRACE_MS, deliveries carry signatures with both the new and
    the previous secret, so receivers can switch without rejecting anything."""
    for _ in range(UPDATE_ATTEMPTS):
        stored = _stored(ctx, namespace, slug)
        secret = new_signing_secret()
        report = stored.report.model_copy(update={"updated_at": format_ms(now_ms)})
        until = now_ms + ROTATION_GRACE_MS
        if ctx.reports.replace(namespace, stored, report, ctx.secrets.encrypt(namespace, stored.id, secret), until):
            return {**report.to_api(), "signingSecret": secret, "previousSecretExpiresAt": format_ms(until)}
    raise Conflict(f"report {slug!r} kept changing while its secret was being rotated; retry")


class RunRequest(QueryParameters):
    """The body of POST /api/v1/reports/{slug}/runs: a manual run of [from, to)."""

    from_ms: EpochMs = Field(alias="from")
    to_ms: EpochMs = Field(alias="to")

    @model_validator(mode="after")
    def _span(self) -> RunRequest:
        if self.from_ms >= self.to_ms:
            errors = [FieldError("to", "must be after from")]
        elif self.to_ms - self.from_ms > MAX_MANUAL_SPAN_MS:
            errors = [FieldError("to", "must be at most 400 days after from")]
        else:
            return self
        raise invalid(errors, "invalid run request: ")


class ListRunsQuery(QueryParameters):
    limit: Annotated[int, BeforeValidator(bounded_integer(1, MAX_RUNS_PAGE))] = DEFAULT_RUNS_PAGE


def request_run(ctx: ReportsContext, namespace: str, slug: str, request: RunRequest, now_ms: int) -> Run:
    """A manual run, recorded as pending and queued for the exporter."""
    start, end = request.from_ms, request.to_ms
    report = _stored(ctx, namespace, slug).report
    assert report.id is not None
    hour = floor_to(now_ms, HOUR_MS)
    if not ctx.reports.take_manual_run(namespace, hour, ctx.quotas.manual_runs_per_hour):
        wait_s = (hour + HOUR_MS - now_ms) // 1000 + 1
        raise TooManyRequests(f"namespace {namespace} requested {ctx.quotas.manual_runs_per_hour} manual runs this "
                              f"hour, as many as it may (METERLINE_MAX_MANUAL_RUNS_PER_HOUR); try again in {wait_s} s",
                              retry_after_s=wait_s)
    run = Run(id=new_ulid(), report_id=report.id, window_start_ms=start, window_end_ms=end,
              trigger=Trigger.MANUAL, phase=RunPhase.PENDING, requested_ms=now_ms)
    ctx.reports.create_run(namespace, run)
    ctx.queues.request_export(ExportRequest(namespace=namespace, report=slug, report_id=report.id, run_id=run.id))
    return run


def list_runs(ctx: ReportsContext, namespace: str, slug: str, query: ListRunsQuery) -> list[Run]:
    report = _stored(ctx, namespace, slug).report
    assert report.id is not None
    return ctx.reports.list_runs(namespace, report.id, query.limit)
