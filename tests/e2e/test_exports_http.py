"""Usage exports over HTTP against `meterline dev`: a report created through the API, its schedule fired
by the local scheduler, a manual run, retries of a failing receiver, and the run history — with a real
receiver verifying every signature."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import urllib3

from tests.e2e.conftest import wait_for
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.e2e
http = urllib3.PoolManager()


def request(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    response = http.request(method, url, json=body) if body is not None else http.request(method, url)
    data = response.json() if response.data else None
    return response.status, data


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def ingest(base: str, events: list[dict[str, Any]]) -> None:
    response = http.request("POST", f"{base}/api/v1/events", json=events)
    assert response.status == 204, response.data


def test_schedule_fires_locally_and_manual_runs_retry_until_delivered(local_stack: str, receiver: Receiver) -> None:
    tag = uuid.uuid4().hex[:8]
    slug = f"e2e_{tag}"
    now = datetime.now(UTC)
    minute_start = now.replace(second=0, microsecond=0)
    status, created = request("POST", f"{local_stack}/api/v1/reports", {
        "slug": slug, "meterIdOrSlug": "tokens_total",
        "schedule": {"interval": "1m", "startAt": minute_start.isoformat()},
        "query": {"groupBy": ["model"]},
        "endpoint": {"url": receiver.url},
        "filter": {"subject": {"$in": [f"{tag}-a", f"{tag}-b"]}},
    })
    assert status == 201, created
    receiver.secret = created["signingSecret"]
    sent_at = datetime.now(UTC)
    event_time = sent_at.isoformat().replace("+00:00", "Z")
    ingest(local_stack, [
        {"specversion": "1.0", "type": "prompt", "id": f"{tag}-{i}", "source": "e2e", "time": event_time,
         "subject": subject, "data": {"tokens": tokens, "model": "gpt4", "type": "input"}}
        for i, (subject, tokens) in enumerate([(f"{tag}-a", 10), (f"{tag}-a", 5), (f"{tag}-b", 7), (f"{tag}-c", 1)])
    ])

    # A manual run over the last hour; the receiver fails each webhook's first attempt.
    receiver.fail_first = 1
    status, run = request("POST", f"{local_stack}/api/v1/reports/{slug}/runs", {
        "from": datetime.fromtimestamp(minute_start.timestamp() - 3600, UTC).isoformat(),
        "to": datetime.fromtimestamp(minute_start.timestamp() + 120, UTC).isoformat(),
    })
    assert status == 202 and run["status"] == "pending"

    def manual_done() -> dict[str, Any] | None:
        _, runs = request("GET", f"{local_stack}/api/v1/reports/{slug}/runs")
        manual = [r for r in runs if r["id"] == run["id"]]
        return manual[0] if manual and manual[0]["status"] not in ("pending", "running") else None

    finished = wait_for(manual_done, 30, "the manual run to finish")
    assert finished["status"] == "succeeded" and finished["subjects"] == 2
    assert finished["completeness"] == "provisional"  # its window had not ended: what was counted so far
    assert {(d["subject"], d["attempts"], d["status"]) for d in finished["deliveries"]} == {
        (f"{tag}-a", 2, "succeeded"), (f"{tag}-b", 2, "succeeded")}
    values = {d["body"]["query"]["subject"]: d["body"]["usage"][0]["value"] for d in receiver.received}
    assert values == {f"{tag}-a": 15, f"{tag}-b": 7}
    # a retried webhook keeps its id
    assert all(receiver.attempts[d["id"]] == 2 for d in receiver.received)

    # The schedule (rate(1 minute), first firing 5 s after the next minute boundary) exports the minute
    # the events are in, with no help from the test, once the stream processor is past its end: final.
    receiver.fail_first = 0

    def scheduled() -> list[dict[str, Any]]:
        _, runs = request("GET", f"{local_stack}/api/v1/reports/{slug}/runs")
        return [r for r in runs if r["trigger"] != "manual" and r["status"] == "succeeded" and r["subjects"]]

    [first] = wait_for(scheduled, 75, "a scheduled run")
    assert first["windowStart"] == sent_at.strftime("%Y-%m-%dT%H:%M:00.000Z")  # the events' minute
    assert (first["trigger"], first["subjects"], first["completeness"]) == ("schedule", 2, "final")
    assert {d["body"]["completeness"] for d in receiver.received if d["body"]["query"]["from"] == first["windowStart"]
            } == {"final"}

    status, _ = request("DELETE", f"{local_stack}/api/v1/reports/{slug}")
    assert status == 204


def test_report_errors_over_http(local_stack: str) -> None:
    status, problem = request("POST", f"{local_stack}/api/v1/reports", {
        "slug": "bad_one", "meterIdOrSlug": "tokens_total",
        "schedule": {"interval": "5s", "startAt": "2024-01-01T00:00:00Z"},
        "endpoint": {"url": "https://hooks.example.com"}, "filter": {"usage": {"$between": [1, 2]}}})
    assert status == 400
    assert {e["field"] for e in problem["errors"]} == {"schedule.interval", "filter.usage"}
    status, problem = request("GET", f"{local_stack}/api/v1/reports/no_such_report")
    assert status == 404 and problem["status"] == 404
