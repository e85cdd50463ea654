"""Usage export reports over HTTP: GET/POST /api/v1/reports, GET/PUT/DELETE /api/v1/reports/{slug},
POST /api/v1/reports/{slug}/rotate-secret, and a report's runs (GET lists them, POST requests one)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from meterline.bootstrap import reports_context
from meterline.domain.reports import report_definition
from meterline.domain.timeutil import now_ms
from meterline.http.requests import body_model, json_object, query_model
from meterline.http.resolver import build_resolver, namespace_of
from meterline.http.responses import json_response
from meterline.observability import http_handler
from meterline.services import reports

app = build_resolver()


def _namespace() -> str:
    return namespace_of(app)


@app.get("/api/v1/reports")
def list_reports() -> Response:
    return json_response([r.to_api() for r in reports.list_reports(reports_context(), _namespace())])


@app.post("/api/v1/reports")
def create_report() -> Response:
    definition = report_definition(json_object(app.current_event, "a report"))
    return json_response(reports.create_report(reports_context(), _namespace(), definition, now_ms()), status=201)


@app.get("/api/v1/reports/<slug>")
def get_report(slug: str) -> Response:
    return json_response(reports.get_report(reports_context(), _namespace(), slug).to_api())


@app.put("/api/v1/reports/<slug>")
def update_report(slug: str) -> Response:
    body = json_object(app.current_event, "a report")
    return json_response(reports.update_report(reports_context(), _namespace(), slug, body, now_ms()).to_api())


@app.delete("/api/v1/reports/<slug>")
def delete_report(slug: str) -> Response:
    reports.delete_report(reports_context(), _namespace(), slug)
    return Response(status_code=204)


@app.post("/api/v1/reports/<slug>/rotate-secret")
def rotate_secret(slug: str) -> Response:
    return json_response(reports.rotate_secret(reports_context(), _namespace(), slug, now_ms()))


@app.get("/api/v1/reports/<slug>/runs")
def list_runs(slug: str) -> Response:
    query = query_model(app.current_event, reports.ListRunsQuery)
    return json_response([run.to_api() for run in reports.list_runs(reports_context(), _namespace(), slug, query)])


@app.post("/api/v1/reports/<slug>/runs")
def request_run(slug: str) -> Response:
    request = body_model(app.current_event, reports.RunRequest, "a run request", prefix="invalid run request: ")
    return json_response(reports.request_run(reports_context(), _namespace(), slug, request, now_ms()).to_api(),
                         status=202)


@http_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
