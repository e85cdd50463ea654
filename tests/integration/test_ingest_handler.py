"""The ingest handler against moto: what is stored, exactly once, and nothing for bad input."""

from __future__ import annotations

import os
import threading

import orjson
import pytest

from functions.ingest import handler as ingest
from meterline import bootstrap
from meterline.domain.timeutil import parse_rfc3339, to_epoch_ms
from meterline.storage.events_store import EventsStore, event_key, is_manifest
from tests.conftest import cloud_event, scan_all, scan_events, stream_records
from tests.integration.http import call

EVENTS = os.environ["EVENTS_TABLE"]


def post(body: object, content_type: str = "application/cloudevents-batch+json", **kwargs: object):
    return call(ingest, "POST", "/api/v1/events", body=body, content_type=content_type, **kwargs)


def test_single_event_is_stored_with_its_attributes(aws) -> None:
    reply = post(cloud_event(1), "application/cloudevents+json")
    assert reply.status == 204 and reply.body == b""
    [item] = scan_events(aws, EVENTS)
    assert item["pk"]["S"] == event_key("default", "chat-app", "evt-1")
    assert item["subject"]["S"] == "customer-1"
    assert item["time"]["N"] == "1704067200001"
    assert orjson.loads(item["data"]["S"]) == {"tokens": "123456", "model": "gpt4-turbo", "type": "output"}
    ingested = int(item["ingestedAt"]["N"])
    assert int(item["expiresAt"]["N"]) == ingested // 1000 + 400 * 86_400


def test_batch_is_stored_and_duplicates_change_nothing(aws) -> None:
    batch = [cloud_event(i, subject=f"c-{i % 3}") for i in range(250)]
    assert post(batch).status == 204
    first = {i["pk"]["S"]: i for i in scan_events(aws, EVENTS)}
    assert len(first) == 250

    # A retry with different content under the same (source, id) is a success that changes nothing.
    retry = [cloud_event(i, subject="someone-else", data={"tokens": 1}) for i in range(250)]
    assert post(retry + [cloud_event(999)]).status == 204
    after = {i["pk"]["S"]: i for i in scan_events(aws, EVENTS)}
    assert len(after) == 251
    assert all(after[pk] == item for pk, item in first.items())
    inserts = [r for r in stream_records(EVENTS) if r["eventName"] == "INSERT"
               and not is_manifest(r["dynamodb"]["NewImage"])]
    assert len(inserts) == 251


def test_same_id_from_different_sources_are_different_events(aws) -> None:
    assert post([cloud_event(1, source="a#b", id="c"), cloud_event(1, source="a", id="b#c")]).status == 204
    assert len(scan_events(aws, EVENTS)) == 2


def test_same_batch_from_8_threads_is_stored_exactly_once(aws) -> None:
    batch = [cloud_event(i) for i in range(200)]
    body = orjson.dumps(batch)
    store = EventsStore(retention_days=400)
    from meterline.http.requests import parse_events

    barrier = threading.Barrier(8)
    results = []

    def send() -> None:
        events = parse_events(body, "application/json", 1_800_000_000_000)  # received after the events' time
        barrier.wait()
        results.append(store.put_new("default", events, 1))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.stored for r in results) == 200
    assert sum(r.duplicates for r in results) == 7 * 200
    assert len(scan_events(aws, EVENTS)) == 200
    assert len([r for r in stream_records(EVENTS) if r["eventName"] == "INSERT"
                and not is_manifest(r["dynamodb"]["NewImage"])]) == 200


@pytest.mark.parametrize(
    ("kwargs", "status", "kind"),
    [
        ({"raw_body": b"{not json", "content_type": "application/json"}, 400, "malformed-json"),
        ({"body": [], "content_type": "application/json"}, 400, "invalid-request"),
        ({"body": [cloud_event(1), cloud_event(2, subject="")]}, 400, "invalid-events"),
        ({"body": [cloud_event(1), {"id": "x"}]}, 400, "invalid-events"),
        ({"body": cloud_event(1), "content_type": "text/plain"}, 415, "unsupported-media-type"),
        ({"body": cloud_event(1), "content_type": None}, 415, "unsupported-media-type"),
        ({"body": [cloud_event(i) for i in range(1001)]}, 413, "payload-too-large"),
        ({"body": [cloud_event(1, data={"x": "y" * 70_000})]}, 413, "payload-too-large"),
        ({"raw_body": b"[" + b" " * (1024 * 1024) + b"]", "content_type": "application/json"}, 413,
         "payload-too-large"),
    ],
)
def test_bad_input_is_a_precise_problem_and_stores_nothing(aws, kwargs: dict, status: int, kind: str) -> None:
    content_type = kwargs.pop("content_type", "application/cloudevents-batch+json")
    reply = post(kwargs.pop("body", None), content_type, **kwargs)
    assert reply.status == status
    assert reply.content_type == "application/problem+json"
    problem = reply.json()
    assert problem["status"] == status
    assert problem["type"] == f"urn:meterline:problem:{kind}"
    assert problem["title"] and problem["detail"]
    assert scan_all(aws, EVENTS) == []


def test_batch_problem_names_index_and_field(aws) -> None:
    reply = post([cloud_event(0), cloud_event(1, time="not-a-time"), cloud_event(2, subject=None)])
    assert reply.status == 400
    assert [(e["index"], e["field"]) for e in reply.json()["errors"]] == [(1, "time"), (2, "subject")]


def test_storage_failure_is_503_and_retry_is_safe(aws, monkeypatch) -> None:
    store = bootstrap.events_store()
    original = store._put_all
    calls = {"n": 0}

    def flaky(items):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("throttled")
        return original(items)

    monkeypatch.setattr(store, "_put_all", flaky)
    batch = [cloud_event(i) for i in range(50)]
    reply = post(batch)
    assert reply.status == 503 and reply.json()["type"] == "urn:meterline:problem:storage-unavailable"
    assert reply.headers["retry-after"] == "1"
    assert post(batch).status == 204
    assert len(scan_events(aws, EVENTS)) == 50


def test_a_single_event_storage_failure_is_503_with_retry_after(aws, monkeypatch) -> None:
    from botocore.exceptions import ClientError

    client = bootstrap.events_store().client

    def throttled(**_: object) -> None:
        raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}},
                          "PutItem")

    monkeypatch.setattr(client, "put_item", throttled)
    reply = post(cloud_event(7), "application/cloudevents+json")
    assert reply.status == 503, reply.body
    assert reply.headers["retry-after"] == "1"
    assert reply.content_type == "application/problem+json"
    assert scan_events(aws, EVENTS) == []  # (the request's time-index manifest may be there: readers skip it)


def test_data_nested_deeper_than_32_levels_is_400_and_stores_nothing(aws) -> None:
    deep: dict = {}
    node = deep
    for _ in range(40):
        node["n"] = {}
        node = node["n"]
    shallow: dict = {}
    node = shallow
    for _ in range(31):
        node["n"] = {}
        node = node["n"]
    reply = post([cloud_event(1, data=shallow), cloud_event(2, data=deep)])
    assert reply.status == 400
    assert [(e["index"], e["field"], e["reason"]) for e in reply.json()["errors"]] == [
        (1, "data", "must be nested at most 32 levels deep")]
    assert scan_all(aws, EVENTS) == []
    assert post([cloud_event(1, data=shallow)]).status == 204


def test_unknown_route_is_404_problem(aws) -> None:
    reply = call(ingest, "POST", "/api/v1/nothing", body={}, content_type="application/json")
    assert reply.status == 404 and reply.content_type == "application/problem+json"


def test_every_stored_event_is_found_by_namespace_type_and_hour(aws) -> None:
    """The time index: per request one manifest per UTC hour of event time; reading an hour gives exactly
    the namespace's stored events of the types asked for in that hour, a duplicate once."""
    events = [cloud_event(i, time=f"2024-01-01T0{i % 3}:{i:02d}:00Z") for i in range(30)]
    events += [cloud_event("other", type="render", time="2024-01-01T00:30:00Z", data={"frames": 1})]
    assert post(events).status == 204
    assert post(events[:5]).status == 204  # a retry: its manifest names stored events again
    store = bootstrap.events_store()
    hour = to_epoch_ms(parse_rfc3339("2024-01-01T01:00:00Z"))
    found = store.at_hour("default", {"prompt"}, hour)
    assert [e.id for e in found] == [f"evt-{i}" for i in range(30) if i % 3 == 1]
    assert [e.id for e in store.at_hour("default", {"render"}, hour - 3_600_000)] == ["evt-other"]
    assert len(store.at_hour("default", {"render", "prompt"}, hour - 3_600_000)) == 11
    assert store.at_hour("tenant-b", {"prompt"}, hour) == [] and store.at_hour("default", {"prompt"}, hour * 2) == []
    manifests = [item for item in scan_all(aws, EVENTS) if is_manifest(item)]
    assert len(manifests) == 3 + 3  # the 3 hours of the first request, then the retry's 3 hours
