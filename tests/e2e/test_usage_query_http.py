"""Usage queries over HTTP against `meterline dev`: counts after ingestion (including duplicates),
windows and time zones, CSV, bad parameters, and OpenMeter's SDK."""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import urlencode

import pytest

from tests.e2e.test_local_stack_http import request

pytestmark = pytest.mark.e2e

DAY = {"from": "2024-02-01T00:00:00Z", "to": "2024-02-03T00:00:00Z"}


def ingest(base: str, events: list[dict]) -> None:
    status, _, body = request(f"{base}/api/v1/events", "POST", json.dumps(events).encode(), "application/json")
    assert status == 204, body


def query(base: str, meter: str, accept: str | None = None, **params) -> tuple[int, dict | str]:
    from urllib.error import HTTPError
    from urllib.request import Request, urlopen

    req = Request(f"{base}/api/v1/meters/{meter}/query?{urlencode(params, doseq=True)}")
    if accept:
        req.add_header("Accept", accept)
    try:
        with urlopen(req, timeout=30) as response:
            raw = response.read().decode()
            return response.status, raw if accept == "text/csv" else json.loads(raw)
    except HTTPError as error:
        return error.code, json.loads(error.read())


def wait_for(base: str, meter: str, expected_rows: int, **params) -> dict:
    deadline = time.monotonic() + 15
    while True:
        status, result = query(base, meter, **params)
        assert status == 200, result
        if len(result["data"]) >= expected_rows or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def token_event(subject: str, i: int, time_: str, tokens, model: str = "gpt-4", kind: str = "input") -> dict:
    return {"specversion": "1.0", "type": "prompt", "id": f"{subject}-{i}", "source": "e2e", "subject": subject,
            "time": time_, "data": {"tokens": tokens, "model": model, "type": kind}}


def test_sum_by_day_and_model_with_duplicates(local_stack: str) -> None:
    subject = f"q-{uuid.uuid4().hex[:8]}"
    events = [
        token_event(subject, 1, "2024-02-01T10:00:00Z", 100),
        token_event(subject, 2, "2024-02-01T23:59:59.999Z", "50", model="llama"),
        token_event(subject, 3, "2024-02-02T00:00:00Z", 7),
        token_event(subject, 4, "2024-02-02T05:00:00Z", "not-a-number"),
    ]
    ingest(local_stack, events)
    ingest(local_stack, events[:2])  # duplicates change nothing
    result = wait_for(local_stack, "tokens_total", 3, subject=subject, windowSize="DAY", groupBy="model", **DAY)
    assert result["from"] == "2024-02-01T00:00:00.000Z" and result["windowSize"] == "DAY"
    rows = [(r["windowStart"], r["groupBy"]["model"], r["value"], r["subject"]) for r in result["data"]]
    assert rows == [
        ("2024-02-01T00:00:00.000Z", "gpt-4", 100, subject),
        ("2024-02-01T00:00:00.000Z", "llama", 50, subject),
        ("2024-02-02T00:00:00.000Z", "gpt-4", 7, subject),
    ]
    # Asia/Kolkata days start at 18:30 UTC: 23:59:59.999Z and 00:00Z fall in the same local day
    result = wait_for(local_stack, "tokens_total", 2, subject=subject, windowSize="DAY",
                      windowTimeZone="Asia/Kolkata", **DAY)
    assert [(r["windowStart"], r["value"]) for r in result["data"]] == [
        ("2024-02-01T00:00:00.000Z", 100), ("2024-02-01T18:30:00.000Z", 57)]
    status, csv = query(local_stack, "tokens_total", accept="text/csv", subject=subject, **DAY)
    assert status == 200
    assert csv.splitlines() == ["window_start,window_end,subject,value",
                                f"2024-02-01T00:00:00.000Z,2024-02-03T00:00:00.000Z,{subject},157"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"windowSize": "WEEK"}, "windowSize"),
        ({"windowTimeZone": "Mars/Olympus"}, "windowTimeZone"),
        ({"from": "2024-02-02T00:00:00Z", "to": "2024-02-01T00:00:00Z"}, "from"),
        ({"from": "yesterday"}, "from"),
        ({"groupBy": "colour"}, "groupBy"),
        ({"filterGroupBy[colour]": "red"}, "filterGroupBy[colour]"),
        ({"bogus": "1"}, "bogus"),
    ],
)
def test_bad_query_parameters_are_400(local_stack: str, params: dict, field: str) -> None:
    status, problem = query(local_stack, "tokens_total", **params)
    assert status == 400
    assert field in [e["field"] for e in problem["errors"]]


def test_unknown_meter_is_404(local_stack: str) -> None:
    status, problem = query(local_stack, "no_such_meter", **DAY)
    assert status == 404 and problem["status"] == 404


def test_openmeter_sdk_query(local_stack: str) -> None:
    from datetime import UTC, datetime

    from openmeter import Client

    subject = f"sdk-q-{uuid.uuid4().hex[:8]}"
    ingest(local_stack, [token_event(subject, i, f"2024-02-01T0{i}:00:00Z", 10 * i) for i in range(1, 4)])
    wait_for(local_stack, "tokens_total", 1, subject=subject, **DAY)
    client = Client(endpoint=local_stack)
    result = client.meters.query_json("tokens_total", subject=[subject], window_size="HOUR",
                                      from_parameter=datetime(2024, 2, 1, tzinfo=UTC),
                                      to=datetime(2024, 2, 2, tzinfo=UTC))
    assert [(row.window_start.hour, row.value) for row in result.data] == [(1, 10), (2, 20), (3, 30)]
    assert result.data[0].subject == subject


def test_meter_created_with_the_sdk_backfills_history(local_stack: str) -> None:
    from openmeter import Client

    kind = f"render_{uuid.uuid4().hex[:8]}"
    ingest(local_stack, [{"specversion": "1.0", "type": kind, "id": f"{kind}-{i}", "source": "e2e",
                          "subject": "studio", "time": "2024-02-01T12:00:00Z", "data": {"frames": 10 + i}}
                         for i in range(5)])
    client = Client(endpoint=local_stack)
    client.meters.create({"slug": kind, "eventType": kind, "aggregation": "SUM", "valueProperty": "$.frames"})
    deadline = time.monotonic() + 30
    while client.meters.get(kind).as_dict().get("backfill", {}).get("status") != "completed":
        assert time.monotonic() < deadline, "backfill did not complete"
        time.sleep(0.5)
    result = wait_for(local_stack, kind, 1, **DAY)
    assert [row["value"] for row in result["data"]] == [60]


def test_a_meters_subjects_are_those_with_usage(local_stack: str) -> None:
    from tests.e2e.conftest import wait_for as wait_until

    kind = f"subjects-{uuid.uuid4().hex[:8]}"
    slug = kind.replace("-", "_")
    meter = {"slug": slug, "eventType": kind, "aggregation": "COUNT"}
    status, _, body = request(f"{local_stack}/api/v1/meters", "POST", json.dumps(meter).encode(), "application/json")
    assert status == 201, body
    ingest(local_stack, [{"specversion": "1.0", "type": kind, "id": f"{kind}-{i}", "source": "e2e", "subject": subject,
                          "time": "2026-01-10T10:00:00Z"} for i, subject in enumerate(["zoe", "adam", "zoe"])])

    def subjects() -> list[str] | None:
        status, _, body = request(f"{local_stack}/api/v1/meters/{slug}/subjects")
        listed = json.loads(body) if status == 200 else None
        return listed if listed == ["adam", "zoe"] else None

    assert wait_until(subjects, 60, "the meter's subjects") == ["adam", "zoe"]
    status, _, body = request(f"{local_stack}/api/v1/meters/no_such_meter/subjects")
    assert status == 404
