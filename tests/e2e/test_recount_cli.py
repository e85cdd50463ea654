"""`meterline recount` against a running `meterline dev` (through its engine, as an operator runs it):
it reads the namespace's events of the range through the time index, and a repeat changes no number
(rows are de-duplicated by event identity). Bad input is one line and exit status 2."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.conftest import new_key
from tests.e2e.test_auth_http import call


def recount(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meterline_local.cli", "recount", *args, "--data-dir",
                           str(data_dir)], capture_output=True, text=True, timeout=120)


def test_recount_through_a_running_stack(secured: tuple[str, Path]) -> None:
    base, data_dir = secured
    key = new_key(data_dir, "recount", "admin")
    meter = {"slug": "tokens_total", "eventType": "prompt", "aggregation": "SUM", "valueProperty": "$.tokens"}
    assert call(base, "POST", "/api/v1/meters", key, meter)[0] == 201
    events = [{"specversion": "1.0", "id": f"r-{i}", "source": "cli", "type": "prompt", "subject": "c-1",
               "time": f"2024-05-01T1{i % 3}:00:00Z", "data": {"tokens": 10 * i}} for i in range(12)]
    assert call(base, "POST", "/api/v1/events", key, events)[0] == 204
    query = "from=2024-05-01T00:00:00Z&to=2024-05-02T00:00:00Z"

    def total() -> float | None:
        data = call(base, "GET", "/api/v1/meters/tokens_total/query", key, query=query)[2]["data"]
        return data[0]["value"] if data else None

    deadline = time.monotonic() + 60
    while total() != 660:
        assert time.monotonic() < deadline
        time.sleep(0.25)

    done = recount(data_dir, "--namespace", "recount", "--from", "2024-05-01T00:00:00Z", "--to",
                   "2024-05-02T00:00:00Z")
    assert done.returncode == 0, done.stderr
    assert "12 events in 3 hours with events" in done.stdout
    assert total() == 660

    only = recount(data_dir, "--namespace", "recount", "--meter", "tokens_total", "--from", "2024-05-01T11:00:00Z",
                   "--to", "2024-05-01T12:00:00Z")
    assert only.returncode == 0 and "4 events in 1 hour with events" in only.stdout, only.stdout + only.stderr
    assert total() == 660

    for args, reason in ((["--meter", "nope"], "no meter 'nope'"), (["--from", "yesterday"], "RFC 3339")):
        bad = recount(data_dir, "--namespace", "recount", "--from", "2024-05-01T00:00:00Z",
                      "--to", "2024-05-02T00:00:00Z", *args)
        assert bad.returncode == 2 and reason in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
