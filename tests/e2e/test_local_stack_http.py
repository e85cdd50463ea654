"""End to end over HTTP against `meterline dev`: ingestion, listing, bad input, concurrency, and
OpenMeter's own Python SDK."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import cloud_event

pytestmark = pytest.mark.e2e


def request(url: str, method: str = "GET", body: bytes | None = None,
            content_type: str | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method)
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def unique_events(n: int, **overrides: Any) -> list[dict[str, Any]]:
    run = uuid.uuid4().hex[:8]
    return [cloud_event(f"{run}-{i}", **overrides) for i in range(n)]


def listed(base: str, **query: str) -> list[dict[str, Any]]:
    from urllib.parse import urlencode

    status, _, body = request(f"{base}/api/v1/events?{urlencode(query)}")
    assert status == 200
    return json.loads(body)


def wait_listed(base: str, ids: set[str], **query: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        found = [e for e in listed(base, **query) if e["event"]["id"] in ids]
        if len(found) >= len(ids) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_ingest_then_list_over_http(local_stack: str) -> None:
    subject = f"http-{uuid.uuid4().hex[:8]}"
    events = unique_events(5, subject=subject)
    status, _, body = request(f"{local_stack}/api/v1/events", "POST", json.dumps(events).encode(),
                              "application/cloudevents-batch+json")
    assert (status, body) == (204, b"")
    found = wait_listed(local_stack, {e["id"] for e in events}, subject=subject,
                        **{"from": "2024-01-01T00:00:00Z", "to": "2024-01-02T00:00:00Z"})
    assert sorted(e["event"]["id"] for e in found) == sorted(e["id"] for e in events)
    assert all("validationError" not in e for e in found)


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{oops", "application/json", 400),
        (b"[]", "application/cloudevents-batch+json", 400),
        (json.dumps([{"id": "x"}]).encode(), "application/json", 400),
        (json.dumps(cloud_event()).encode(), "text/plain", 415),
        (b"[" + b" " * (1024 * 1024) + b"]", "application/json", 413),
    ],
)
def test_bad_input_over_http(local_stack: str, body: bytes, content_type: str, status: int) -> None:
    got, headers, raw = request(f"{local_stack}/api/v1/events", "POST", body, content_type)
    assert got == status
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(raw)["status"] == status


def test_each_request_is_logged_on_one_line(local_stack: str) -> None:
    from tests.e2e.conftest import STACK_OUTPUT

    marker = uuid.uuid4().hex
    request(f"{local_stack}/api/v1/events?subject={marker}")
    deadline = time.monotonic() + 5
    while not any(marker in line for line in STACK_OUTPUT) and time.monotonic() < deadline:
        time.sleep(0.05)
    [line] = [line for line in STACK_OUTPUT if marker in line]
    assert f'"GET /api/v1/events?subject={marker}" 200' in line


def test_unknown_route_is_404(local_stack: str) -> None:
    status, headers, _ = request(f"{local_stack}/api/v1/nope")
    assert status == 404 and headers["content-type"] == "application/problem+json"


def test_same_batch_from_8_threads_is_stored_once(local_stack: str) -> None:
    subject = f"conc-{uuid.uuid4().hex[:8]}"
    events = unique_events(40, subject=subject, time="2024-01-03T00:00:00Z")
    body = json.dumps(events).encode()
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def send() -> None:
        barrier.wait()
        statuses.append(request(f"{local_stack}/api/v1/events", "POST", body, "application/json")[0])

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [204] * 8
    time.sleep(0.5)  # let the stream settle: any duplicate insert would show up as a second listing
    found = wait_listed(local_stack, {e["id"] for e in events}, subject=subject,
                        **{"from": "2024-01-03T00:00:00Z", "to": "2024-01-03T00:00:01Z"})
    assert sorted(e["event"]["id"] for e in found) == sorted(e["id"] for e in events)


def test_openmeter_python_sdk_works(local_stack: str) -> None:
    from openmeter import Client

    client = Client(endpoint=local_stack)
    subject = f"sdk-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC).replace(microsecond=0)
    single = {"specversion": "1.0", "type": "prompt", "id": f"{subject}-1", "source": "sdk-test",
              "subject": subject, "time": now.isoformat(), "data": {"tokens": 10, "model": "m", "type": "input"}}
    client.events.ingest_event(single)
    batch = [{**single, "id": f"{subject}-{i}", "time": (now - timedelta(minutes=i)).isoformat()} for i in (2, 3)]
    client.events.ingest_events(batch)
    client.events.ingest_events(batch)  # a retry changes nothing

    deadline = time.monotonic() + 10
    while True:
        events = client.events.list(subject=subject, from_parameter=now - timedelta(hours=1),
                                    to=now + timedelta(minutes=1), limit=10)
        if len(events) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [e.event.id for e in events] == [f"{subject}-1", f"{subject}-2", f"{subject}-3"]
    assert events[0].event.time == now
    assert events[0].ingested_at >= now - timedelta(seconds=5)
    assert events[0].validation_error is None
