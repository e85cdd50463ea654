"""Usage exports end to end inside one process, against moto: events ingested and counted by the real
handlers; the exporter run as a schedule fires it (at chosen times) and as the export-request queue
delivers a manual run; the sender draining the delivery queue into a real HTTP receiver that verifies
every signature with the `standardwebhooks` library."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from typing import Any
from unittest import mock

import orjson
import pytest

from functions.exporter import handler as exporter
from functions.ingest import handler as ingest
from functions.processor import handler as processor
from functions.reports import handler as reports_api
from functions.sender import handler as sender
from meterline import bootstrap
from meterline.aws.queues import ExportQueues
from meterline.domain.exports import ExportRequest
from meterline.domain.reports import report_definition
from meterline.domain.timeutil import format_ms, parse_rfc3339, to_epoch_ms
from meterline.services import reports
from meterline.storage.meters_store import MetersStore
from meterline_local.lambda_runtime import LocalLambdaContext
from meterline_local.sqs_poller import lambda_record as sqs_lambda_record
from tests.conftest import cloud_event, lambda_context, stream_records
from tests.integration.http import call
from tests.slow_receivers import RawReceiver, never_answers
from tests.webhook_receiver import Receiver

EVENTS = os.environ["EVENTS_TABLE"]
JSON = "application/json"
HOUR = 3_600_000
T0 = to_epoch_ms(parse_rfc3339("2024-01-01T00:00:00Z"))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture
def ctx(exports_aws: Any) -> reports.ReportsContext:
    """The example meters, with their (empty) backfills done: exports wait for a backfill to finish."""
    MetersStore().set_backfill("default", "tokens_total", {"status": "completed"})
    return bootstrap.reports_context()


def ingest_and_count(events: list[dict[str, Any]]) -> None:
    assert call(ingest, "POST", "/api/v1/events", body=events, content_type=JSON).status == 204
    records = stream_records(EVENTS)
    assert processor.handler({"Records": records}, lambda_context()) == {"batchItemFailures": []}


def at(offset_ms: int) -> str:
    return format_ms(T0 + offset_ms)


def usage_events() -> list[dict[str, Any]]:
    """Hour 0: customer-1 gpt4 300 + gpt3 50; customer-2 gpt4 150; customer-3 gpt4 20. Hour 1: customer-1 7."""
    rows = [("customer-1", "gpt4", 100, 0), ("customer-1", "gpt4", 200, 10), ("customer-1", "gpt3", 50, 20),
            ("customer-2", "gpt4", 150, 30), ("customer-3", "gpt4", 20, 40), ("customer-1", "gpt4", 7, 70)]
    return [cloud_event(f"e{i}", subject=subject, time=at(minute * 60_000),
                        data={"tokens": tokens, "model": model, "type": "input"})
            for i, (subject, model, tokens, minute) in enumerate(rows)]


def create_report(ctx: reports.ReportsContext, receiver: Receiver, created_at_ms: int, **overrides: Any
                  ) -> dict[str, Any]:
    body = {
        "slug": "hourly_tokens", "meterIdOrSlug": "tokens_total",
        "schedule": {"interval": "1h", "startAt": "2024-01-01T00:00:00Z"},
        "query": {"groupBy": ["model"]}, "endpoint": {"url": receiver.url}, **overrides,
    }
    created = reports.create_report(ctx, "default", report_definition(body), created_at_ms)
    receiver.secret = created["signingSecret"]
    return created


def fire(report: dict[str, Any], now_ms: int) -> list[str]:
    """What the report's schedule does: invoke the exporter with the schedule's input."""
    event = {"namespace": "default", "report": report["slug"], "reportId": report["id"]}


    with mock.patch("functions.exporter.handler.now_ms", return_value=now_ms):
        return exporter.handler(event, lambda_context())["runs"]


def lambda_record(message: dict[str, Any], queue_url: str) -> dict[str, Any]:
    """A received message as Lambda's SQS event source hands it over (the local stack's shape)."""
    arn = f"arn:aws:sqs:us-east-1:123456789012:{queue_url.rsplit('/', 1)[-1]}"
    return sqs_lambda_record(message, arn, "us-east-1")


def drain(exports_aws: Any, *, wait_s: float = 0) -> int:
    """Feed the delivery queue to the sender until it stays empty for `wait_s` (delayed retries)."""
    sqs, url = exports_aws["sqs"], exports_aws["queues"]["deliveries"]
    handled = 0
    deadline = time.monotonic() + wait_s
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"]).get(
            "Messages", [])
        if not messages:
            if time.monotonic() >= deadline:
                return handled
            time.sleep(0.2)
            continue
        records = [lambda_record(m, url) for m in messages]
        result = sender.handler({"Records": records}, lambda_context())
        assert result == {"batchItemFailures": []}
        for m in messages:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        handled += len(messages)
        deadline = time.monotonic() + wait_s


def runs(slug: str = "hourly_tokens") -> list[dict[str, Any]]:
    reply = call(reports_api, "GET", f"/api/v1/reports/{slug}/runs")
    assert reply.status == 200, reply.body
    return reply.json()


def test_scheduled_export_posts_one_signed_webhook_per_subject(exports_aws: Any, ctx: Any, receiver: Receiver
                                                               ) -> None:
    ingest_and_count(usage_events())
    report = create_report(ctx, receiver, T0 + 5 * 60_000,
                           endpoint={"url": receiver.url, "headers": {"X-Receiver-Token": "t0ken"}})
    assert report["endpoint"]["headers"] == {"X-Receiver-Token": "<redacted>"}
    assert fire(report, T0 + HOUR + 60_000) != []
    assert drain(exports_aws) == 3
    # the header's value, kept encrypted, reaches the receiver
    assert {d["headers"].get("x-receiver-token") for d in receiver.received} == {"t0ken"}

    payloads = receiver.by_subject()
    assert set(payloads) == {"customer-1", "customer-2", "customer-3"}
    window = {"windowStart": "2024-01-01T00:00:00.000Z", "windowEnd": "2024-01-01T01:00:00.000Z"}
    assert payloads["customer-1"] == {
        "report": {"slug": "hourly_tokens"},
        "completeness": "final",
        "usage": [{"subject": "customer-1", "value": 50, "groupBy": {"model": "gpt3"}, **window},
                  {"subject": "customer-1", "value": 300, "groupBy": {"model": "gpt4"}, **window}],
        "query": {"from": window["windowStart"], "to": window["windowEnd"], "subject": "customer-1",
                  "groupBy": ["model"]},
        "meter": {"id": payloads["customer-1"]["meter"]["id"], "slug": "tokens_total",
                  "description": "AI Token Usage", "aggregation": "SUM", "eventType": "prompt",
                  "valueProperty": "$.tokens", "groupBy": {"model": "$.model", "type": "$.type"}},
    }
    assert payloads["customer-2"]["usage"][0]["value"] == 150

    [run] = runs()
    assert (run["status"], run["trigger"], run["subjects"], run["succeeded"]) == ("succeeded", "schedule", 3, 3)
    assert run["completeness"] == "final"
    assert run["finishedAt"] is not None and run["startedAt"] is not None
    assert sorted(d["webhookId"] for d in run["deliveries"]) == sorted(d["id"] for d in receiver.received)
    assert {(d["status"], d["attempts"], d["lastResponseStatus"]) for d in run["deliveries"]} == {("succeeded", 1, 204)}


def first_hour_messages(exports_aws: Any, ctx: Any, receiver: Receiver) -> tuple[list[dict[str, Any]], str]:
    """The first hour's export fired: its three delivery messages, received, and the queue's URL."""
    ingest_and_count(usage_events())
    report = create_report(ctx, receiver, T0 + 5 * 60_000)
    assert fire(report, T0 + HOUR + 60_000) != []
    sqs, url = exports_aws["sqs"], exports_aws["queues"]["deliveries"]
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"])["Messages"]
    assert len(messages) == 3
    return messages, url


def test_a_batch_ends_its_deliveries_in_one_transaction_and_a_message_twice_in_it_counts_once(
        exports_aws: Any, ctx: Any, receiver: Receiver) -> None:
    messages, url = first_hour_messages(exports_aws, ctx, receiver)
    transactions: list[int] = []
    client = bootstrap.reports_store().client
    client.meta.events.register("before-parameter-build.dynamodb.TransactWriteItems",
                                lambda params, **_: transactions.append(len(params["TransactItems"])))
    records = [lambda_record(m, url) for m in [*messages, messages[0]]]  # SQS delivered one twice
    assert sender.handler({"Records": records}, lambda_context()) == {"batchItemFailures": []}
    assert transactions == [3 + 1]  # the three deliveries and their run's counters
    assert len(receiver.received) == 3
    [run] = runs()
    assert (run["status"], run["subjects"], run["succeeded"], run["failed"]) == ("succeeded", 3, 3, 0)
    # a redelivery of the whole batch later: every delivery has ended, nothing is posted or counted again
    assert sender.handler({"Records": records}, lambda_context()) == {"batchItemFailures": []}
    assert transactions == [4] and len(receiver.received) == 3 and runs()[0]["succeeded"] == 3


def test_a_batch_whose_successes_cannot_be_recorded_fails_and_is_delivered_again(
        exports_aws: Any, ctx: Any, receiver: Receiver) -> None:
    messages, url = first_hour_messages(exports_aws, ctx, receiver)
    records = [lambda_record(m, url) for m in messages]
    store = bootstrap.reports_store()

    def throttled(*_: Any, **__: Any) -> set[int]:
        raise RuntimeError("throttled")

    with mock.patch.object(store, "finish_deliveries", throttled), pytest.raises(RuntimeError, match="throttled"):
        sender.handler({"Records": records}, lambda_context())
    [run] = runs()
    assert run["succeeded"] == 0 and {d["status"] for d in run["deliveries"]} == {"pending"}
    assert sender.handler({"Records": records}, lambda_context()) == {"batchItemFailures": []}
    [run] = runs()
    assert (run["status"], run["succeeded"]) == ("succeeded", 3)
    assert len(receiver.received) == 6 and len({d["id"] for d in receiver.received}) == 3  # the same webhook ids


def test_filters_on_usage_and_subject(exports_aws: Any, ctx: Any, receiver: Receiver) -> None:
    ingest_and_count(usage_events())
    report = create_report(ctx, receiver, T0, filter={"usage": {"$gte": 100},
                                                      "subject": {"$nin": ["customer-2"]}})
    fire(report, T0 + HOUR + 60_000)
    drain(exports_aws)
    payloads = receiver.by_subject()
    # customer-2 excluded by subject, customer-3 (20) and customer-1's gpt3 row (50) by usage
    assert set(payloads) == {"customer-1"}
    assert [(u["groupBy"]["model"], u["value"]) for u in payloads["customer-1"]["usage"]] == [("gpt4", 300)]
    assert runs()[0]["subjects"] == 1


def test_duplicate_firings_deliver_once_and_a_gap_is_caught_up_oldest_first(exports_aws: Any, ctx: Any,
                                                                           receiver: Receiver) -> None:
    ingest_and_count(usage_events())
    report = create_report(ctx, receiver, T0)
    first = fire(report, T0 + HOUR + 60_000)
    assert len(first) == 1
    assert fire(report, T0 + HOUR + 60_000) == []  # the same firing delivered twice
    assert fire(report, T0 + HOUR + 90_000) == []
    assert drain(exports_aws) == 3

    # the schedule was paused for two hours: the next firing exports hours 1, 2 and 3, oldest first
    assert len(fire(report, T0 + 4 * HOUR + 60_000)) == 3
    listed = runs()
    assert [(r["windowStart"][11:16], r["trigger"]) for r in listed] == [
        ("03:00", "schedule"), ("02:00", "catch-up"), ("01:00", "catch-up"), ("00:00", "schedule")]
    drain(exports_aws)
    hour1 = [d for d in receiver.received if d["body"]["query"]["from"] == "2024-01-01T01:00:00.000Z"]
    assert [(d["body"]["query"]["subject"], d["body"]["usage"][0]["value"]) for d in hour1] == [("customer-1", 7)]
    assert [r["status"] for r in runs()] == ["succeeded"] * 4
    assert len(receiver.received) == 4


def test_catch_up_is_bounded_and_skips_windows_before_the_report_existed(exports_aws: Any, ctx: Any,
                                                                         receiver: Receiver, monkeypatch: Any
                                                                         ) -> None:
    monkeypatch.setenv("METERLINE_EXPORT_CATCH_UP_WINDOWS", "3")
    bootstrap.reset()
    report = create_report(ctx, receiver, T0 + 2 * HOUR + 1)  # created during hour 2
    made = fire(report, T0 + 10 * HOUR + 60_000)
    assert len(made) == 3  # hours 7, 8, 9: at most three windows back
    assert [r["windowStart"][11:16] for r in runs()] == ["09:00", "08:00", "07:00"]
    assert fire(report, T0 + 10 * HOUR + 90_000) == []


def test_failing_receiver_is_retried_with_the_same_webhook_id(exports_aws: Any, ctx: Any, receiver: Receiver
                                                              ) -> None:
    ingest_and_count(usage_events()[:1])
    report = create_report(ctx, receiver, T0)
    receiver.fail_first = 1
    fire(report, T0 + HOUR + 60_000)
    drain(exports_aws, wait_s=2.5)  # the retry is delayed by the backoff (1 s here)
    [webhook_id] = receiver.attempts
    assert receiver.attempts[webhook_id] == 2 and [d["id"] for d in receiver.received] == [webhook_id]
    [run] = runs()
    assert run["status"] == "succeeded"
    assert (run["deliveries"][0]["attempts"], run["deliveries"][0]["lastResponseStatus"]) == (2, 204)


def test_receiver_that_keeps_failing_is_dead_lettered_and_the_run_is_partial(exports_aws: Any, ctx: Any,
                                                                             receiver: Receiver) -> None:
    ingest_and_count(usage_events())
    report = create_report(ctx, receiver, T0, filter={"subject": {"$in": ["customer-1", "customer-2"]}})
    receiver.fail_first = 10**6
    fire(report, T0 + HOUR + 60_000)
    drain(exports_aws, wait_s=2.5)
    [run] = runs()
    assert (run["status"], run["failed"], run["succeeded"]) == ("partial", 2, 0)
    assert all(attempts == 3 for attempts in receiver.attempts.values())  # METERLINE_WEBHOOK_MAX_ATTEMPTS
    for delivery in run["deliveries"]:
        assert (delivery["status"], delivery["attempts"], delivery["lastResponseStatus"]) == ("failed", 3, 503)
        assert "HTTP 503" in delivery["lastError"]
    dlq = exports_aws["queues"]["dlq"]
    dead = exports_aws["sqs"].receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, AttributeNames=["All"])
    assert sorted(orjson.loads(m["Body"])["subject"] for m in dead["Messages"]) == ["customer-1", "customer-2"]
    # the sender consumes the dead-letter queue too: deliveries it ended itself stay as they are
    records = [lambda_record(m, dlq) for m in dead["Messages"]]
    assert sender.handler({"Records": records}, lambda_context()) == {"batchItemFailures": []}
    [again] = runs()
    assert (again["status"], again["failed"], again["succeeded"]) == ("partial", 2, 0)
    assert again["deliveries"] == run["deliveries"]


def test_a_delivery_sqs_dead_letters_is_failed_on_its_run(exports_aws: Any, ctx: Any, receiver: Receiver) -> None:
    ingest_and_count(usage_events())
    report = create_report(ctx, receiver, T0, filter={"subject": {"$in": ["customer-1", "customer-2"]}})
    fire(report, T0 + HOUR + 60_000)
    sqs, deliveries, dlq = exports_aws["sqs"], exports_aws["queues"]["deliveries"], exports_aws["queues"]["dlq"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sqs.set_queue_attributes(QueueUrl=deliveries, Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1})})
    # The sender dies on the batch (a crash, a timeout): nothing is deleted, and on the next receive SQS's
    # redrive policy moves the messages to the dead-letter queue, as they are.
    crashed = sqs.receive_message(QueueUrl=deliveries, MaxNumberOfMessages=10, VisibilityTimeout=0)["Messages"]
    assert len(crashed) == 2
    assert "Messages" not in sqs.receive_message(QueueUrl=deliveries, MaxNumberOfMessages=10)
    dead = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, AttributeNames=["All"])["Messages"]
    assert sorted(m["Body"] for m in dead) == sorted(m["Body"] for m in crashed)
    assert {d["status"] for d in runs()[0]["deliveries"]} == {"pending"}

    # the sender's other event source, the dead-letter queue, ends them as failed
    records = [lambda_record(m, dlq) for m in dead]
    assert sender.handler({"Records": records}, lambda_context()) == {"batchItemFailures": []}
    [run] = runs()
    assert (run["status"], run["failed"], run["succeeded"]) == ("partial", 2, 0)
    for delivery in run["deliveries"]:
        assert (delivery["status"], delivery["attempts"], delivery["lastResponseStatus"]) == ("failed", 0, None)
        assert delivery["lastError"] == "dead-lettered: the sender failed on it (crashed or timed out) every time"
    assert receiver.attempts == {}  # nothing is posted from the dead-letter queue
    # received again (SQS delivers at least once): counted once
    assert sender.handler({"Records": records}, lambda_context()) == {"batchItemFailures": []}
    assert (runs()[0]["failed"], runs()[0]["succeeded"]) == (2, 0)


def test_a_batch_leaves_what_it_has_no_time_for_to_sqs(exports_aws: Any, ctx: Any, receiver: Receiver) -> None:
    """A receiver that never answers holds an attempt for the whole timeout (2 s here, a 4 s budget with
    the margins): with 5.5 s left, the first delivery is tried and the other two are put back on the queue
    untried, as new messages (no receive counted toward the dead-letter queue), and the invocation returns
    before its own deadline."""
    ingest_and_count(usage_events())
    tarpit = RawReceiver(never_answers)
    try:
        report = create_report(ctx, receiver, T0, endpoint={"url": tarpit.url})
        fire(report, T0 + HOUR + 60_000)
        url = exports_aws["queues"]["deliveries"]
        messages = exports_aws["sqs"].receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                                      AttributeNames=["All"])["Messages"]
        assert len(messages) == 3
        context = LocalLambdaContext("sender", timeout_s=5.5)
        result = sender.handler({"Records": [lambda_record(m, url) for m in messages]}, context)
        assert context.get_remaining_time_in_millis() > 0  # the invocation ended in time
        assert result == {"batchItemFailures": []}
        assert len(tarpit.connections) == 1
        time.sleep(1.2)  # the postponed two, and the first one's retry, are delayed 1 s
        again = exports_aws["sqs"].receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                                   AttributeNames=["All"])["Messages"]
        by_subject = {orjson.loads(m["Body"])["subject"]: m for m in again}
        assert {s: (orjson.loads(m["Body"])["attempt"], m["Attributes"]["ApproximateReceiveCount"])
                for s, m in by_subject.items()} == {
            orjson.loads(m["Body"])["subject"]: (2 if i == 0 else 1, "1") for i, m in enumerate(messages)}
    finally:
        tarpit.close()
    deliveries = {d["subject"]: d for d in runs()[0]["deliveries"]}
    first = orjson.loads(messages[0]["Body"])["subject"]
    assert (deliveries[first]["status"], deliveries[first]["attempts"]) == ("retrying", 1)
    assert deliveries[first]["lastError"] == "timed out after 2 s"
    untried = [d for subject, d in deliveries.items() if subject != first]
    assert [(d["status"], d["attempts"]) for d in untried] == [("pending", 0)] * 2  # not counted as attempts


def test_a_batch_with_no_time_left_is_handed_back_untried(exports_aws: Any, ctx: Any, receiver: Receiver) -> None:
    ingest_and_count(usage_events())
    report = create_report(ctx, receiver, T0)
    fire(report, T0 + HOUR + 60_000)
    url = exports_aws["queues"]["deliveries"]
    messages = exports_aws["sqs"].receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                                  AttributeNames=["All"])["Messages"]
    result = sender.handler({"Records": [lambda_record(m, url) for m in messages]},
                            LocalLambdaContext("sender", timeout_s=3.9))  # less than one attempt's 4 s
    assert result == {"batchItemFailures": []}
    assert receiver.attempts == {}
    assert {(d["status"], d["attempts"]) for d in runs()[0]["deliveries"]} == {("pending", 0)}
    # crowded out three times and more: still delivered once an invocation has time (never dead-lettered)
    for _ in range(3):
        time.sleep(1.1)
        again = exports_aws["sqs"].receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                                   AttributeNames=["All"])["Messages"]
        assert len(again) == 3
        assert sender.handler({"Records": [lambda_record(m, url) for m in again]},
                              LocalLambdaContext("sender", timeout_s=3.9)) == {"batchItemFailures": []}
        for m in again:
            exports_aws["sqs"].delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    time.sleep(1.1)
    assert drain(exports_aws) == 3
    assert {(d["status"], d["attempts"]) for d in runs()[0]["deliveries"]} == {("succeeded", 1)}


def test_manual_run_exports_the_requested_window_again(exports_aws: Any, ctx: Any, receiver: Receiver) -> None:
    ingest_and_count(usage_events())
    create_report(ctx, receiver, T0)
    reply = call(reports_api, "POST", "/api/v1/reports/hourly_tokens/runs", content_type=JSON,
                 body={"from": "2024-01-01T00:00:00Z", "to": "2024-01-01T02:00:00Z"})
    assert reply.status == 202
    sqs, url = exports_aws["sqs"], exports_aws["queues"]["export-requests"]
    [message] = sqs.receive_message(QueueUrl=url, AttributeNames=["All"])["Messages"]
    record = lambda_record(message, url)
    assert exporter.handler({"Records": [record]}, lambda_context()) == {"batchItemFailures": []}
    assert exporter.handler({"Records": [record]}, lambda_context()) == {"batchItemFailures": []}  # redelivered: no-op
    drain(exports_aws)
    assert receiver.by_subject()["customer-1"]["usage"][-1]["value"] == 307  # both hours, gpt4
    [run] = runs()
    assert (run["trigger"], run["status"], run["subjects"]) == ("manual", "succeeded", 3)


def test_rotation_signs_with_both_secrets_for_a_day_then_the_new_one(exports_aws: Any, ctx: Any,
                                                                     receiver: Receiver) -> None:


    from standardwebhooks import Webhook, WebhookVerificationError

    ingest_and_count(usage_events()[:1])
    report = create_report(ctx, receiver, T0)
    old = receiver.secret
    rotated = reports.rotate_secret(ctx, "default", "hourly_tokens", T0 + 1)
    new = rotated["signingSecret"]
    assert new != old and rotated["previousSecretExpiresAt"] == format_ms(T0 + 1 + 24 * HOUR)

    receiver.secret = new
    fire(report, T0 + HOUR + 60_000)
    with mock.patch("functions.sender.handler.now_ms", return_value=T0 + HOUR + 61_000):
        drain(exports_aws)
    [within_grace] = receiver.received
    body = within_grace["raw"]
    assert len(within_grace["headers"]["webhook-signature"].split()) == 2
    Webhook(old).verify(body, within_grace["headers"])  # receivers still on the old secret accept it

    receiver.received.clear()
    run = reports.request_run(ctx, "default", "hourly_tokens",
                              reports.RunRequest.model_validate({"from": at(0), "to": at(HOUR)}), T0 + 26 * HOUR)
    bootstrap.exporter().run_requested("default", report["id"], run.id, "hourly_tokens", T0 + 26 * HOUR)
    with mock.patch("functions.sender.handler.now_ms", return_value=T0 + 26 * HOUR + 61_000):
        drain(exports_aws)
    after_grace = receiver.received[-1]
    assert len(after_grace["headers"]["webhook-signature"].split()) == 1
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(after_grace["raw"], after_grace["headers"])


def test_deleted_report_delivers_nothing_more(exports_aws: Any, ctx: Any, receiver: Receiver) -> None:
    ingest_and_count(usage_events())
    report = create_report(ctx, receiver, T0)
    fire(report, T0 + HOUR + 60_000)
    reports.delete_report(ctx, "default", "hourly_tokens")
    assert drain(exports_aws) == 3
    assert receiver.received == []
    assert fire(report, T0 + 2 * HOUR + 60_000) == []


def test_unsafe_endpoint_is_refused_at_send_time(exports_aws: Any, ctx: Any, receiver: Receiver,
                                                 monkeypatch: Any) -> None:
    ingest_and_count(usage_events()[:1])
    report = create_report(ctx, receiver, T0)
    monkeypatch.setenv("METERLINE_WEBHOOK_ALLOW_LOOPBACK", "false")  # as a deployed stack
    monkeypatch.setenv("METERLINE_WEBHOOK_MAX_ATTEMPTS", "1")
    bootstrap.reset()
    fire(report, T0 + HOUR + 60_000)
    drain(exports_aws)
    assert receiver.attempts == {}
    [delivery] = runs()[0]["deliveries"]
    assert delivery["status"] == "failed" and delivery["lastError"].startswith("refused")


def test_exports_wait_for_the_meter_backfill(exports_aws: Any, ctx: Any, receiver: Receiver) -> None:
    ingest_and_count(usage_events())
    report = create_report(ctx, receiver, T0)
    MetersStore().set_backfill("default", "tokens_total", {"status": "running"})
    assert fire(report, T0 + HOUR + 60_000) == []  # nothing claimed: partial numbers are not exported
    reply = call(reports_api, "POST", "/api/v1/reports/hourly_tokens/runs", content_type=JSON,
                 body={"from": "2024-01-01T00:00:00Z", "to": "2024-01-01T01:00:00Z"})
    url = exports_aws["queues"]["export-requests"]
    [message] = exports_aws["sqs"].receive_message(QueueUrl=url, AttributeNames=["All"])["Messages"]
    record = lambda_record(message, url)
    # not failed (that would use up the queue's receive count): asked again, 1 s later, as a new message
    assert exporter.handler({"Records": [record]}, lambda_context()) == {"batchItemFailures": []}
    assert [r["status"] for r in runs()] == ["pending"] and reply.json()["id"] == runs()[0]["id"]
    queue = exports_aws["queues"]["export-requests"]
    assert "Messages" not in exports_aws["sqs"].receive_message(QueueUrl=queue)  # delayed
    time.sleep(1.2)
    [again] = exports_aws["sqs"].receive_message(QueueUrl=queue)["Messages"]
    assert orjson.loads(again["Body"]) == orjson.loads(message["Body"])

    MetersStore().set_backfill("default", "tokens_total", {"status": "completed"})
    record = {**record, "messageId": again["MessageId"], "body": again["Body"]}
    assert exporter.handler({"Records": [record]}, lambda_context()) == {"batchItemFailures": []}
    assert len(fire(report, T0 + 2 * HOUR + 60_000)) == 2  # hours 0 and 1, caught up
    drain(exports_aws)
    assert sorted(r["status"] for r in runs()) == ["succeeded"] * 3


def test_a_scheduled_run_whose_exporter_died_is_taken_over(exports_aws: Any, ctx: Any, receiver: Receiver) -> None:


    ingest_and_count(usage_events())
    report = create_report(ctx, receiver, T0)
    # the exporter claims the window, then dies (a timeout) before enqueueing anything
    with mock.patch("meterline.services.exports.Exporter._export", side_effect=SystemExit("timeout")), \
            pytest.raises(SystemExit):
        fire(report, T0 + HOUR + 60_000)
    assert [r["status"] for r in runs()] == ["running"]
    assert fire(report, T0 + HOUR + 120_000) == []  # a duplicate firing soon after: still its own run's
    [taken_over] = fire(report, T0 + HOUR + 60_000 + 11 * 60_000)  # stale after 10 minutes
    assert drain(exports_aws) == 3
    [run] = runs()
    assert (run["id"], run["status"], run["subjects"]) == (taken_over, "succeeded", 3)


def process_late(records: list[dict[str, Any]], *, arrived_ms: int, now_ms: int, fails: bool = False) -> None:
    """The real processor handed `records` at `now_ms` as if they reached the stream at `arrived_ms`
    (a shard that fell behind); with `fails`, its counting writes fail (a throttled usage table)."""


    aged = [{**r, "dynamodb": {**r["dynamodb"], "ApproximateCreationDateTime": arrived_ms // 1000}} for r in records]
    with mock.patch("functions.processor.handler.now_ms", return_value=now_ms), \
            mock.patch("meterline.processing.stream_batch.now_ms", return_value=now_ms):
        if not fails:
            assert processor.handler({"Records": aged}, lambda_context()) == {"batchItemFailures": []}
            return
        with mock.patch("meterline.processing.stream_batch.count_events", side_effect=RuntimeError("throttled")), \
                pytest.raises(RuntimeError):
            processor.handler({"Records": aged}, lambda_context())


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> list[tuple[ExportRequest, int]]:
    """Export requests queued again with a delay, kept here instead (moto would hold them that long)."""
    queued: list[tuple[ExportRequest, int]] = []
    monkeypatch.setattr(ExportQueues, "request_export",
                        lambda _self, request, delay_seconds=0: queued.append((request, delay_seconds)))
    return queued


def answer_request(exports_aws: Any, request: ExportRequest, now_ms: int) -> None:
    """The exporter handed `request` by the export-request queue at `now_ms`."""


    body = request.body()
    message = {"MessageId": "m1", "ReceiptHandle": "r1", "Body": body,
               "MD5OfBody": hashlib.md5(body.encode()).hexdigest(),  # noqa: S324 - SQS's own checksum
               "Attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": str(now_ms), "SenderId": "exporter",
                              "ApproximateFirstReceiveTimestamp": str(now_ms)}}
    record = lambda_record(message, exports_aws["queues"]["export-requests"])
    with mock.patch("functions.exporter.handler.now_ms", return_value=now_ms):
        assert exporter.handler({"Records": [record]}, lambda_context()) == {"batchItemFailures": []}


def test_a_window_waits_while_the_processor_is_behind_then_exports_final(exports_aws: Any, ctx: Any,
                                                                          receiver: Receiver, held: Any) -> None:
    """An event that reached the stream before the window's end is stuck behind a failing batch: the
    scheduled export waits (queued again for when the lag report leaves the lookback), waits again while
    the processor keeps failing, and exports once it caught up, with the late-counted event, as final."""
    ingest_and_count(usage_events())
    report = create_report(ctx, receiver, T0)
    assert call(ingest, "POST", "/api/v1/events", content_type=JSON,
                body=[cloud_event("stuck", subject="customer-1", time=at(59 * 60_000),
                                  data={"tokens": 1000, "model": "gpt4", "type": "input"})]).status == 204
    stuck = stream_records(EVENTS)[-2:]  # the event and its time-index manifest
    end = T0 + HOUR
    process_late(stuck, arrived_ms=end - 5_000, now_ms=end + 50_000, fails=True)

    [run_id] = fire(report, end + 60_000)
    assert [(r["id"], r["status"], r["completeness"]) for r in runs()] == [(run_id, "waiting", None)]
    # asked again once the report (minute end..end+60 s) has left the 30 s lookback
    [(request, delay)] = held
    assert (request.run_id, delay) == (run_id, 30)
    assert receiver.received == [] and drain(exports_aws) == 0

    # asked again later: the processor has failed once more (a newer report): still waiting
    process_late(stuck, arrived_ms=end - 5_000, now_ms=end + 125_000, fails=True)
    answer_request(exports_aws, request, end + 130_000)
    assert [r["status"] for r in runs()] == ["waiting"]
    [_, (request, delay)] = held
    assert delay == 80  # the report of minute end+120 s leaves the lookback at end+210 s

    process_late(stuck, arrived_ms=end - 5_000, now_ms=end + 135_000)  # caught up: nothing reported
    answer_request(exports_aws, request, end + 215_000)  # the last report has left the lookback
    assert drain(exports_aws) == 3
    assert receiver.by_subject()["customer-1"]["completeness"] == "final"
    assert {u["groupBy"]["model"]: u["value"] for u in receiver.by_subject()["customer-1"]["usage"]} == {
        "gpt3": 50, "gpt4": 1300}
    [run] = runs()
    assert (run["id"], run["status"], run["completeness"], run["trigger"]) == (run_id, "succeeded", "final",
                                                                              "schedule")
    assert fire(report, end + 240_000) == []  # the window stays claimed by its run


def test_a_window_held_past_the_longest_hold_is_exported_provisional(exports_aws: Any, ctx: Any, receiver: Receiver,
                                                                    held: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("METERLINE_EXPORT_MAX_HOLD_SECONDS", "120")
    bootstrap.reset()
    ingest_and_count(usage_events())
    report = create_report(ctx, receiver, T0)
    end = T0 + HOUR
    assert call(ingest, "POST", "/api/v1/events", content_type=JSON,
                body=[cloud_event("stuck", subject="customer-1", time=at(59 * 60_000),
                                  data={"tokens": 1000, "model": "gpt4", "type": "input"})]).status == 204
    stuck = stream_records(EVENTS)[-2:]
    process_late(stuck, arrived_ms=end - 5_000, now_ms=end + 50_000, fails=True)
    [run_id] = fire(report, end + 60_000)
    [(request, _)] = held
    # the settle (40 s) and the longest hold (120 s) have passed; the processor is still failing
    process_late(stuck, arrived_ms=end - 5_000, now_ms=end + 155_000, fails=True)
    answer_request(exports_aws, request, end + 160_000)
    assert drain(exports_aws) == 3
    payload = receiver.by_subject()["customer-1"]
    assert payload["completeness"] == "provisional"
    assert {u["groupBy"]["model"]: u["value"] for u in payload["usage"]} == {"gpt3": 50, "gpt4": 300}  # not 1300
    [run] = runs()
    assert (run["id"], run["status"], run["completeness"]) == (run_id, "succeeded", "provisional")


def test_a_processor_keeping_up_reports_no_lag(exports_aws: Any) -> None:
    """Records handed over within the report threshold write nothing (no cost when healthy)."""
    from meterline.storage.processing_store import ProcessingLagStore

    assert call(ingest, "POST", "/api/v1/events", body=[cloud_event("fresh")], content_type=JSON).status == 204
    records = stream_records(EVENTS)
    process_late(records, arrived_ms=T0, now_ms=T0 + 10_000)
    assert ProcessingLagStore().samples(0) == []
    process_late(records, arrived_ms=T0, now_ms=T0 + 70_000)
    process_late(records, arrived_ms=T0 - 30_000, now_ms=T0 + 80_000)  # same minute: the earliest is kept
    process_late(records, arrived_ms=T0 - 10_000, now_ms=T0 + 90_000)
    assert [(s.minute_ms, s.oldest_arrival_ms) for s in ProcessingLagStore().samples(0)] == [
        (T0 + 60_000, T0 - 30_000)]
