"""A new meter sees history: its backfill rebuilds counters from the events table, resumably, and
overlapping with live stream processing without counting anything twice."""

from __future__ import annotations

import os

import orjson

from functions.api import handler as api
from functions.ingest import handler as ingest
from functions.processor import handler as processor
from meterline.domain.timeutil import parse_rfc3339, to_epoch_ms
from meterline.services.backfill import BackfillWorker
from meterline.services.compaction import Compactor
from meterline.services.meter_source import meter_catalog
from meterline.settings import CompactionTiming
from meterline.storage.events_store import EventsStore
from meterline.storage.meters_store import PENDING_BACKFILLS, MetersStore
from meterline.storage.usage_store import UsageStore
from tests.conftest import cloud_event, lambda_context, stream_records
from tests.integration.http import call

TIMING = CompactionTiming(grace_ms=10_000, write_margin_ms=5_000)
HOUR = 3_600_000
EVENTS = os.environ["EVENTS_TABLE"]


def post_events(events: list[dict]) -> None:
    assert call(ingest, "POST", "/api/v1/events", body=events, content_type="application/json").status == 204


def process_new_records(seen: set[str]) -> None:
    records = [r for r in stream_records(EVENTS) if r["dynamodb"]["SequenceNumber"] not in seen]
    seen.update(r["dynamodb"]["SequenceNumber"] for r in records)
    if records:
        assert processor.handler({"Records": records}, lambda_context()) == {"batchItemFailures": []}


def worker() -> BackfillWorker:
    return BackfillWorker(EventsStore(), UsageStore(), MetersStore(), settle_ms=6_000)


def query(slug: str, **params: str) -> dict:
    reply = call(api, "GET", f"/api/v1/meters/{slug}/query", query=params)
    assert reply.status == 200, reply.body
    return reply.json()


def test_new_meter_counts_history_once_even_overlapping_live_processing(aws, monkeypatch) -> None:
    seen: set[str] = set()
    old = [cloud_event(i, type="render", subject=f"c{i % 2}", time=f"2024-03-01T0{i % 5}:00:00Z",
                       data={"frames": i, "engine": "gpu" if i % 3 else "cpu"}) for i in range(30)]
    post_events(old)
    process_new_records(seen)  # no meter for "render" yet: nothing counted

    reply = call(api, "POST", "/api/v1/meters", content_type="application/json", body={
        "slug": "frames_total", "eventType": "render", "aggregation": "SUM", "valueProperty": "$.frames",
        "groupBy": {"engine": "$.engine"}})
    assert reply.status == 201 and reply.json()["backfill"] == {"status": "pending"}
    created = to_epoch_ms(parse_rfc3339(reply.json()["createdAt"]))
    compactor = Compactor(UsageStore(), meter_catalog, TIMING)
    compactor.run(created)  # as deployed: the compactor has been running every minute all along

    # Live events after creation are counted by the processor...
    new = [cloud_event(100 + i, type="render", subject="c0", time="2024-03-01T06:00:00Z",
                       data={"frames": 1000, "engine": "gpu"}) for i in range(3)]
    post_events(new)
    from meterline.services import meter_source

    meter_source.invalidate()
    process_new_records(seen)

    # ...and the backfill, which waits for processors to know the meter, reads all of them too, in steps
    # (hours of the time index) that stop at a deadline and resume.
    early = worker().run(created + 1_000)  # too early for the new meter (the seeded ones go ahead)
    assert "default/frames_total" not in early.completed
    assert call(api, "GET", "/api/v1/meters/frames_total").json()["backfill"] == {"status": "pending"}
    budget = iter(range(10**6))
    first = worker().run(created + 7_000, out_of_time=lambda: next(budget) > 3)  # stops after 3 hours
    assert first.completed == [] and first.hours == 3
    assert call(api, "GET", "/api/v1/meters/frames_total").json()["backfill"]["status"] == "running"
    report = worker().run(created + 7_500)
    assert (first.events + report.events, report.completed) == (33, ["default/frames_total"])
    assert worker().run(created + 8_000).hours == 0
    meter = call(api, "GET", "/api/v1/meters/frames_total").json()
    assert meter["backfill"]["status"] == "completed"
    assert meter["backfill"]["eventsScanned"] == 33

    # other namespaces' events are not read: the time index is per namespace
    reads = []
    monkeypatch.setattr(EventsStore, "hours", lambda self, namespace, *_: reads.append(namespace) or iter(()))
    MetersStore().set_backfill("default", "frames_total", {"status": "pending"})
    worker().run(created + 9_000)
    assert set(reads) == {"default"}
    monkeypatch.undo()

    compactor.run_until_caught_up(created + HOUR)
    expected = sum(i for i in range(30)) + 3000
    result = query("frames_total", **{"from": "2024-03-01T00:00:00Z", "to": "2024-03-02T00:00:00Z"})
    assert [row["value"] for row in result["data"]] == [expected]
    by_engine = query("frames_total", groupBy="engine", windowSize="DAY",
                      **{"from": "2024-03-01T00:00:00Z", "to": "2024-03-02T00:00:00Z"})
    assert {row["groupBy"]["engine"]: row["value"] for row in by_engine["data"]} == {
        "cpu": sum(i for i in range(30) if i % 3 == 0),
        "gpu": sum(i for i in range(30) if i % 3) + 3000,
    }

    # A repeated backfill (e.g. after a crash before its status was saved) changes nothing.
    store = MetersStore()
    store.set_backfill("default", "frames_total", {"status": "pending"})
    worker().run(created + 9_000)
    compactor.run_until_caught_up(created + 2 * HOUR)
    result = query("frames_total", **{"from": "2024-03-01T00:00:00Z", "to": "2024-03-02T00:00:00Z"})
    assert [row["value"] for row in result["data"]] == [expected]
    assert orjson.loads(orjson.dumps(result))["data"][0]["subject"] is None


def test_the_worker_reads_only_due_backfills_never_the_whole_catalog(aws, monkeypatch) -> None:
    """A marker per due backfill: the worker finds work with one Query (no Scan of the catalog, which
    also holds reports, runs and deliveries), drops the marker when the backfill completes, and drops
    markers of meters that are gone or no longer due."""
    def no_scan(*_: object, **__: object) -> None:
        raise AssertionError("the backfill worker scanned the catalog")

    monkeypatch.setattr(MetersStore, "scan_items", no_scan)
    store = MetersStore()
    markers = lambda: {item["sk"]["S"] for item in store.partition_items(PENDING_BACKFILLS)}  # noqa: E731
    worker().run(to_epoch_ms(parse_rfc3339("2030-01-01T00:00:00Z")))  # the seeded meters' backfills
    assert markers() == set()
    for slug in ("frames_a", "frames_b"):
        reply = call(api, "POST", "/api/v1/meters", content_type="application/json", body={
            "slug": slug, "eventType": "render", "aggregation": "SUM", "valueProperty": "$.frames"})
        assert reply.status == 201
    assert markers() == {"default#frames_a", "default#frames_b"}
    assert call(api, "DELETE", "/api/v1/meters/frames_b").status == 204
    assert markers() == {"default#frames_a"}
    store._mark_pending("default", "frames_gone")  # a marker left by a create that failed after it
    created = to_epoch_ms(parse_rfc3339(call(api, "GET", "/api/v1/meters/frames_a").json()["createdAt"]))
    report = worker().run(created + 7_000)
    assert report.completed == ["default/frames_a"] and markers() == set()
