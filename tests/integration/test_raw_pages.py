"""The stream processor's raw pages: a quiet batch writes one page per (quarter-hour, subject bucket, minute)
it touches, whatever the number of meters its events feed (the rows of counter sets with few rows share the
page, each tagged with its counter set), lists every counter set in its manifest, and queries read the rows."""

from __future__ import annotations

import os
from typing import Any

from functions.api import handler as api
from functions.ingest import handler as ingest
from functions.processor import handler as processor
from meterline.domain.counting import subject_bucket
from meterline.domain.timeutil import MINUTE_MS, QUARTER_MS, floor_to, format_ms, now_ms
from meterline.storage.usage_store import SHARED, UsageStore, unpack
from tests.conftest import cloud_event, lambda_context, scan_all, stream_records
from tests.integration.http import call


def _request(i: int, subject: str, time_ms: int) -> dict[str, Any]:
    """An event of the three example `request` meters (api_requests_total, api_request_duration_seconds,
    api_request_ingress_bytes)."""
    return cloud_event(f"r{i}", type="request", subject=subject, time=format_ms(time_ms),
                       data={"method": "GET", "route": "/v1/items", "duration_seconds": 0.25 * i,
                             "ingress_bytes": 100 * i})


def _translate(i: int, subject: str, time_ms: int) -> dict[str, Any]:
    """An event of the three example `translate` meters (pages_total, words_total, translate_tokens_total)."""
    return cloud_event(f"t{i}", type="translate", subject=subject, time=format_ms(time_ms),
                       data={"pages": i, "words": 300 * i, "tokens": 900 * i, "model": "m1"})


def test_a_quiet_batch_writes_one_raw_page_per_quarter_bucket_and_minute(aws: Any) -> None:
    """Four events feeding six counter sets, in three (quarter, bucket, minute)s: three raw pages (one per
    counter set and minute, as before shared pages, would be twelve); the manifest lists all six counter sets;
    MINUTE queries read the rows."""
    minute = floor_to(now_ms() - 4 * MINUTE_MS, MINUTE_MS)
    other = next(subject for subject in (f"customer-{n}" for n in range(2, 100))
                 if subject_bucket(subject) != subject_bucket("customer-1"))
    events = [_request(1, "customer-1", minute + 1_000), _translate(1, "customer-1", minute + 2_000),
              _request(2, other, minute + 3_000), _request(3, "customer-1", minute + MINUTE_MS + 4_000)]
    assert call(ingest, "POST", "/api/v1/events", body=events, content_type="application/json").status == 204
    assert processor.handler({"Records": stream_records(os.environ["EVENTS_TABLE"])},
                             lambda_context()) == {"batchItemFailures": []}

    raw = [item for item in scan_all(aws, os.environ["USAGE_TABLE"]) if "#raw#" in item["pk"]["S"]]
    assert len(raw) == 3
    assert {item["pk"]["S"].split("#")[2] for item in raw} == {SHARED}
    tagged = {counter_set for item in raw for counter_set, _ in unpack(item["rows"]["B"])}
    assert len(tagged) == 6
    listed = {part[1] for quarter in {floor_to(minute, QUARTER_MS), floor_to(minute + MINUTE_MS, QUARTER_MS)}
              for part in UsageStore().read_manifests(quarter, "default")}
    assert listed == tagged

    window = {"from": format_ms(minute), "to": format_ms(minute + 2 * MINUTE_MS), "windowSize": "MINUTE"}
    for slug, want in (("api_requests_total", [2, 1]), ("api_request_ingress_bytes", [300, 300]),
                       ("words_total", [300])):
        reply = call(api, "GET", f"/api/v1/meters/{slug}/query", query=window)
        assert reply.status == 200, reply.body
        assert [row["value"] for row in reply.json()["data"]] == want, slug
