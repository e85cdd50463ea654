"""The reports API through the real handler against moto (catalog table, KMS, EventBridge Scheduler,
SQS): create/list/get/update/delete with their schedules, the signing secret shown once and stored
encrypted, rotation, manual run requests, and every refused request leaving nothing behind."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime
from typing import Any

import boto3
import orjson
import pytest

from functions.reports import handler as reports
from meterline.storage.meters_store import PENDING_BACKFILLS
from tests.conftest import scan_all
from tests.integration.http import call

CATALOG = os.environ["CATALOG_TABLE"]
JSON = "application/json"
REPORT = {
    "slug": "daily_tokens",
    "meterIdOrSlug": "tokens_total",
    "type": "webhook",
    "schedule": {"interval": "1d", "startAt": "2023-01-01T00:00:00.000Z"},
    "query": {"groupBy": ["model"]},
    "endpoint": {"url": "https://hooks.example.com/usage", "headers": {"Authorization": "Bearer abc"}},
    "filter": {"usage": {"$gt": 100}, "subject": {"$in": ["customer-1", "customer-2"]}},
}


@pytest.fixture(autouse=True)
def _exports(exports_aws: Any) -> Any:
    return exports_aws


def scheduler() -> Any:
    return boto3.client("scheduler", region_name="us-east-1")


def schedules() -> list[dict[str, Any]]:
    names = [s["Name"] for s in scheduler().list_schedules(GroupName="meterline-reports")["Schedules"]]
    return [scheduler().get_schedule(Name=n, GroupName="meterline-reports") for n in names]


def create(body: dict[str, Any] | None = None, **overrides: Any) -> Any:
    return call(reports, "POST", "/api/v1/reports", body={**(body or REPORT), **overrides}, content_type=JSON)


def test_create_returns_the_secret_once_and_schedules_the_report() -> None:
    reply = create()
    assert reply.status == 201, reply.body
    created = reply.json()
    secret = created.pop("signingSecret")
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    assert created["slug"] == "daily_tokens" and len(created["id"]) == 26
    assert created["filter"] == REPORT["filter"]
    assert created["endpoint"] == {"url": REPORT["endpoint"]["url"], "headers": {"Authorization": "<redacted>"}}
    assert created["query"] == {"groupBy": ["model"], "windowTimeZone": "UTC"}

    fetched = call(reports, "GET", "/api/v1/reports/daily_tokens").json()
    assert "signingSecret" not in fetched and fetched == created
    assert call(reports, "GET", "/api/v1/reports").json() == [created]

    # stored encrypted: neither the secret nor the receiver's credentials appear in the table
    items = scan_all(boto3.client("dynamodb", region_name="us-east-1"), CATALOG)
    stored = orjson.dumps([{k: str(v) for k, v in item.items()} for item in items])
    assert secret.encode() not in stored and b"Bearer abc" not in stored

    [schedule] = schedules()
    assert schedule["Name"] == "default.daily_tokens"
    assert schedule["ScheduleExpression"] == "rate(1 day)"
    assert orjson.loads(schedule["Target"]["Input"]) == {"namespace": "default", "report": "daily_tokens",
                                                         "reportId": created["id"]}
    assert schedule["Target"]["Arn"].endswith(":function:exporter")
    # first firing: settle (60 s) after the next daily boundary of startAt
    start = schedule["StartDate"].astimezone(UTC)
    assert (start.hour, start.minute, start.second) == (0, 1, 0) and start > datetime.now(UTC)


def test_update_replaces_definition_and_schedule_but_not_slug_or_secret() -> None:
    created = create().json()
    changed = {**REPORT, "schedule": {"interval": "15m", "startAt": "2023-01-01T00:00:00Z"},
               "query": {"groupBy": ["type"], "windowTimeZone": "Europe/Berlin"}}
    reply = call(reports, "PUT", "/api/v1/reports/daily_tokens", body=changed, content_type=JSON)
    assert reply.status == 200, reply.body
    assert reply.json()["schedule"]["interval"] == "15m" and reply.json()["id"] == created["id"]
    assert "signingSecret" not in reply.json()
    assert [s["ScheduleExpression"] for s in schedules()] == ["rate(15 minutes)"]

    renamed = call(reports, "PUT", "/api/v1/reports/daily_tokens", body={**REPORT, "slug": "other"}, content_type=JSON)
    assert renamed.status == 400 and renamed.json()["errors"][0]["field"] == "slug"
    missing = call(reports, "PUT", "/api/v1/reports/nope", body=REPORT, content_type=JSON)
    assert missing.status == 404


def test_delete_removes_report_and_schedule() -> None:
    create()
    assert call(reports, "DELETE", "/api/v1/reports/daily_tokens").status == 204
    assert schedules() == []
    assert call(reports, "GET", "/api/v1/reports/daily_tokens").status == 404
    assert call(reports, "DELETE", "/api/v1/reports/daily_tokens").status == 404
    assert create().status == 201  # the slug is free again


def test_rotate_secret_issues_a_new_one() -> None:
    first = create().json()["signingSecret"]
    reply = call(reports, "POST", "/api/v1/reports/daily_tokens/rotate-secret")
    assert reply.status == 200
    second = reply.json()["signingSecret"]
    assert second.startswith("whsec_") and second != first
    assert call(reports, "POST", "/api/v1/reports/nope/rotate-secret").status == 404


def test_manual_run_is_recorded_and_queued(exports_aws: Any) -> None:
    report = create().json()
    reply = call(reports, "POST", "/api/v1/reports/daily_tokens/runs", content_type=JSON,
                 body={"from": "2024-01-01T00:00:00Z", "to": "2024-01-02T00:00:00Z"})
    assert reply.status == 202, reply.body
    run = reply.json()
    assert (run["status"], run["trigger"], run["windowStart"], run["windowEnd"]) == (
        "pending", "manual", "2024-01-01T00:00:00.000Z", "2024-01-02T00:00:00.000Z")
    messages = exports_aws["sqs"].receive_message(QueueUrl=exports_aws["queues"]["export-requests"])["Messages"]
    assert [orjson.loads(m["Body"]) for m in messages] == [
        {"namespace": "default", "report": "daily_tokens", "reportId": report["id"], "runId": run["id"]}]
    listed = call(reports, "GET", "/api/v1/reports/daily_tokens/runs").json()
    assert [r["id"] for r in listed] == [run["id"]] and listed[0]["deliveries"] == []


def _errors(reply: Any) -> list[str]:
    assert reply.content_type == "application/problem+json", reply.body
    return [e["field"] for e in reply.json().get("errors", [])]


@pytest.mark.parametrize(("overrides", "status", "field"), [
    ({"meterIdOrSlug": "no_such_meter"}, 404, "meterIdOrSlug"),
    ({"schedule": {"interval": "1w", "startAt": "2023-01-01T00:00:00Z"}}, 400, "schedule.interval"),
    ({"schedule": {"interval": "15s", "startAt": "2023-01-01T00:00:00Z"}}, 400, "schedule.interval"),
    ({"schedule": {"interval": "0m", "startAt": "2023-01-01T00:00:00Z"}}, 400, "schedule.interval"),
    ({"schedule": {"interval": "32d", "startAt": "2023-01-01T00:00:00Z"}}, 400, "schedule.interval"),
    ({"schedule": {"interval": "1h", "startAt": "yesterday"}}, 400, "schedule.startAt"),
    ({"schedule": {"interval": "1h"}}, 400, "schedule.startAt"),
    ({"endpoint": {"url": "http://hooks.example.com/usage"}}, 400, "endpoint.url"),
    ({"endpoint": {"url": "not a url"}}, 400, "endpoint.url"),
    ({"endpoint": {"url": "https://10.0.0.7/hook"}}, 400, "endpoint.url"),
    ({"endpoint": {"url": "https://169.254.169.254/latest/meta-data"}}, 400, "endpoint.url"),
    ({"endpoint": {"url": "https://hooks.example.com", "headers": {"webhook-id": "x"}}}, 400, "endpoint.headers"),
    ({"endpoint": {"url": "https://hooks.example.com", "headers": {"X-A": "a\r\nb"}}}, 400, "endpoint.headers"),
    ({"filter": {"usage": {"$regex": "1.*"}}}, 400, "filter.usage"),
    ({"filter": {"usage": {"$gt": "100"}}}, 400, "filter.usage"),
    ({"filter": {"usage": {"$in": 5}}}, 400, "filter.usage"),
    ({"filter": {"subject": {"$like": "cust%"}}}, 400, "filter.subject"),
    ({"filter": {"subject": {"$in": ["a", 1]}}}, 400, "filter.subject"),
    ({"filter": {"plan": {"$eq": "pro"}}}, 400, "filter.plan"),
    ({"query": {"groupBy": ["region"]}}, 400, "query.groupBy"),
    ({"query": {"windowTimeZone": "Mars/Olympus"}}, 400, "query.windowTimeZone"),
    ({"type": "email"}, 400, "type"),
    ({"slug": "Daily Tokens"}, 400, "slug"),
    ({"id": "01H98E5HHJ8K0AYXQKM3EKAVYG"}, 400, "id"),
    ({"signingSecret": "whsec_abc"}, 400, "signingSecret"),
    ({"colour": "blue"}, 400, "colour"),
])
def test_bad_definitions_are_refused_and_write_nothing(overrides: dict[str, Any], status: int, field: str) -> None:
    reply = create(**overrides)
    assert reply.status == status, reply.body
    assert field in _errors(reply)
    assert scan_all(boto3.client("dynamodb", region_name="us-east-1"), CATALOG) == [
        item for item in scan_all(boto3.client("dynamodb", region_name="us-east-1"), CATALOG)
        if item["pk"]["S"].endswith("#meter") or item["pk"]["S"] == PENDING_BACKFILLS]
    assert schedules() == []


def test_duplicate_slug_is_409_and_changes_nothing() -> None:
    first = create().json()
    reply = create(endpoint={"url": "https://other.example.com"})
    assert reply.status == 409 and _errors(reply) == ["slug"]
    assert call(reports, "GET", "/api/v1/reports/daily_tokens").json()["endpoint"] == first["endpoint"]
    assert len(schedules()) == 1


@pytest.mark.parametrize(("raw", "content_type", "status"), [
    (b"{", JSON, 400),
    (b"[]", JSON, 400),
    (orjson.dumps(REPORT), "text/plain", 415),
    (b'{"slug": "' + b"a" * 70_000 + b'"}', JSON, 413),
])
def test_malformed_bodies(raw: bytes, content_type: str, status: int) -> None:
    reply = call(reports, "POST", "/api/v1/reports", raw_body=raw, content_type=content_type)
    assert reply.status == status and reply.content_type == "application/problem+json"
    assert schedules() == []


@pytest.mark.parametrize(("body", "field"), [
    ({"from": "2024-01-02T00:00:00Z", "to": "2024-01-01T00:00:00Z"}, "to"),
    ({"from": "2024-01-01T00:00:00Z", "to": "2024-01-01T00:00:00Z"}, "to"),
    ({"from": "2024-01-01T00:00:00Z"}, "to"),
    ({"from": "Monday", "to": "2024-01-01T00:00:00Z"}, "from"),
    ({"from": 1704067200, "to": "2024-01-02T00:00:00Z"}, "from"),
    ({"from": "2023-01-01T00:00:00Z", "to": "2024-12-31T00:00:00Z"}, "to"),
    ({"from": "2024-01-01T00:00:00Z", "to": "2024-01-02T00:00:00Z", "subject": "x"}, "subject"),
])
def test_bad_run_requests_are_refused(exports_aws: Any, body: dict[str, Any], field: str) -> None:
    create()
    reply = call(reports, "POST", "/api/v1/reports/daily_tokens/runs", body=body, content_type=JSON)
    assert reply.status == 400 and field in _errors(reply)
    assert "Messages" not in exports_aws["sqs"].receive_message(QueueUrl=exports_aws["queues"]["export-requests"])
    assert call(reports, "GET", "/api/v1/reports/daily_tokens/runs").json() == []


def test_runs_of_unknown_report_and_bad_limit() -> None:
    body = {"from": "2024-01-01T00:00:00Z", "to": "2024-01-02T00:00:00Z"}
    assert call(reports, "POST", "/api/v1/reports/nope/runs", body=body, content_type=JSON).status == 404
    assert call(reports, "GET", "/api/v1/reports/nope/runs").status == 404
    create()
    for limit in ("0", "101", "ten"):
        reply = call(reports, "GET", "/api/v1/reports/daily_tokens/runs", query={"limit": limit})
        assert reply.status == 400 and _errors(reply) == ["limit"]


def test_endpoint_headers_are_kept_encrypted_and_a_put_may_send_them_back_redacted() -> None:
    from meterline import bootstrap
    from meterline.services.reports import endpoint_headers

    assert create().status == 201
    ctx = bootstrap.reports_context()

    def stored_headers() -> dict[str, str]:
        stored = ctx.reports.get("default", "daily_tokens")
        assert stored is not None
        return endpoint_headers(ctx.secrets, "default", stored)

    assert stored_headers() == {"Authorization": "Bearer abc"}
    shown = call(reports, "GET", "/api/v1/reports/daily_tokens").json()
    shown["endpoint"]["headers"]["X-Team"] = "metering"
    body = {k: v for k, v in shown.items() if k not in ("id", "createdAt", "updatedAt")}
    reply = call(reports, "PUT", "/api/v1/reports/daily_tokens", body=body, content_type=JSON)
    assert reply.status == 200, reply.body
    assert reply.json()["endpoint"]["headers"] == {"Authorization": "<redacted>", "X-Team": "<redacted>"}
    assert stored_headers() == {"Authorization": "Bearer abc", "X-Team": "metering"}  # kept, and added

    body["endpoint"]["headers"] = {"Authorization": "Bearer new"}
    assert call(reports, "PUT", "/api/v1/reports/daily_tokens", body=body, content_type=JSON).status == 200
    assert stored_headers() == {"Authorization": "Bearer new"}
    body["endpoint"]["headers"] = {"X-Unknown": "<redacted>"}
    refused = call(reports, "PUT", "/api/v1/reports/daily_tokens", body=body, content_type=JSON)
    assert refused.status == 400 and refused.json()["errors"][0]["field"] == "endpoint.headers.X-Unknown"
    assert stored_headers() == {"Authorization": "Bearer new"}
    body["endpoint"]["headers"] = {}
    assert call(reports, "PUT", "/api/v1/reports/daily_tokens", body=body, content_type=JSON).status == 200
    assert stored_headers() == {}
