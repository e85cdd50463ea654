"""`Meterline.ingest` and `flush` against a fake API: CloudEvents defaults, batches, retries with the same ids,
flush timeouts that keep events, permanent errors surfaced, and the flush of a process that exits."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest

from meterline_client import EventsRejectedError, FlushTimeoutError, Meterline
from tests.client.fake_meterline import FakeMeterlineAPI, problem, serve

RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def usage(subject: str = "customer-1", **fields: object) -> dict[str, object]:
    return {"type": "request", "subject": subject, "data": {"count": 1}, **fields}


def test_events_get_the_cloudevents_defaults(api: FakeMeterlineAPI, meterline: Meterline) -> None:
    before = datetime.now(UTC)
    meterline.ingest(usage())
    meterline.ingest([usage(id="given-id", source="other-app", time="2024-01-01T00:00:00Z"),
                      usage(id="aware-time", time=datetime(2024, 1, 1, 2, tzinfo=timezone(timedelta(hours=2))))])
    meterline.flush()

    defaulted, given, aware = api.batches[0]
    assert defaulted["specversion"] == "1.0" and defaulted["source"] == "tests"
    assert uuid.UUID(defaulted["id"])  # random, unless given
    assert RFC3339_MS.match(defaulted["time"])
    assert before - timedelta(seconds=1) <= datetime.fromisoformat(defaulted["time"]) <= datetime.now(UTC)
    assert (given["id"], given["source"], given["time"]) == ("given-id", "other-app", "2024-01-01T00:00:00Z")
    assert aware["time"] == "2024-01-01T00:00:00.000Z"
    assert api.requests[0].headers["content-type"] == "application/cloudevents-batch+json"
    assert "authorization" not in api.requests[0].headers


def test_batches_hold_at_most_1000_events(api: FakeMeterlineAPI, meterline: Meterline) -> None:
    meterline.ingest(usage(id=f"e{i}") for i in range(2500))
    meterline.flush()
    assert [len(batch) for batch in api.batches] == [1000, 1000, 500]
    assert len(api.stored) == 2500 and meterline.pending == 0


def test_events_are_sent_within_the_flush_interval_without_a_flush(api: FakeMeterlineAPI,
                                                                  make_client: Callable[..., Meterline]) -> None:
    meterline = make_client(flush_interval_seconds=0.3)
    meterline.ingest(usage())
    time.sleep(0.1)
    assert api.batches == []  # not yet: waiting for more events
    deadline = time.monotonic() + 2
    while not api.stored and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(api.stored) == 1


def test_a_full_batch_is_sent_at_once(api: FakeMeterlineAPI, make_client: Callable[..., Meterline]) -> None:
    meterline = make_client(flush_interval_seconds=60, batch_size=10)
    meterline.ingest(usage(id=f"e{i}") for i in range(10))
    deadline = time.monotonic() + 2
    while not api.stored and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(api.stored) == 10


def test_429_5xx_and_network_errors_are_retried_with_the_same_ids(api: FakeMeterlineAPI, meterline: Meterline,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    api.scripted.extend([problem(503, "storage unavailable"), httpx.Response(429, headers={"retry-after": "0"}),
                         httpx.ConnectError("connection refused"), httpx.Response(502, text="Bad Gateway")])
    meterline.ingest([usage(), usage("customer-2")])
    meterline.flush()

    assert len(api.batches) == 5
    ids = [[event["id"] for event in batch] for batch in api.batches]
    assert all(attempt == ids[0] for attempt in ids)  # every retry sends the same events
    assert len(api.stored) == 2
    assert "storage unavailable" in caplog.text and "retrying" in caplog.text


def test_flush_raises_when_time_runs_out_and_keeps_the_events(api: FakeMeterlineAPI, meterline: Meterline) -> None:
    api.down = True
    meterline.ingest([usage(id="a"), usage(id="b"), usage(id="c")])
    with pytest.raises(FlushTimeoutError) as timed_out:
        meterline.flush(timeout=0.3)
    assert timed_out.value.pending == 3 and meterline.pending == 3
    assert "ConnectError" in str(timed_out.value)
    assert api.stored == {}

    api.down = False
    meterline.flush(timeout=2)
    assert sorted(event_id for _, event_id in api.stored) == ["a", "b", "c"]
    assert meterline.pending == 0


def test_a_permanent_error_is_raised_with_its_detail_and_not_retried(api: FakeMeterlineAPI, meterline: Meterline,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    api.scripted.append(problem(401, "missing or invalid token"))
    meterline.ingest([usage(id="a"), usage(id="b")])
    with pytest.raises(EventsRejectedError) as rejected:
        meterline.flush()
    assert rejected.value.status == 401 and rejected.value.problem is not None
    assert "missing or invalid token" in str(rejected.value)
    assert [event["id"] for event in rejected.value.events] == ["a", "b"]
    assert len(api.batches) == 1 and meterline.pending == 0
    assert "missing or invalid token" in caplog.text  # logged when it happened, too

    meterline.ingest(usage(id="c"))
    meterline.flush()  # reported once; the client keeps working
    assert list(api.stored) == [("tests", "c")]


def test_a_400_naming_events_rejects_only_those(api: FakeMeterlineAPI, meterline: Meterline) -> None:
    api.scripted.append(problem(400, "1 invalid event, nothing was stored: event 1: time is in the future",
                                errors=[{"index": 1, "field": "time", "reason": "is in the future"}]))
    meterline.ingest([usage(id="a"), usage(id="b", time="2999-01-01T00:00:00Z"), usage(id="c")])
    with pytest.raises(EventsRejectedError) as rejected:
        meterline.flush()
    assert [event["id"] for event in rejected.value.events] == ["b"]
    assert sorted(event_id for _, event_id in api.stored) == ["a", "c"]


def test_a_413_sends_the_batch_again_in_halves(api: FakeMeterlineAPI, meterline: Meterline) -> None:
    api.max_batch = 3
    meterline.ingest(usage(id=f"e{i}") for i in range(10))
    meterline.flush()
    assert len(api.stored) == 10
    assert [len(batch) for batch in api.batches][:2] == [10, 5]


def test_events_that_cannot_be_sent_are_refused_at_ingest(api: FakeMeterlineAPI, meterline: Meterline) -> None:
    with pytest.raises(ValueError, match="subject"):
        meterline.ingest({"type": "request"})
    with pytest.raises(ValueError, match="data must be an object"):
        meterline.ingest(usage(data=[1, 2]))
    with pytest.raises(ValueError, match="naive"):
        meterline.ingest(usage(time=datetime(2024, 1, 1)))
    with pytest.raises(TypeError):
        meterline.ingest(usage(data={"at": object()}))
    assert meterline.pending == 0


def test_url_and_key_from_the_environment(api: FakeMeterlineAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METERLINE_URL", "http://from-env.test/")
    monkeypatch.setenv("METERLINE_API_KEY", "om_secret")
    with Meterline(transport=api.transport(), exit_flush_seconds=None) as meterline:
        meterline.ingest(usage())
    assert str(api.requests[0].url) == "http://from-env.test/api/v1/events"
    assert api.requests[0].headers["authorization"] == "Bearer om_secret"
    assert len(api.stored) == 1  # close flushed

    monkeypatch.delenv("METERLINE_URL")
    with pytest.raises(ValueError, match="METERLINE_URL"):
        Meterline()


def test_a_process_that_exits_flushes_its_events(api: FakeMeterlineAPI) -> None:
    script = textwrap.dedent("""
        import sys
        from meterline_client import Meterline
        Meterline(sys.argv[1], flush_interval_seconds=60).ingest({"type": "request", "subject": "s", "id": "last"})
    """)
    with serve(api) as url:
        exited = subprocess.run([sys.executable, "-c", script, url], capture_output=True, text=True, timeout=30)
    assert exited.returncode == 0, exited.stderr
    assert list(api.stored) == [("meterline-client", "last")]


def test_a_process_that_exits_says_what_it_could_not_deliver(api: FakeMeterlineAPI) -> None:
    api.down = True
    script = textwrap.dedent("""
        import sys
        from meterline_client import Meterline
        Meterline(sys.argv[1], exit_flush_seconds=0.3).ingest({"type": "request", "subject": "s"})
    """)
    with serve(api) as url:
        exited = subprocess.run([sys.executable, "-c", script, url], capture_output=True, text=True, timeout=30)
    assert exited.returncode == 0
    assert "1 event not delivered within 0.3 s" in exited.stderr


def test_a_closed_client_refuses_events(meterline: Meterline) -> None:
    meterline.close()
    with pytest.raises(RuntimeError, match="closed"):
        meterline.ingest(usage())

