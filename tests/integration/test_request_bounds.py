"""Bad input gets a precise 400 (or 429), never a 500 or a timeout, and writes nothing: usage queries
over absurd ranges or too many windows, reads or rows; event listings that would scan months; meter
definitions with paths the processor would pay for on every event; namespace quotas; reserved names."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from functions.api import handler as api
from functions.ingest import handler as ingest
from functions.processor import handler as processor
from functions.reports import handler as reports_api
from meterline import bootstrap
from meterline.domain.slots import Horizons
from meterline.storage.meters_store import MetersStore
from meterline.storage.usage_store import UsageStore
from tests.conftest import cloud_event, lambda_context, scan_all, stream_records
from tests.integration.http import Reply, call

JSON = "application/json"
DAY = {"from": "2024-01-01T00:00:00Z", "to": "2024-01-02T00:00:00Z"}


@pytest.fixture
def limits(aws: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    def set_limits(**env: str) -> None:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        bootstrap.reset()
    yield set_limits
    bootstrap.reset()


def problem(reply: Reply, status: int, *fields: str) -> dict[str, Any]:
    assert reply.status == status, reply.body
    assert reply.content_type == "application/problem+json"
    body: dict[str, Any] = reply.json()
    assert set(fields) <= {e["field"] for e in body.get("errors", [])}, body
    return body


def query(**params: str) -> Reply:
    return call(api, "GET", "/api/v1/meters/tokens_total/query", query=params)


def ingest_and_count(events: list[dict[str, Any]]) -> None:
    assert call(ingest, "POST", "/api/v1/events", body=events, content_type=JSON).status == 204
    assert processor.handler({"Records": stream_records(os.environ["EVENTS_TABLE"])},
                             lambda_context()) == {"batchItemFailures": []}


def test_a_query_from_year_one_is_a_quick_400_naming_from(aws: Any) -> None:
    started = time.monotonic()
    body = problem(query(**{"from": "0001-01-01T00:00:00Z", "to": "2024-01-02T00:00:00Z"}), 400, "from")
    assert time.monotonic() - started < 10
    assert "METERLINE_QUERY_READ_BUDGET" in body["detail"]
    day = 1_704_153_600_000  # 2024-01-02: the compactor has folded everything before it into slots
    UsageStore().set_compaction_state(Horizons(quarter=day, hour=day, day=day, late_through=day))
    ten_years = query(**{"from": "2014-01-01T00:00:00Z", "to": "2024-01-02T00:00:00Z"})
    assert ten_years.status == 200 and ten_years.json()["from"] == "2014-01-01T00:00:00.000Z"


def test_too_many_windows_is_400_naming_window_size(aws: Any) -> None:
    body = problem(query(windowSize="MINUTE", **{"from": "2024-01-01T00:00:00Z", "to": "2024-01-08T00:00:00Z"}),
                   400, "windowSize")
    assert "more than 10000 MINUTE windows" in body["detail"]


def test_a_query_beyond_its_read_budget_is_400(limits: Any) -> None:
    limits(METERLINE_QUERY_READ_BUDGET="20")
    body = problem(query(windowSize="MINUTE", **{"from": "2024-01-01T00:00:00Z", "to": "2024-01-01T01:00:00Z"}),
                   400, "from")
    assert "METERLINE_QUERY_READ_BUDGET" in body["detail"] and "needs 64 reads" in body["detail"]
    # one quarter-hour of raw rows: two Queries (the meter's own raw partition and the shared one) per subject
    # bucket, 16
    assert query(windowSize="MINUTE", **{"from": "2024-01-01T00:00:00Z", "to": "2024-01-01T00:15:00Z"}).status == 200


def test_a_query_with_too_many_rows_is_400_naming_group_by_and_window_size(limits: Any) -> None:
    limits(METERLINE_QUERY_MAX_ROWS="2")
    ingest_and_count([cloud_event(i, time=f"2024-01-01T{i:02d}:00:00Z") for i in range(3)])
    problem(query(windowSize="HOUR", **DAY), 400, "groupBy", "windowSize")
    assert query(windowSize="DAY", **DAY).status == 200


def test_an_events_listing_beyond_its_budget_is_400_naming_from(limits: Any) -> None:
    limits(METERLINE_LISTING_BUDGET="5")
    ingest_and_count([cloud_event(i, time=f"2024-01-01T{i:02d}:00:00Z") for i in range(10)])
    params = {"from": "2024-01-01T00:00:00Z", "to": "2024-01-01T23:59:59Z"}
    assert len(call(api, "GET", "/api/v1/events", query={**params, "limit": "3"}).json()) == 3  # filled first
    body = problem(call(api, "GET", "/api/v1/events", query={**params, "subject": "nobody"}), 400, "from")
    assert "move from to 2024-01-01T" in body["detail"]


@pytest.mark.parametrize(("change", "field", "reason"), [
    ({"valueProperty": "$..tokens"}, "valueProperty", "simple member paths"),
    ({"groupBy": {"model": "$..c[*]"}}, "groupBy.model", "simple member paths"),
    ({"groupBy": {"model": "$.models[*]"}}, "groupBy.model", "simple member paths"),
    ({"groupBy": {"model": "$.a[?(@.b)]"}}, "groupBy.model", "simple member paths"),
    ({"groupBy": {f"k{i}": f"$.k{i}" for i in range(21)}}, "groupBy", "at most 20"),
])
def test_meter_paths_are_simple_member_paths(aws: Any, change: dict[str, Any], field: str, reason: str) -> None:
    meter = {"slug": "paths", "eventType": "path", "aggregation": "SUM", "valueProperty": "$.n", **change}
    before = scan_all(aws, os.environ["CATALOG_TABLE"])
    body = problem(call(api, "POST", "/api/v1/meters", body=meter, content_type=JSON), 400, field)
    assert any(reason in e["reason"] for e in body["errors"])
    assert scan_all(aws, os.environ["CATALOG_TABLE"]) == before


def test_quoted_and_indexed_member_paths_are_counted(aws: Any) -> None:
    meter = {"slug": "quoted", "eventType": "quoted", "aggregation": "SUM", "valueProperty": '$["usage"]["n t"]',
             "groupBy": {"first": "$.tags[0]", "odd": "$['odd.key']"}}
    assert call(api, "POST", "/api/v1/meters", body=meter, content_type=JSON).status == 201
    MetersStore().set_backfill("default", "quoted", {"status": "completed"})
    bootstrap.reset()
    ingest_and_count([cloud_event(1, type="quoted", time="2024-01-01T10:00:00Z",
                                  data={"usage": {"n t": 5}, "tags": ["a", "b"], "odd.key": "x"})])
    reply = call(api, "GET", "/api/v1/meters/quoted/query", query={**DAY, "groupBy": "first"})
    assert [(r["value"], r["groupBy"]) for r in reply.json()["data"]] == [(5, {"first": "a"})]


def test_a_namespace_may_hold_so_many_meters(limits: Any, aws: Any) -> None:
    limits(METERLINE_MAX_METERS=str(len(MetersStore().meters("default")) + 1))
    meter = {"slug": "one_more", "eventType": "x", "aggregation": "COUNT"}
    assert call(api, "POST", "/api/v1/meters", body=meter, content_type=JSON).status == 201
    body = problem(call(api, "POST", "/api/v1/meters", body={**meter, "slug": "too_many"}, content_type=JSON), 400,
                   "slug")
    assert body["type"] == "urn:meterline:problem:quota-exceeded" and "METERLINE_MAX_METERS" in body["detail"]


def test_report_and_manual_run_quotas(exports_aws: Any, limits: Any) -> None:
    limits(METERLINE_MAX_REPORTS="1", METERLINE_MAX_MANUAL_RUNS_PER_HOUR="2")
    MetersStore().set_backfill("default", "tokens_total", {"status": "completed"})
    report = {"slug": "one", "meterIdOrSlug": "tokens_total",
              "schedule": {"interval": "1h", "startAt": "2024-01-01T00:00:00Z"},
              "endpoint": {"url": "http://127.0.0.1:9/usage"}}
    assert call(reports_api, "POST", "/api/v1/reports", body=report, content_type=JSON).status == 201
    body = problem(call(reports_api, "POST", "/api/v1/reports", body={**report, "slug": "two"}, content_type=JSON),
                   400, "slug")
    assert "METERLINE_MAX_REPORTS" in body["detail"]
    run = {"from": "2024-01-01T00:00:00Z", "to": "2024-01-01T01:00:00Z"}
    for _ in range(2):
        assert call(reports_api, "POST", "/api/v1/reports/one/runs", body=run, content_type=JSON).status == 202
    refused = call(reports_api, "POST", "/api/v1/reports/one/runs", body=run, content_type=JSON)
    body = problem(refused, 429)
    assert body["type"] == "urn:meterline:problem:too-many-requests"
    assert 1 <= int(refused.headers["retry-after"]) <= 3601
    assert len(call(reports_api, "GET", "/api/v1/reports/one/runs").json()) == 2  # the refused one was not recorded


@pytest.mark.parametrize("reserved", ["work", "manifest", "late", "compaction", "backfill"])
def test_reserved_names_are_no_namespace(reserved: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from meterline.errors import Unauthenticated
    from meterline.http.auth import caller_of
    from meterline.settings import Settings, is_namespace

    assert not is_namespace(reserved) and is_namespace(f"{reserved}s")
    monkeypatch.setenv("METERLINE_DEFAULT_NAMESPACE", reserved)
    with pytest.raises(RuntimeError, match="must match"):
        Settings.from_env()
    monkeypatch.setenv("METERLINE_DEFAULT_NAMESPACE", "default")
    monkeypatch.setenv("METERLINE_AUTH", "lambda")
    bootstrap.reset()
    try:
        with pytest.raises(Unauthenticated):
            caller_of({"requestContext": {"authorizer": {"lambda": {"namespace": reserved}}}})
    finally:
        bootstrap.reset()
