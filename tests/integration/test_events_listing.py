"""Ingest (the event time index) -> GET /api/v1/events, all real handlers on moto."""

from __future__ import annotations

import os

import pytest

from functions.api import handler as api
from functions.ingest import handler as ingest
from functions.processor import handler as processor
from tests.conftest import cloud_event, lambda_context, scan_all, stream_records
from tests.integration.http import call

EVENTS = os.environ["EVENTS_TABLE"]
USAGE = os.environ["USAGE_TABLE"]
DAY = {"from": "2024-01-01T00:00:00Z", "to": "2024-01-02T00:00:00Z"}


def ingest_and_process(events: list[dict], redeliver: bool = False) -> None:
    assert call(ingest, "POST", "/api/v1/events", body=events, content_type="application/json").status == 204
    records = stream_records(EVENTS)
    assert processor.handler({"Records": records}, lambda_context()) == {"batchItemFailures": []}
    if redeliver:  # at-least-once: the same records again, and bisected halves
        processor.handler({"Records": records}, lambda_context())
        processor.handler({"Records": records[len(records) // 2:]}, lambda_context())


def list_events(**query: str):
    return call(api, "GET", "/api/v1/events", query=query)


def test_lists_newest_first_with_validation_errors(aws) -> None:
    ingest_and_process([
        cloud_event(1, time="2024-01-01T10:00:00.001Z"),
        cloud_event(2, time="2024-01-01T12:00:00Z", type="unknown_type"),
        cloud_event(3, time="2024-01-01T11:00:00Z", data={"tokens": "lots"}),
        cloud_event(4, time="2023-12-31T23:59:59.999Z"),  # before the range
    ])
    reply = list_events(**DAY)
    assert reply.status == 200
    listed = reply.json()
    assert [e["event"]["id"] for e in listed] == ["evt-2", "evt-3", "evt-1"]
    assert listed[0]["validationError"] == "no meter found for event type unknown_type"
    assert listed[1]["validationError"] == "meter tokens_total: valueProperty $.tokens is not a number: 'lots'"
    assert "validationError" not in listed[2]
    assert listed[2]["event"] == {
        "id": "evt-1", "source": "chat-app", "specversion": "1.0", "type": "prompt", "subject": "customer-1",
        "time": "2024-01-01T10:00:00.001Z", "data": {"tokens": "123456", "model": "gpt4-turbo", "type": "output"},
    }
    assert listed[2]["ingestedAt"].endswith("Z") and listed[2]["storedAt"] == listed[2]["ingestedAt"]


def test_redelivered_stream_batches_do_not_duplicate_listing(aws) -> None:
    ingest_and_process([cloud_event(i, time=f"2024-01-01T{i:02d}:00:00Z") for i in range(10)], redeliver=True)
    listed = list_events(**DAY).json()
    assert [e["event"]["id"] for e in listed] == [f"evt-{i}" for i in reversed(range(10))]


def test_filters_and_limit(aws) -> None:
    events = [cloud_event(i, subject=f"Customer-{i % 3}", time=f"2024-01-01T{i % 24:02d}:{i // 24:02d}:00Z")
              for i in range(60)]
    ingest_and_process(events)
    everything = list_events(**DAY).json()
    assert len(everything) == 60
    times = [e["event"]["time"] for e in everything]
    assert times == sorted(times, reverse=True)

    limited = list_events(**DAY, limit="7").json()
    assert limited == everything[:7]

    subject = list_events(**DAY, subject="customer-1").json()  # partial, case-insensitive
    assert {e["event"]["subject"] for e in subject} == {"Customer-1"} and len(subject) == 20

    by_id = list_events(**DAY, id="evt-5").json()
    assert sorted(e["event"]["id"] for e in by_id) == ["evt-5", "evt-50", "evt-51", "evt-52", "evt-53",
                                                        "evt-54", "evt-55", "evt-56", "evt-57", "evt-58",
                                                        "evt-59"]
    # Both ends are inclusive, as OpenMeter lists events.
    window = list_events(**{"from": "2024-01-01T05:00:00Z", "to": "2024-01-01T06:00:00Z"}).json()
    assert sorted(e["event"]["time"] for e in window) == [
        "2024-01-01T05:00:00.000Z", "2024-01-01T05:01:00.000Z", "2024-01-01T05:02:00.000Z",
        "2024-01-01T06:00:00.000Z"]


def test_listing_spans_days_and_stops_at_the_limit(aws) -> None:
    ingest_and_process([cloud_event(i, time=f"2024-01-{i + 1:02d}T12:00:00Z") for i in range(20)])
    listed = list_events(**{"from": "2024-01-01T00:00:00Z", "to": "2024-02-01T00:00:00Z"}, limit="5").json()
    assert [e["event"]["id"] for e in listed] == ["evt-19", "evt-18", "evt-17", "evt-16", "evt-15"]


def test_processor_ignores_removals_and_indexes_only_inserts(aws) -> None:
    ingest_and_process([cloud_event(1)])
    pages_before = scan_all(aws, USAGE)
    removal = {"eventID": "r", "eventName": "REMOVE", "eventSource": "aws:dynamodb",
               "dynamodb": {"Keys": {"pk": {"S": "x"}}, "SequenceNumber": "999", "SizeBytes": 10,
                            "StreamViewType": "NEW_IMAGE"}, "eventSourceARN": "arn"}
    assert processor.handler({"Records": [removal]}, lambda_context()) == {"batchItemFailures": []}
    assert scan_all(aws, USAGE) == pages_before


def test_undecodable_record_is_reported_as_a_batch_item_failure(aws) -> None:
    call(ingest, "POST", "/api/v1/events", body=[cloud_event(1), cloud_event(2)], content_type="application/json")
    records = stream_records(EVENTS)
    broken = {**records[1], "dynamodb": {**records[1]["dynamodb"], "NewImage": {"pk": {"S": "only-a-key"}}}}
    response = processor.handler({"Records": [records[0], broken]}, lambda_context())
    assert response == {"batchItemFailures": [{"itemIdentifier": broken["dynamodb"]["SequenceNumber"]}]}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"from": "yesterday"}, "from"),
        ({"to": "2024-01-01"}, "to"),
        ({"from": "2024-01-02T00:00:00Z", "to": "2024-01-01T00:00:00Z"}, "from"),
        ({"from": "2020-01-01T00:00:00Z", "to": "2024-01-01T00:00:00Z"}, "from"),
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"subject": ""}, "subject"),
        ({"ingestedAtFrom": "2024-01-02T00:00:00Z", "ingestedAtTo": "2024-01-01T00:00:00Z"}, "ingestedAtFrom"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_list_parameters_are_400_problems(aws, query: dict, field: str) -> None:
    reply = list_events(**query)
    assert reply.status == 400 and reply.content_type == "application/problem+json"
    assert field in [e["field"] for e in reply.json()["errors"]]


def post(events: list[dict]) -> None:
    assert call(ingest, "POST", "/api/v1/events", body=events, content_type="application/json").status == 204


def test_events_are_listed_as_soon_as_they_are_stored(aws) -> None:
    # The time index is written by ingestion itself: no stream batch needs to have run.
    post([cloud_event(1, time="2024-01-01T10:00:00Z"), cloud_event(2, time="2024-01-01T11:00:00Z")])
    assert [e["event"]["id"] for e in list_events(**DAY).json()] == ["evt-2", "evt-1"]
    assert processor.handler({"Records": stream_records(EVENTS)}, lambda_context()) == {"batchItemFailures": []}
    # the stream processor writes counting rows only: no second index of the events
    assert {item["pk"]["S"].split("#")[1] for item in scan_all(aws, USAGE) if item["pk"]["S"].startswith("default#")
            } <= {"raw", "late"}


def test_a_manifest_without_its_event_and_a_duplicate_at_another_time_are_not_listed(aws) -> None:
    from meterline.bootstrap import events_store
    from meterline.domain.events import CloudEvent

    store = events_store()
    post([cloud_event(1, time="2024-01-01T10:00:00Z"), cloud_event(2, time="2024-01-01T09:00:00Z")])
    # a request whose manifest was written but whose event put then failed (a 503 the client gave up on)
    lost = CloudEvent.model_validate(cloud_event(3, time="2024-01-01T12:00:00Z"))
    store.put_batch(store.manifests("default", [lost], 1_704_110_400_000))
    # the same id again with another time: a duplicate, stored once, at its first time
    post([cloud_event(1, time="2024-01-01T13:00:00Z")])
    listed = list_events(**DAY).json()
    assert [(e["event"]["id"], e["event"]["time"]) for e in listed] == [
        ("evt-1", "2024-01-01T10:00:00.000Z"), ("evt-2", "2024-01-01T09:00:00.000Z")]
    # with a limit, refused entries make room for the next newest
    assert [e["event"]["id"] for e in list_events(**DAY, limit="1").json()] == ["evt-1"]


def test_a_retried_request_lists_each_event_once_with_its_first_ingestion(aws) -> None:
    batch = [cloud_event(i, time=f"2024-01-01T{i:02d}:30:00Z") for i in range(5)]
    post(batch)
    first = list_events(**DAY).json()
    post(batch)  # the client's retry: every event a duplicate, a second manifest naming them all
    assert list_events(**DAY).json() == first
    assert len(first) == 5


def test_manifests_written_before_they_carried_subjects_and_times_are_read_through_the_events(aws) -> None:
    import zlib

    import orjson

    from meterline.bootstrap import events_store
    from meterline.domain.events import CloudEvent

    store = events_store()
    event = CloudEvent.model_validate(cloud_event(7, time="2024-01-01T10:20:00Z"))
    aws.put_item(TableName=EVENTS, Item=store.item("default", event, 1_704_104_400_000))
    [manifest] = store.manifests("default", [event], 1_704_104_400_000)
    manifest["keys"] = {"B": zlib.compress(orjson.dumps({"prompt": [["chat-app", "evt-7"]]}))}  # the older shape
    del manifest["ingestedAt"]
    store.put_batch([manifest])
    assert [(e["event"]["id"], e["event"]["time"]) for e in list_events(**DAY).json()] == [
        ("evt-7", "2024-01-01T10:20:00.000Z")]
