"""The numbers: after duplicates, redelivered and bisected stream batches, late events and any mix of
compaction, every usage query equals a recount computed directly from the raw events."""

from __future__ import annotations

import math
import os
import random
from collections import defaultdict
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from meterline.domain.events import StoredEvent
from meterline.domain.meters import MeterCatalog, parse_meters, parse_number
from meterline.domain.timeutil import parse_rfc3339, to_epoch_ms
from meterline.domain.windows import WindowSize, plan_windows, resolve_time_zone
from meterline.processing.counting import count_events
from meterline.services.compaction import Compactor
from meterline.services.usage_query import UsageQuery, UsageReader
from meterline.settings import CompactionTiming
from meterline.storage.usage_store import UsageStore

T0 = to_epoch_ms(parse_rfc3339("2024-03-09T20:00:00Z"))  # New York springs forward on 2024-03-10
HOUR = 3_600_000
TIMING = CompactionTiming(grace_ms=120_000, write_margin_ms=60_000)
AGGREGATIONS = ["SUM", "COUNT", "UNIQUE_COUNT", "AVG", "MIN", "MAX", "LATEST"]
METERS = parse_meters({"meters": [
    {"slug": f"m_{agg.lower()}", "eventType": "use", "aggregation": agg,
     **({} if agg == "COUNT" else {"valueProperty": "$.v"}), "groupBy": {"model": "$.model", "tier": "$.tier"}}
    for agg in AGGREGATIONS
]})
SUBJECTS = ["alice", "bob", "carol#1", "dave"]
VALUES = [1, 2.5, "3", "17", -4, "12.25", None, "x", "NaN", 0, 1e3]


def catalogs(_: str) -> MeterCatalog:
    return CATALOG


CATALOG = MeterCatalog(METERS)


def recount(meter: Any, events: list[StoredEvent], query: UsageQuery) -> dict[tuple, float]:
    """Straight from the events: first write of each (source, id) wins, then filter and aggregate."""
    unique: dict[tuple[str, str], StoredEvent] = {}
    for event in events:
        unique.setdefault((event.source, event.id), event)
    windows = ([(query.from_ms, query.to_ms)] if query.window_size is None else
               plan_windows(query.from_ms, query.to_ms, query.window_size, resolve_time_zone(query.time_zone)))
    values: dict[tuple, list] = defaultdict(list)
    for event in unique.values():
        if event.type != meter.event_type or (query.subjects and event.subject not in query.subjects):
            continue
        data = event.data or {}
        raw = data.get("v")
        if meter.aggregation == "COUNT":
            value: Any = 1
        elif meter.aggregation == "UNIQUE_COUNT":
            if raw is None:
                continue
            value = raw if isinstance(raw, str) else repr(raw) if isinstance(raw, float) else str(raw)
        else:
            value = parse_number(raw)
            if value is None:
                continue
        groups = {k: data.get(k) or "" for k in ("model", "tier")}
        if any(groups[k] not in allowed for k, allowed in query.filter_group_by.items()):
            continue
        for start, end in windows:
            if start <= event.time_ms < end:
                subject = event.subject if (query.subjects is not None or "subject" in query.group_by) else None
                key = (start, subject, tuple(groups[k] for k in query.group_by if k != "subject"))
                values[key].append((event.time_ms, event.source, event.id, value))
    out = {}
    for key, found in values.items():
        out[key] = _aggregate(meter.aggregation, found)
    return out


def _aggregate(aggregation: str, found: list[tuple]) -> float:
    nums = [v for *_, v in found]
    if aggregation == "SUM":
        return sum(nums)
    if aggregation == "COUNT":
        return len(nums)
    if aggregation == "AVG":
        return sum(nums) / len(nums)
    if aggregation == "MIN":
        return min(nums)
    if aggregation == "MAX":
        return max(nums)
    if aggregation == "UNIQUE_COUNT":
        return len(set(nums))
    return max(found)[3]  # LATEST: latest time, ties to the greatest (source, id)


def as_result(rows: list[dict]) -> dict[tuple, float]:
    return {(to_epoch_ms(parse_rfc3339(r["windowStart"])), r["subject"], tuple(r["groupBy"].values())): r["value"]
            for r in rows}


def assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert math.isclose(got[key], value, rel_tol=1e-9, abs_tol=1e-9), (key, got[key], value)


def make_events(draw_seed: int, n: int) -> list[StoredEvent]:
    rng = random.Random(draw_seed)
    events = []
    for i in range(n):
        time_ms = T0 + rng.randrange(0, 10 * HOUR, 1000) + rng.randrange(1000)
        data = {"v": rng.choice(VALUES), "model": rng.choice(["gpt", "llama", ""]), "tier": rng.choice(["a", "b"])}
        if rng.random() < 0.1:
            del data["model"]
        event = StoredEvent("default", f"e{i}", rng.choice(["s1", "s2"]), "use", rng.choice(SUBJECTS), time_ms,
                            time_ms + rng.randrange(0, HOUR), data)
        events.append(event)
        if rng.random() < 0.1:  # a duplicate: same identity, different content; the first one wins
            events.append(StoredEvent("default", event.id, event.source, "use", "mallory", time_ms, time_ms,
                                      {"v": 999}))
    return events


def process(store: UsageStore, events: list[StoredEvent], rng: random.Random, compact_times: list[int]) -> None:
    """Deliver events in ingestion order in random batches, redelivering and bisecting some, and run the
    compactor at given moments of processing time."""
    first_wins: dict[tuple[str, str], StoredEvent] = {}
    for event in events:
        first_wins.setdefault((event.source, event.id), event)
    stream = sorted(first_wins.values(), key=lambda e: e.ingested_ms)
    compactor = Compactor(store, catalogs, TIMING)
    pending = sorted(compact_times)
    i = 0
    while i < len(stream):
        size = rng.randint(1, 40)
        batch = stream[i:i + size]
        now = batch[-1].ingested_ms + rng.randrange(0, 5000)
        while pending and pending[0] <= now:
            compactor.run_until_caught_up(pending.pop(0))
        count_events(batch, catalogs, store, f"b{i}-{size}", now, TIMING)
        if rng.random() < 0.2:  # redelivered whole, or as a bisected half, with a new batch id
            half = batch[: max(1, len(batch) // 2)] if rng.random() < 0.5 else batch
            count_events(half, catalogs, store, f"r{i}-{len(half)}", now + 1000, TIMING)
        i += size
    for moment in pending:
        compactor.run_until_caught_up(moment)


QUERY = st.fixed_dictionaries({
    "meter": st.sampled_from(METERS),
    "from": st.integers(-2 * HOUR, 11 * HOUR).map(lambda d: T0 + d - d % 60_000 + (d % 7) * 1000),
    "span": st.integers(60_000, 30 * HOUR),
    "window": st.sampled_from([None, WindowSize.MINUTE, WindowSize.HOUR, WindowSize.DAY]),
    "zone": st.sampled_from(["UTC", "Asia/Kolkata", "America/New_York", "Asia/Kathmandu"]),
    "subjects": st.sampled_from([None, ["alice"], ["bob", "carol#1"]]),
    "group_by": st.sampled_from([[], ["model"], ["subject", "tier"], ["model", "tier"]]),
    "filters": st.sampled_from([{}, {"model": ["gpt"]}, {"tier": ["b"], "model": ["", "llama"]}]),
})


@pytest.fixture(scope="module")
def scenario():
    """One stack state per module: moto, events and processing are the slow part."""
    import boto3
    from moto import mock_aws

    from meterline.storage.tables import USAGE_TABLE

    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(**USAGE_TABLE.create_table_request(os.environ["USAGE_TABLE"]))
        store = UsageStore(client=client, table=os.environ["USAGE_TABLE"])
        events = make_events(7, 200)
        rng = random.Random(11)
        end = max(e.ingested_ms for e in events)
        # compaction at several moments while events arrive (late ones included), and once at the end
        final_run = end + 2 * HOUR
        process(store, events, rng, [T0 - HOUR, T0 + 3 * HOUR, T0 + 6 * HOUR + 17_000, T0 + 9 * HOUR, final_run])
        yield Scenario(store, events, final_run)


class Scenario:
    def __init__(self, store: UsageStore, events: list[StoredEvent], now_ms: int) -> None:
        self.store = store
        self.events = events
        self.now_ms = now_ms

    def __repr__(self) -> str:  # keeps hypothesis' failure reports readable
        return f"Scenario({len(self.events)} events)"


@settings(max_examples=40, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(q=QUERY)
def test_queries_equal_a_recount_of_the_raw_events(scenario, q) -> None:
    store, events = scenario.store, scenario.events
    meter = q["meter"]
    query = UsageQuery(q["from"], q["from"] + q["span"], q["window"], q["zone"], q["subjects"], q["group_by"],
                       q["filters"])
    try:
        rows = UsageReader(store).query("default", meter, query, scenario.now_ms)
    except ValueError as exc:  # too many MINUTE windows is a bad request, not a wrong answer
        assert "windows" in str(exc)
        return
    assert_same(as_result(rows), recount(meter, events, query))
