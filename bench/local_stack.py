"""The local stack with real data: `meterline dev` as a user runs it, driven over HTTP.

1. Starts `meterline dev --in-memory` (a child process) with the example meters.
2. Ingests 1,000 events (1,000-event batches), waits until every event is counted, times 50 queries.
3. Ingests 99,000 more (4 concurrent clients, 1,000-event batches), waits until counted, times the same
   50 queries again.
4. Creates 5 meters on the stored event types and times their backfills until every one is `completed`.
5. Restart: a second stack on a data directory holding `--restart-events` events is stopped (Ctrl-C) and
   started again on the same directory; the time until it answers, and that the events are all there.

Events: the example meters' event types (bench/workload.py), 2,000 subjects with Zipf-distributed usage,
event times spread evenly over the 10 days before the run (so most arrive late, as in an import).
"Counted" is checked through the API: the COUNT meter `api_requests_total` over the whole range equals
the number of `request` events sent. Late events are listed per processing quarter-hour and folded by
the compactor once that quarter-hour has closed; until then queries read them as raw rows (correct, but
a Query per quarter-hour and subject bucket). The 50 queries are timed three times: at 1,000 events
(folded), right after the 100,000 are counted (late lists pending: `local_query_p95_ms_late_pending`),
and once the compactor has folded them (`local_late_folded_after_quarter_s` after the quarter-hour in
which they were counted closed).

Queries: tokens_total, gpu_execution_duration_seconds, api_requests_total and unique_sessions_total,
cycling through DAY windows and totals over the 10 days, HOUR windows over the last two days, groupBy,
a subject filter (the busiest subject and a middling one) and windowTimeZone Asia/Kolkata. Each is
answered 200 or the run fails.

Prints `<name> <value>` lines: local_ingest_events_per_s, local_query_p50_ms_1k, local_query_p95_ms_1k,
local_query_p50_ms, local_query_p95_ms, local_query_p95_ratio (100k / 1k), the median of a heavy query
outside the mix (local_query_hour_windows_10d_kolkata_ms: 264 HOUR windows in a half-hour zone),
local_backfill_s, local_readme_examples_max_ms (the README's quick-start requests, right after the
backfills), local_ingest_events_per_s_on_disk and local_restart_s. `--stack-args` replaces the
stack's storage flags (e.g. to measure another engine); `--events`/`--query-timeout` bound a run.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.workload import generate  # noqa: E402
from meterline.domain.timeutil import format_ms  # noqa: E402
from meterline_local.engine import free_port  # noqa: E402

DAY_MS = 86_400_000
SPAN_MS = 10 * DAY_MS
SUBJECTS = 2_000
BATCH = 1_000
CLIENTS = 4
NEW_METERS = [
    {"slug": "bench_tokens_by_subject", "eventType": "prompt", "aggregation": "SUM", "valueProperty": "$.tokens"},
    {"slug": "bench_gpu_max", "eventType": "gpu_time", "aggregation": "MAX", "valueProperty": "$.duration_seconds",
     "groupBy": {"gpu_type": "$.gpu_type"}},
    {"slug": "bench_request_avg", "eventType": "request", "aggregation": "AVG",
     "valueProperty": "$.duration_seconds", "groupBy": {"route": "$.route"}},
    {"slug": "bench_translate_words", "eventType": "translate", "aggregation": "SUM", "valueProperty": "$.words",
     "groupBy": {"model": "$.model"}},
    {"slug": "bench_logins", "eventType": "login", "aggregation": "COUNT"},
]


class Stack:
    """A `meterline dev` child process on a free port."""

    def __init__(self, storage_args: Sequence[str]) -> None:
        self.port = free_port()
        self.storage_args = list(storage_args)
        self.process: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    def start(self, timeout_s: float = 120) -> float:
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "meterline_local.cli", "dev", "--port", str(self.port), "--log-level", "WARNING",
             *self.storage_args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={k: v for k, v in os.environ.items() if not k.endswith("_TABLE")})
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout_s
        for line in self.process.stdout:
            self.output.append(line)
            if "started in" in line:
                break
            if time.monotonic() > deadline:
                break
        else:
            raise SystemExit("meterline dev exited:\n" + "".join(self.output))
        threading.Thread(target=lambda: self.output.extend(self.process.stdout), daemon=True).start()  # type: ignore
        return time.perf_counter() - started

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                timeout: float = 600) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"content-type": content_type} if payload is not None else {}
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


def events(count: int, start_ms: int, offset: int = 0) -> list[dict[str, Any]]:
    """Events `offset` .. `offset + count` of the run's workload, as JSON CloudEvents."""
    rate = 100_000 / (SPAN_MS / 1000)  # the full workload spans SPAN_MS whatever its size
    generated = generate(offset + count, start_ms, rate_per_s=rate, subjects=SUBJECTS)
    out = []
    for i, event in enumerate(generated):
        if i < offset:
            continue
        out.append({"specversion": "1.0", "id": event.id, "source": event.source, "type": event.type,
                    "subject": event.subject, "time": format_ms(event.time), "data": event.data})
    return out


def ingest(stack: Stack, batch_events: list[dict[str, Any]], clients: int = CLIENTS) -> float:
    """POST the events in 1,000-event batches from `clients` threads; returns events per second."""
    batches = [batch_events[i:i + BATCH] for i in range(0, len(batch_events), BATCH)]

    def send(batch: list[dict[str, Any]]) -> None:
        status, body = stack.request("POST", "/api/v1/events", batch, "application/cloudevents-batch+json")
        if status != 204:
            raise SystemExit(f"ingest answered {status}: {body[:300]!r}")

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, batches))
    return len(batch_events) / (time.perf_counter() - started)


def count_of(stack: Stack, slug: str, start_ms: int, end_ms: int) -> float:
    query = urlencode({"from": format_ms(start_ms), "to": format_ms(end_ms)})
    status, body = stack.request("GET", f"/api/v1/meters/{slug}/query?{query}")
    if status != 200:
        raise SystemExit(f"query answered {status}: {body[:300]!r}")
    return sum(row["value"] for row in json.loads(body)["data"])


def wait_counted(stack: Stack, expected_requests: int, start_ms: int, end_ms: int, timeout_s: float) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if count_of(stack, "api_requests_total", start_ms, end_ms) == expected_requests:
            return time.perf_counter() - started
        time.sleep(2)
    raise SystemExit(f"events not all counted after {timeout_s:.0f}s")


def wait_compacted(stack: Stack, sentinel: str, counted_at: float, timeout_s: float) -> float:
    """Until the compactor has folded the late events: the processor lists them per processing
    quarter-hour, and the compactor takes a quarter's list once it has closed, so queries read them as
    raw rows until then. Waits for the quarter-hour in which the last event was counted (wall time
    `counted_at`) to close, then until the sentinel query (DAY windows over the whole range, all
    subjects) stops reading raw rows: under a second. Returns the seconds after that close."""
    quarter_s = 900
    closed = counted_at - counted_at % quarter_s + quarter_s + 6
    time.sleep(max(0.0, closed - time.time()))
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if min(time_queries(stack, [sentinel], timeout_s)) < 1000:
            return time.perf_counter() - started
        time.sleep(30)  # the sentinel reads every pending quarter: asked often, it slows the fold itself
    raise SystemExit(f"late events not folded after {timeout_s:.0f}s")


def query_paths(start_ms: int, end_ms: int, busy: str, middling: str) -> Iterator[str]:
    """The mix: DAY windows and totals over the whole range, HOUR windows over its last two days (as a
    dashboard shows them), in UTC and Asia/Kolkata, with and without groupBy and subject filters."""
    meters = [("tokens_total", ["model", "type"]), ("gpu_execution_duration_seconds", ["region"]),
              ("api_requests_total", ["method", "route"]), ("unique_sessions_total", [])]
    last_days = end_ms - 2 * DAY_MS
    shapes: list[dict[str, Any]] = [
        {"windowSize": "DAY"},
        {"windowSize": "HOUR", "subject": busy, "from": last_days},
        {"windowSize": "DAY", "groupBy": True},
        {"windowSize": "DAY", "windowTimeZone": "Asia/Kolkata", "subject": middling},
        {"groupBy": True, "subject": busy},
        {"windowSize": "HOUR", "windowTimeZone": "Asia/Kolkata", "groupBy": True, "from": last_days},
    ]
    for i in itertools.count():
        slug, group_by = meters[i % len(meters)]
        shape = dict(shapes[i % len(shapes)])
        params: list[tuple[str, str]] = [("from", format_ms(shape.pop("from", start_ms))), ("to", format_ms(end_ms))]
        if shape.pop("groupBy", False):
            params += [("groupBy", key) for key in group_by]
        params += [(key, value) for key, value in shape.items()]
        yield f"/api/v1/meters/{slug}/query?{urlencode(params)}"


def heavy_query_path(start_ms: int, end_ms: int) -> str:
    """HOUR windows over the whole range in a half-hour zone: every window needs quarter-hour slots at
    both edges, two Queries per UTC hour of the range."""
    params = [("from", format_ms(start_ms)), ("to", format_ms(end_ms)), ("windowSize", "HOUR"),
              ("windowTimeZone", "Asia/Kolkata"), ("groupBy", "model")]
    return f"/api/v1/meters/tokens_total/query?{urlencode(params)}"


def time_queries(stack: Stack, paths: list[str], timeout_s: float) -> list[float]:
    times = []
    for path in paths:
        started = time.perf_counter()
        status, body = stack.request("GET", path, timeout=timeout_s)
        times.append((time.perf_counter() - started) * 1000)
        if status != 200:
            raise SystemExit(f"{path} answered {status}: {body[:300]!r}")
    return times


def slowest(paths: list[str], times: list[float], count: int = 3) -> None:
    """The slowest queries, as comment lines (where the p95 comes from)."""
    for ms, path in sorted(zip(times, paths, strict=True), reverse=True)[:count]:
        print(f"# {ms:.0f} ms {path.split('/api/v1/meters/')[1]}", flush=True)


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def emit(name: str, value: float) -> None:
    print(f"{name} {value:.1f}" if isinstance(value, float) else f"{name} {value}", flush=True)


def backfill(stack: Stack, timeout_s: float) -> float:
    started = time.perf_counter()
    for meter in NEW_METERS:
        status, body = stack.request("POST", "/api/v1/meters", meter)
        if status != 201:
            raise SystemExit(f"creating {meter['slug']} answered {status}: {body[:300]!r}")
    pending = {meter["slug"] for meter in NEW_METERS}
    while pending and time.perf_counter() - started < timeout_s:
        for slug in sorted(pending):
            status, body = stack.request("GET", f"/api/v1/meters/{slug}")
            state = (json.loads(body).get("backfill") or {}).get("status")
            if state == "completed":
                pending.discard(slug)
        time.sleep(0.5)
    if pending:
        raise SystemExit(f"backfills not completed after {timeout_s:.0f}s: {sorted(pending)}")
    return time.perf_counter() - started


README_EXAMPLES: list[tuple[str, str, Any, str, int]] = [
    ("POST", "/api/v1/events", {"specversion": "1.0", "type": "prompt", "id": "readme-00001",
                                "time": "2024-01-01T00:00:00.001Z", "source": "chat-app", "subject": "customer-1",
                                "data": {"tokens": "123456", "model": "gpt4-turbo", "type": "output"}},
     "application/cloudevents+json", 204),
    ("GET", "/api/v1/events?from=2024-01-01T00:00:00Z&to=2024-01-02T00:00:00Z", None, "", 200),
    ("GET", "/api/v1/meters/tokens_total/query?from=2024-01-01T00:00:00Z&to=2024-01-02T00:00:00Z&windowSize=HOUR"
            "&groupBy=model", None, "", 200),
    ("POST", "/api/v1/reports", {"slug": "hourly_tokens", "meterIdOrSlug": "tokens_total", "type": "webhook",
                                 "schedule": {"interval": "1h", "startAt": "2024-01-01T00:00:00Z"},
                                 "query": {"groupBy": ["model"]}, "endpoint": {"url": "http://127.0.0.1:9000/usage"},
                                 "filter": {"usage": {"$gt": 100}}}, "application/json", 201),
    ("POST", "/api/v1/reports/hourly_tokens/runs", {"from": "2024-01-01T00:00:00Z", "to": "2024-01-02T00:00:00Z"},
     "application/json", 202),
    ("GET", "/api/v1/reports/hourly_tokens/runs", None, "", 200),
    # what the README's OpenMeter SDK lines send
    ("GET", "/api/v1/events?subject=customer-1", None, "", 200),
    ("GET", "/api/v1/meters/tokens_total/query?subject=customer-1&windowSize=DAY", None, "", 200),
]


def readme_examples(stack: Stack) -> float:
    """The README's quick-start requests, each answered as the README says; returns the slowest (ms)."""
    slowest_ms = 0.0
    for method, path, body, content_type, expected in README_EXAMPLES:
        started = time.perf_counter()
        status, answer = stack.request(method, path, body, content_type or "application/json")
        elapsed = (time.perf_counter() - started) * 1000
        if status != expected:
            raise SystemExit(f"{method} {path} answered {status}, not {expected}: {answer[:300]!r}")
        print(f"# {elapsed:.0f} ms {method} {path[:90]}", flush=True)
        slowest_ms = max(slowest_ms, elapsed)
    return slowest_ms


def restart(count: int, start_ms: int, end_ms: int, timeout_s: float) -> tuple[float, float]:
    """A stack on a fresh data directory with `count` events, stopped and started again: (seconds until
    it answered again, events/s of its on-disk ingestion)."""
    with tempfile.TemporaryDirectory(prefix="meterline-bench-") as data_dir:
        stack = Stack(["--data-dir", data_dir])
        stack.start()
        try:
            sent = events(count, start_ms)
            rate = ingest(stack, sent)
            requests = sum(1 for event in sent if event["type"] == "request")
            wait_counted(stack, requests, start_ms, end_ms, timeout_s)
        finally:
            stack.stop()
        again = Stack(["--data-dir", data_dir])
        stopped = time.perf_counter()
        again.start()
        try:
            while True:
                try:
                    if again.request("GET", "/api/v1/meters", timeout=5)[0] == 200:
                        break
                except OSError:
                    time.sleep(0.1)
            elapsed = time.perf_counter() - stopped
            if count_of(again, "api_requests_total", start_ms, end_ms) != requests:
                raise SystemExit("after the restart the counts differ from before it")
        finally:
            again.stop()
    return elapsed, rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--restart-events", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--stack-args", default="--in-memory", help="storage flags of the measured stack")
    parser.add_argument("--query-timeout", type=float, default=600)
    args = parser.parse_args()

    now = int(time.time() * 1000)
    end_ms = now - now % DAY_MS - DAY_MS  # events end before yesterday's midnight: all late, all closed
    start_ms = end_ms - SPAN_MS
    query_end = now - now % DAY_MS + DAY_MS
    paths = list(itertools.islice(query_paths(start_ms, query_end, "customer-1", "customer-40"), args.queries))
    stack = Stack(re.split(r"\s+", args.stack_args.strip()) if args.stack_args.strip() else [])
    emit("local_start_s", stack.start())
    try:
        workload = events(args.events, start_ms)
        first = workload[:1000]
        ingest(stack, first)
        wait_counted(stack, sum(1 for e in first if e["type"] == "request"), start_ms, query_end, args.query_timeout)
        small = time_queries(stack, paths, args.query_timeout)
        emit("local_query_p50_ms_1k", statistics.median(small))
        emit("local_query_p95_ms_1k", p95(small))

        rate = ingest(stack, workload[1000:])
        emit("local_ingest_events_per_s", rate)
        drained = wait_counted(stack, sum(1 for e in workload if e["type"] == "request"), start_ms, query_end,
                               args.query_timeout)
        emit("local_counted_after_ingest_s", drained)
        counted_at = time.time()
        pending = time_queries(stack, paths, args.query_timeout)
        emit("local_query_p95_ms_late_pending", p95(pending))
        emit("local_late_folded_after_quarter_s", wait_compacted(stack, paths[0], counted_at, 1800))
        large = time_queries(stack, paths, args.query_timeout)
        emit("local_query_p50_ms", statistics.median(large))
        emit("local_query_p95_ms", p95(large))
        emit("local_query_p95_ratio", p95(large) / p95(small))
        slowest(paths, large)
        heavy = time_queries(stack, [heavy_query_path(start_ms, query_end)] * 5, args.query_timeout)
        emit("local_query_hour_windows_10d_kolkata_ms", statistics.median(heavy))
        emit("local_backfill_s", backfill(stack, args.query_timeout))
        emit("local_readme_examples_max_ms", readme_examples(stack))
    finally:
        stack.stop()
    if args.restart_events:
        elapsed, disk_rate = restart(args.restart_events, start_ms, query_end, args.query_timeout)
        emit("local_ingest_events_per_s_on_disk", disk_rate)
        emit("local_restart_s", elapsed)


if __name__ == "__main__":
    main()
