"""`meterline dev` as a process: its data survives a restart (events, meters, reports with their signing
secrets and schedules, run history, counters), it stops within seconds on Ctrl-C or SIGTERM even while
busy and leaves no JVM behind, and it refuses to start with one clear line when it cannot."""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import urllib3

from tests.e2e.conftest import DevProcess, alive, wait_for
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.e2e
http = urllib3.PoolManager()


def call(method: str, url: str, body: Any = None, content_type: str = "application/json") -> tuple[int, Any]:
    if body is None:
        response = http.request(method, url)
    else:
        response = http.request(method, url, body=json.dumps(body).encode(),
                                headers={"content-type": content_type})
    return response.status, (response.json() if response.data else None)


def event(i: int, subject: str, tokens: int) -> dict[str, Any]:
    return {"specversion": "1.0", "type": "prompt", "id": f"restart-{i}", "source": "e2e",
            "subject": subject, "time": "2024-03-01T10:00:00.000Z",
            "data": {"tokens": tokens, "model": "gpt-4", "type": "input"}}


def usage(base: str, slug: str) -> list[dict[str, Any]]:
    status, body = call("GET", f"{base}/api/v1/meters/{slug}/query?from=2024-03-01T00:00:00Z"
                               "&to=2024-03-02T00:00:00Z&groupBy=subject")
    assert status == 200, body
    return sorted(body["data"], key=lambda row: row["subject"])


def test_everything_survives_a_restart(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "data")
    receiver = Receiver()
    stack = DevProcess("--data-dir", data_dir).wait_started()
    try:
        base = stack.url
        events = [event(i, f"customer-{i % 3}", 10 * (i + 1)) for i in range(30)]
        assert call("POST", f"{base}/api/v1/events", events, "application/cloudevents-batch+json")[0] == 204
        status, _ = call("POST", f"{base}/api/v1/meters", {"slug": "restart_tokens", "eventType": "prompt",
                                                           "aggregation": "SUM", "valueProperty": "$.tokens"})
        assert status == 201
        status, report = call("POST", f"{base}/api/v1/reports", {
            "slug": "restart_report", "meterIdOrSlug": "tokens_total", "type": "webhook",
            # starting this hour: the schedule has nothing to catch up during the test
            "schedule": {"interval": "1h", "startAt": time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime())},
            "endpoint": {"url": receiver.url}})
        assert status == 201, report
        receiver.secret = report["signingSecret"]
        expected = [{"subject": f"customer-{s}", "value": float(sum(10 * (i + 1) for i in range(30) if i % 3 == s))}
                    for s in range(3)]
        wait_for(lambda: [{"subject": r["subject"], "value": r["value"]} for r in usage(base, "tokens_total")]
                 == expected, 30, "the events to be counted")
        wait_for(lambda: (call("GET", f"{base}/api/v1/meters/restart_tokens")[1].get("backfill") or {})
                 .get("status") == "completed", 60, "the new meter's backfill")
        before = usage(base, "restart_tokens")
        engine = stack.engine_pids()
        assert len(engine) == 1
        assert stack.stop(signal.SIGTERM) == 0
        assert not any(alive(pid) for pid in engine), "the JVM outlived meterline dev"

        stack = DevProcess("--data-dir", data_dir).wait_started()
        base = stack.url
        status, listed = call("GET", f"{base}/api/v1/events?from=2024-03-01T00:00:00Z&to=2024-03-02T00:00:00Z"
                                     "&limit=100")
        assert status == 200 and sorted(e["event"]["id"] for e in listed) == sorted(e["id"] for e in events)
        assert usage(base, "restart_tokens") == before
        assert [{"subject": r["subject"], "value": r["value"]} for r in usage(base, "tokens_total")] == expected
        # a duplicate sent after the restart is still a duplicate
        assert call("POST", f"{base}/api/v1/events", [event(0, "mallory", 10**6)],
                    "application/cloudevents-batch+json")[0] == 204
        # the report, its signing secret (KMS key) and a run requested now: delivered, signed as before
        status, got = call("GET", f"{base}/api/v1/reports/restart_report")
        assert status == 200 and got["endpoint"]["url"] == receiver.url
        status, run = call("POST", f"{base}/api/v1/reports/restart_report/runs",
                           {"from": "2024-03-01T10:00:00Z", "to": "2024-03-01T11:00:00Z"})
        assert status == 202, run
        wait_for(lambda: len(receiver.received) == 3, 30, "the run's webhooks")
        assert {d["body"]["query"]["subject"]: d["body"]["usage"][0]["value"] for d in receiver.received} == {
            row["subject"]: row["value"] for row in expected}
        assert [{"subject": r["subject"], "value": r["value"]} for r in usage(base, "tokens_total")] == expected
    finally:
        if stack.process.poll() is None:
            stack.stop()
        receiver.close()


def test_ctrl_c_stops_within_5_seconds_while_busy() -> None:
    """Ctrl-C right after a burst of ingestion and a new meter's backfill: the stream poller, the
    compactor and the backfill are all busy."""
    stack = DevProcess("--in-memory").wait_started()
    try:
        tag = uuid.uuid4().hex[:6]
        for batch in range(4):
            events = [{"specversion": "1.0", "type": "request", "id": f"{tag}-{batch}-{i}", "source": "e2e",
                       "subject": f"s{i % 50}", "time": f"2024-02-{1 + i % 28:02d}T12:00:00Z",
                       "data": {"method": "GET", "route": "/x", "duration_seconds": 1, "ingress_bytes": 10}}
                      for i in range(1000)]
            assert call("POST", f"{stack.url}/api/v1/events", events, "application/cloudevents-batch+json")[0] == 204
        assert call("POST", f"{stack.url}/api/v1/meters", {"slug": f"busy_{tag}", "eventType": "request",
                                                           "aggregation": "COUNT"})[0] == 201
        time.sleep(1.5)  # the backfill starts once the processors have seen the meter
        engine = stack.engine_pids()
        stopping = time.monotonic()
        assert stack.stop(signal.SIGINT, timeout_s=5) == 0
        assert time.monotonic() - stopping < 5
        assert not any(alive(pid) for pid in engine)
    finally:
        if stack.process.poll() is None:
            stack.process.kill()


def fails_with_one_line(stack: DevProcess, timeout_s: float = 30) -> str:
    started = time.monotonic()
    code = stack.process.wait(timeout=timeout_s)
    assert time.monotonic() - started < timeout_s
    assert code == 2
    assert stack.process.stdout is not None
    errors = [line for line in stack.process.stdout.read().splitlines() if line.startswith("meterline dev:")]
    assert len(errors) == 1, errors
    return errors[0]


def test_ctrl_c_stops_it_even_when_its_parent_ignored_sigint() -> None:
    stack = DevProcess("--in-memory", ignore_sigint=True).wait_started()
    assert stack.stop(signal.SIGINT, timeout_s=10) == 0


def test_a_busy_port_is_one_line() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = fails_with_one_line(DevProcess("--in-memory", port=port), timeout_s=20)
    assert line == f"meterline dev: port {port} is in use: stop what listens there or pass --port"


def test_a_data_directory_in_use_is_one_line(tmp_path: Path) -> None:
    first = DevProcess("--data-dir", str(tmp_path)).wait_started()
    try:
        line = fails_with_one_line(DevProcess("--data-dir", str(tmp_path)))
        assert "is in use by another meterline dev: stop that one or pass another --data-dir" in line
    finally:
        first.stop()


def test_a_corrupt_data_directory_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "dynamodb").mkdir()
    (tmp_path / "dynamodb" / "shared-local-instance.db").write_bytes(b"garbage" * 5000)
    line = fails_with_one_line(DevProcess("--data-dir", str(tmp_path)))
    assert "looks corrupt" in line and "--in-memory" in line
