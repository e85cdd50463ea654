"""The access-log metering function (ApiMetering) against real tables: CloudWatch Logs subscription
events as AWS documents them (`{"awslogs": {"data": base64(gzip(json))}}`, logEvents whose messages are
the stage's JSON access log lines, rendered from the very format infra gives the stage), counted by the
real stream processor and read back through the usage query API."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from functions.access_log_metering import handler as access_log_metering
from functions.api import handler as api
from functions.processor import handler as processor
from meterline import bootstrap
from meterline.domain.access_logs import ACCESS_LOG_METERING_ENV, AccessLogMeteringConfig, ApiKind
from meterline.domain.timeutil import format_ms, now_ms
from meterline.storage.events_store import EventsStore
from meterline.storage.meters_store import MetersStore
from tests.conftest import lambda_context, scan_events, stream_records
from tests.integration.access_logs import request, subscription_event
from tests.integration.http import call

EVENTS = os.environ["EVENTS_TABLE"]
REQUEST_METER = {"type": "request"}  # the example meters' `request`: api_requests_total counts it by method, route
HOUR_MS = 3_600_000


def configure(monkeypatch: pytest.MonkeyPatch, **config: Any) -> None:
    """The function's environment as ApiMetering sets it."""
    monkeypatch.setenv(ACCESS_LOG_METERING_ENV, AccessLogMeteringConfig(
        **{"namespace": "default", "meters": [REQUEST_METER], **config}).model_dump_json(by_alias=True))
    bootstrap.reset()


@pytest.fixture
def metering(aws: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    for slug in ("api_requests_total", "tokens_total"):
        MetersStore().set_backfill("default", slug, {"status": "completed"})
    configure(monkeypatch)
    return aws


def deliver(lines: list[str]) -> dict[str, Any]:
    result: dict[str, Any] = access_log_metering.handler(subscription_event(lines), lambda_context())
    return result


def count_usage() -> None:
    """The stream processor over everything on the events stream (so far, and again: counting absorbs that)."""
    assert processor.handler({"Records": stream_records(EVENTS)}, lambda_context()) == {"batchItemFailures": []}


def usage(meter: str, *group_by: str) -> dict[tuple[Any, ...], float]:
    """The meter's usage over the last day, per subject and `group_by` values, from the query API."""
    now = now_ms()
    reply = call(api, "POST", f"/api/v1/meters/{meter}/query", content_type="application/json",
                 body={"from": format_ms(now - 24 * HOUR_MS), "to": format_ms(now + HOUR_MS),
                       "groupBy": ["subject", *group_by]})
    assert reply.status == 200, reply.body
    return {(row["subject"], *(row["groupBy"][key] for key in group_by)): row["value"] for row in reply.json()["data"]}


@pytest.mark.parametrize("aws", ["moto", "dynamodb_local"], indirect=True)
def test_each_metered_request_counts_once_even_when_its_log_batch_is_delivered_twice(metering: Any) -> None:
    batch = [
        request("Jt1Vq0aAoAMEbWw=", subject="customer-1"),
        request("Jt1Vq0bBoAMEbWx=", subject="customer-1"),
        request("Jt1Vq0cCoAMEbWy=", subject="customer-2", method="POST", route="/pets", status=201),
        request("Jt1Vq0dDoAMEbWz=", subject="customer-1", status=404),  # not a metered status
        request("Jt1Vq0eEoAMEbW0=", subject="customer-2", status=500),
        request("Jt1Vq0fFoAMEbW1=", subject=None),  # nobody to bill: skipped, never "unknown"
    ]
    first = deliver(batch)
    assert first == {"metered": 3, "stored": 3, "duplicates": 0, "withoutSubject": 1, "unreadable": 0}
    again = deliver(batch)  # CloudWatch Logs (or Lambda's retry) hands over the same batch again
    assert again == {"metered": 3, "stored": 0, "duplicates": 3, "withoutSubject": 1, "unreadable": 0}
    count_usage()
    count_usage()  # and the stream processor sees its batch twice
    assert usage("api_requests_total", "method", "route") == {
        ("customer-1", "GET", "/pets/{id}"): 2,
        ("customer-2", "POST", "/pets"): 1,
    }
    stored = {item["id"]["S"]: item for item in scan_events(metering, EVENTS)}
    assert set(stored) == {"Jt1Vq0aAoAMEbWw=", "Jt1Vq0bBoAMEbWx=", "Jt1Vq0cCoAMEbWy="}
    assert {item["subject"]["S"] for item in stored.values()} == {"customer-1", "customer-2"}
    assert {item["source"]["S"] for item in stored.values()} == {"api-gateway"}


def test_an_event_carries_the_request_time_route_template_status_and_duration(metering: Any) -> None:
    at = now_ms() - 5 * 60_000
    deliver([request("req-1", at_ms=at, status=200, route="/pets/{id}")])
    (event,) = EventsStore().get_many("default", [("api-gateway", "req-1")]).values()
    assert (event.type, event.subject, event.time_ms) == ("request", "customer-1", at)
    assert event.data == {"method": "GET", "route": "/pets/{id}", "status": 200, "duration_seconds": 0.042}


def test_a_rest_api_line_meters_the_same_route_as_an_http_api_line(metering: Any) -> None:
    deliver([request("http-1", route="/pets/{id}"),
             request("2f1a-rest-2", route="/pets/{id}", kind=ApiKind.REST)])
    count_usage()
    assert usage("api_requests_total", "route") == {("customer-1", "/pets/{id}"): 2}


def test_several_meters_give_each_request_one_event_per_meter_with_distinct_ids(
        metering: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = {"type": "prompt", "data": {"tokens": 100, "model": "api", "type": "input"}}  # tokens_total's
    configure(monkeypatch, meters=[REQUEST_METER, tokens], meterOnStatusCodes="200-299,304", eventSource="pets-api")
    result = deliver([request("req-1"), request("req-2", status=304), request("req-3", status=302)])
    assert (result["metered"], result["stored"]) == (2, 4)
    stored = scan_events(metering, EVENTS)
    assert {item["id"]["S"] for item in stored} == {"req-1-request", "req-1-prompt", "req-2-request", "req-2-prompt"}
    assert {item["source"]["S"] for item in stored} == {"pets-api"}
    count_usage()
    assert usage("api_requests_total") == {("customer-1",): 2}
    assert usage("tokens_total", "model") == {("customer-1", "api"): 200}


def test_lines_that_cannot_be_metered_are_skipped_logged_and_the_others_stored(
        metering: Any, caplog: pytest.LogCaptureFixture) -> None:
    result = deliver([
        "not json at all",
        json.dumps({"requestId": "req-x", "status": "200"}),  # not this stage's format
        request("req-long", subject="s" * 300),  # longer than any subject may be
        request("req-anonymous", subject=None),
        request("req-ok"),
    ])
    assert result == {"metered": 1, "stored": 1, "duplicates": 0, "withoutSubject": 1, "unreadable": 3}
    assert {item["id"]["S"] for item in scan_events(metering, EVENTS)} == {"req-ok"}
    logged = {record.getMessage(): record.__dict__ for record in caplog.records}
    assert logged["requests without a subject were not metered"]["request_ids"] == ["req-anonymous"]
    reasons = logged["access log lines could not be metered"]["reasons"]
    assert len(reasons) == 3 and reasons[2] == "request req-long: subject must be at most 256 bytes long"


def test_cloudwatchs_control_message_meters_nothing(metering: Any) -> None:
    event = subscription_event(["CWL CONTROL MESSAGE: Checking health of destination Lambda."], "CONTROL_MESSAGE")
    assert access_log_metering.handler(event, lambda_context()) == {"metered": 0}
    assert scan_events(metering, EVENTS) == []


def test_a_batch_whose_writes_fail_raises_and_its_retry_counts_each_request_once(
        metering: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    batch = [request(f"req-{i}") for i in range(5)]
    client = bootstrap.events_store().client
    put_item = client.put_item
    calls = {"n": 0}

    def failing_after_two(**kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > 2:
            raise client.exceptions.ProvisionedThroughputExceededException(
                {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}}, "PutItem")
        return put_item(**kwargs)

    monkeypatch.setattr(client, "put_item", failing_after_two)
    with pytest.raises(Exception, match="slow down"):  # Lambda retries an asynchronous invocation that raised
        deliver(batch)
    monkeypatch.setattr(client, "put_item", put_item)
    retried = deliver(batch)
    assert (retried["stored"], retried["duplicates"]) == (3, 2)
    count_usage()
    assert usage("api_requests_total") == {("customer-1",): 5}
