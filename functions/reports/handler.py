"""Usage export reports over HTTP: GET/POST /api/v1/reports, GET/PUT/DELETE /api/v1/reports/{slug},
POST /api/v1/reports/{slug}/rotate-secret, and a report's runs (GET lists them, POST requests one)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from meterline.bootstrap import reports_context
from meterline.domain.timeutil import now_ms
from meterline.http.resolver import build_resolver, json_response, namespace_of, request_body
from meterline.services import reports

app = build_resolver()


def _namespace() -> str:
    return namespace_of(app.current_event.raw_event)


def _content_type() -> str | None:
    return app.current_event.headers.get("content-type")


@app.get("/api/v1/reports")
def list_reports() -> Response:
    return json_response([r.to_api() for r in reports.list_reports(reports_context(), _namespace())])


@app.post("/api/v1/reports")
def create_report() -> Response:
    created = reports.create_report(reports_context(), _namespace(), request_body(app), _content_type(), now_ms())
    return json_response(created, status=201)


@app.get("/api/v1/reports/<slug>")
def get_report(slug: str) -> Response:
    return json_response(reports.get_report(reports_context(), _namespace(), slug).to_api())


@app.put("/api/v1/reports/<slug>")
def update_report(slug: str) -> Response:
    report = reports.update_report(reports_context(), _namespace(), slug, request_body(app), _content_type(), now_ms())
    return json_response(report.to_api())


@app.delete("/api/v1/reports/<slug>")
def delete_report(slug: str) -> Response:
    reports.delete_report(reports_context(), _namespace(), slug)
    return Response(status_code=204)


@app.post("/api/v1/reports/<slug>/rotate-secret")
def rotate_secret(slug: str) -> Response:
    return json_response(reports.rotate_secret(reports_context(), _namespace(), slug, now_ms()))


@app.get("/api/v1/reports/<slug>/runs")
def list_runs(slug: str) -> Response:
    params = app.current_event.query_string_parameters or {}
    return json_response([run.to_api() for run in reports.list_runs(reports_context(), _namespace(), slug, params)])


@app.post("/api/v1/reports/<slug>/runs")
def request_run(slug: str) -> Response:
    run = reports.request_run(reports_context(), _namespace(), slug, request_body(app), _content_type(), now_ms())
    return json_response(run.to_api(), status=202)


def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
