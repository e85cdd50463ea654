"""The numbers: after duplicates, redelivered and bisected stream batches, late events and any mix of
compaction, every usage query equals a recount computed directly from the raw events: in UTC, in zones off
the whole hour (Asia/Kolkata +05:30, Asia/Kathmandu +05:45) and across a DST change (America/New_York), with
zone days built and late events landing in them afterwards, and with eventually consistent reads served by a
replica that lags behind. Raw rows land in pages of their own and in shared pages, an event's row often in
both (a batch and its redelivery lay their rows out differently)."""

from __future__ import annotations

import math
import os
import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from meterline.domain.events import StoredEvent
from meterline.domain.meters import MeterCatalog, parse_meters, parse_number
from meterline.domain.query_plan import UsageQuery, plan
from meterline.domain.slots import QUARTER, Horizons
from meterline.domain.timeutil import QUARTER_MS, parse_rfc3339, to_epoch_ms
from meterline.domain.windows import WindowSize, plan_windows, resolve_time_zone
from meterline.processing.counting import CountResult, count_events, counters_for
from meterline.services import compaction
from meterline.services.compaction import Compactor
from meterline.services.usage_query import UsageReader
from meterline.settings import CompactionTiming
from meterline.storage.usage_store import (
    RAW,
    SHARED,
    SHARED_PAGE_BELOW,
    UsageStore,
    bundle_partition,
    subject_prefix,
    unpack,
)
from tests.conftest import scan_all
from tests.fakes import CostModelDynamoDB

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
# How one count_events call lays out its rows (UsageStore.shared_page_below, packed bytes): every group of
# rows (counter set, minute, subject bucket) in a page of its own, as before shared pages; groups of one or
# two rows in the shared page and larger ones in their own; the deployed threshold (with this few events per
# minute, every group shared). A batch and its redelivery or bisected half draw theirs independently, so an
# event's row often lands in a shared page once and in a page of its own another time.
LAYOUTS = (0, 80, SHARED_PAGE_BELOW)


def count(store: UsageStore, layout: random.Random, events: list[StoredEvent], batch_id: str, now_ms: int,
          unlike_the_last: bool = False) -> CountResult:
    """count_events with a layout drawn from LAYOUTS (`unlike_the_last`: pages of their own if the last call
    had shared pages, else shared pages)."""
    last = store.shared_page_below
    store.shared_page_below = layout.choice([x for x in LAYOUTS if not unlike_the_last or (x == 0) != (last == 0)])
    return count_events(events, catalogs, store, batch_id, now_ms, TIMING)


def recount(meter: Any, events: list[StoredEvent], query: UsageQuery) -> dict[tuple, float]:
    """The oracle, straight from the raw events and the meter's definition (not the counting code): first
    write of each (source, id) wins, then match, extract, filter and aggregate per window."""
    unique: dict[tuple[str, str], StoredEvent] = {}
    for event in events:
        unique.setdefault((event.source, event.id), event)
    windows = ([(query.from_ms, query.to_ms)] if query.window_size is None else
               plan_windows(query.from_ms, query.to_ms, query.window_size, resolve_time_zone(query.time_zone)))
    event_from = to_epoch_ms(parse_rfc3339(meter.event_from)) if meter.event_from else None
    values: dict[tuple, list] = defaultdict(list)
    for event in unique.values():
        if event.type != meter.event_type or (query.subjects and event.subject not in query.subjects):
            continue
        if event_from is not None and event.time_ms < event_from:
            continue
        data = event.data or {}
        if meter.aggregation == "COUNT":
            value: Any = 1
        else:
            raw = _lookup(data, meter.value_property)
            if meter.aggregation == "UNIQUE_COUNT":  # any scalar, stringified
                if raw is None or isinstance(raw, (dict, list)):
                    continue
                value = raw if isinstance(raw, str) else repr(raw) if isinstance(raw, float) else str(raw)
            else:
                value = parse_number(raw)
                if value is None:
                    continue
        groups = {key: _group_value(_lookup(data, path)) for key, path in meter.group_by.items()}
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


def _lookup(data: dict[str, Any], path: str) -> Any:
    """A `$.a.b` path into the event data (None if missing); the meters of these tests use no other form."""
    assert path.startswith("$.") and all(path[2:].split(".")), f"the oracle reads only $.a.b paths, not {path}"
    value: Any = data
    for name in path[2:].split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value


def _group_value(raw: Any) -> str:
    """A missing (or null) groupBy value is the empty string; other non-strings are their JSON text."""
    if raw is None:
        return ""
    return raw if isinstance(raw, str) else orjson.dumps(raw).decode()


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


def process(store: UsageStore, events: list[StoredEvent], rng: random.Random, compact_times: list[int],
            zone_phases: tuple[int, ...] = ()) -> None:
    """Deliver events in ingestion order in random batches, redelivering and bisecting some, and run the
    compactor at given moments of processing time (asked for the zone days of `zone_phases`)."""
    first_wins: dict[tuple[str, str], StoredEvent] = {}
    for event in events:
        first_wins.setdefault((event.source, event.id), event)
    stream = sorted(first_wins.values(), key=lambda e: e.ingested_ms)
    compactor = Compactor(store, catalogs, TIMING, requested(zone_phases))
    pending = sorted(compact_times)
    layout = random.Random(len(stream))
    i = 0
    while i < len(stream):
        size = rng.randint(1, 40)
        batch = stream[i:i + size]
        now = batch[-1].ingested_ms + rng.randrange(0, 5000)
        while pending and pending[0] <= now:
            compactor.run_until_caught_up(pending.pop(0))
        count(store, layout, batch, f"b{i}-{size}", now)
        if rng.random() < 0.2:  # redelivered whole, or as a bisected half, with a new batch id
            half = batch[: max(1, len(batch) // 2)] if rng.random() < 0.5 else batch
            count(store, layout, half, f"r{i}-{len(half)}", now + 1000)
        elif layout.random() < 0.3:  # retried bisected, its half laid out unlike the batch (shared or own pages)
            half = batch[len(batch) // 2:]
            count(store, layout, half, f"h{i}-{len(half)}", now + 1000, unlike_the_last=True)
        i += size
    for moment in pending:
        compactor.run_until_caught_up(moment)


def requested(phases: tuple[int, ...]) -> Any:
    """A zone_requests source asking for `phases` (as queries would have, at T0)."""
    return lambda now_ms: dict.fromkeys(phases, T0)


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
    """One stack state per module, on the in-memory cost-model DynamoDB (tests/fakes.py): the property
    runs many queries, and the same scenario runs once on DynamoDB Local below, for fidelity."""
    from meterline.storage.tables import USAGE_TABLE

    name = os.environ["USAGE_TABLE"]
    client = CostModelDynamoDB({name: (USAGE_TABLE.partition_key, USAGE_TABLE.sort_key)})
    store = UsageStore(client=client, table=name)
    events = make_events(7, 200)
    rng = random.Random(11)
    end = max(e.ingested_ms for e in events)
    # compaction at several moments while events arrive (late ones included), and once at the end
    final_run = end + 2 * HOUR
    process(store, events, rng, [T0 - HOUR, T0 + 3 * HOUR, T0 + 6 * HOUR + 17_000, T0 + 9 * HOUR, final_run])
    return Scenario(store, events, final_run)


class Scenario:
    def __init__(self, store: UsageStore, events: list[StoredEvent], now_ms: int) -> None:
        self.store = store
        self.events = events
        self.now_ms = now_ms

    def __repr__(self) -> str:  # keeps hypothesis' failure reports readable
        return f"Scenario({len(self.events)} events)"


@settings(max_examples=1000, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(q=QUERY)
def test_queries_equal_a_recount_of_the_raw_events(scenario, q) -> None:
    store, events = scenario.store, scenario.events
    meter = q["meter"]
    # MINUTE windows are answered from raw rows whatever their span; a long span only costs time
    span = min(q["span"], 3 * HOUR) if q["window"] is WindowSize.MINUTE else q["span"]
    query = UsageQuery(q["from"], q["from"] + span, q["window"], q["zone"], q["subjects"], q["group_by"],
                       q["filters"])
    try:
        rows = UsageReader(store).query("default", meter, query, scenario.now_ms)
    except ValueError as exc:  # too many MINUTE windows is a bad request, not a wrong answer
        assert "windows" in str(exc)
        return
    assert_same(as_result(rows), recount(meter, events, query))


def random_query(rng: random.Random, now_ms: int) -> tuple[Any, UsageQuery]:
    """A query like QUERY's over the recent past, where the compactor is behind, or (one in three) from
    before the first event, in whole UTC days where day slots can answer; ending at most an hour ahead of
    `now` and soon after the events (the reader looks up a manifest per quarter-hour above its horizon)."""
    zone = rng.choice(["UTC", "Asia/Kolkata", "America/New_York", "Asia/Kathmandu"])
    if rng.random() < 1 / 3:
        start = T0 - 20 * HOUR - rng.choice([0, HOUR, 90_000])
        span = rng.randrange(24 * HOUR, 40 * HOUR)
        window, zone = rng.choice([None, WindowSize.DAY]), rng.choice(["UTC", zone])
    else:
        start = now_ms - rng.randrange(0, 6 * HOUR, 60_000) + rng.choice([0, 0, 7_000, 450_000])
        span = rng.randrange(60_000, 8 * HOUR)
        window = rng.choice([None, WindowSize.MINUTE, WindowSize.HOUR, WindowSize.DAY])
    end = min(start + span, now_ms + HOUR, T0 + 12 * HOUR)
    if end <= start:
        start, end = end - HOUR, end
    if window is WindowSize.MINUTE:
        end = min(end, start + 2 * HOUR)
    query = UsageQuery(start, end, window, zone, rng.choice([None, ["alice"], ["bob", "carol#1"]]),
                       rng.choice([[], ["model"], ["subject", "tier"], ["model", "tier"]]),
                       rng.choice([{}, {"model": ["gpt"]}, {"tier": ["b"], "model": ["", "llama"]}]))
    return rng.choice(METERS), query


COMPACTOR_EVERY_MS = 30 * 60_000


@contextmanager
def usage_table(name: str) -> Iterator[tuple[Any, UsageStore]]:
    """A usage table of a test's own (moto; nested in the module scenario's mock if that is active)."""
    import boto3
    from moto import mock_aws

    from meterline.storage.tables import USAGE_TABLE

    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(**USAGE_TABLE.create_table_request(name))
        try:
            yield client, UsageStore(client=client, table=name)
        finally:
            client.delete_table(TableName=name)


@pytest.mark.parametrize("whole_partition_from", [compaction.WHOLE_PARTITION_SUBJECTS, 1])
def test_queries_while_the_compactor_is_behind(monkeypatch: pytest.MonkeyPatch, whole_partition_from: int) -> None:
    """Events arrive (late ones included, batches redelivered and bisected) while the compactor lags:
    it runs every 30 minutes, folds at most 3 quarters and 4 late lists per run, and now and then dies
    half-way through a run. Queries made meanwhile read day, hour and quarter slots, pending late quarters
    and the raw tail; each must equal a recount of the events processed so far. Late passes re-fold hours
    and days subject by subject, or (from `whole_partition_from` subjects on) from whole partitions."""
    from meterline.services import usage_query

    monkeypatch.setattr(compaction, "WHOLE_PARTITION_SUBJECTS", whole_partition_from)

    seen = {"crashes": 0, "queries": 0, "with pending quarters": 0, "with a raw tail": 0, "with quarter slots": 0,
            "with hour slots": 0, "with day slots": 0}
    planned = usage_query.plan

    def plan(query: UsageQuery, horizons: Horizons | None, pending: frozenset[int] = frozenset(),
             **kwargs: Any) -> Any:
        """The reader's plan, recorded: which paths the queries took."""
        chosen = planned(query, horizons, pending, **kwargs)
        seen["with pending quarters"] += any(query.from_ms <= q < query.to_ms for q in pending)
        seen["with a raw tail"] += any(end > (horizons.quarter if horizons else 0) for _, end in chosen.raw_ranges)
        for level in ("quarter", "hour", "day"):
            seen[f"with {level} slots"] += any(lv.key == level[0] for lv, _ in chosen.slots)
        return chosen

    monkeypatch.setattr(usage_query, "plan", plan)
    rng = random.Random(5)
    with usage_table("test-usage-behind") as (_, store):
        events = make_events(13, 70)
        first_wins: dict[tuple[str, str], StoredEvent] = {}
        for event in events:
            first_wins.setdefault((event.source, event.id), event)
        stream = sorted(first_wins.values(), key=lambda e: e.ingested_ms)
        compactor = Compactor(store, catalogs, TIMING)
        compactor.run_until_caught_up(stream[0].ingested_ms - HOUR)  # deployed before the first event
        layout = random.Random(len(stream))
        monkeypatch.setattr(compaction, "MAX_QUARTERS_PER_RUN", 3)
        monkeypatch.setattr(compaction, "MAX_LATE_QUARTERS_PER_RUN", 4)

        processed: list[StoredEvent] = []
        now = stream[0].ingested_ms
        next_run = now + COMPACTOR_EVERY_MS
        i = 0
        while i < len(stream):
            size = rng.randint(1, 6)
            batch = stream[i:i + size]
            now = max(now, batch[-1].ingested_ms + rng.randrange(0, 5000))
            while next_run <= now:  # the compactor's scheduled runs up to now, some of them dying half-way
                if rng.random() < 0.3:
                    seen["crashes"] += 1
                    store.put_slot = _dies_after(rng.randint(1, 6), store.put_slot)  # type: ignore[method-assign]
                try:
                    compactor.run(next_run)
                except _CompactorDied:
                    pass
                finally:
                    store.__dict__.pop("put_slot", None)
                next_run += COMPACTOR_EVERY_MS
            count(store, layout, batch, f"b{i}-{size}", now)
            if rng.random() < 0.3:  # redelivered whole or bisected, later, under another batch id
                part = batch[len(batch) // 2:] if rng.random() < 0.5 else batch
                count(store, layout, part, f"r{i}-{len(part)}", now + 1000)
            elif layout.random() < 0.3:  # a bisected half laid out unlike the batch
                part = batch[len(batch) // 2:]
                count(store, layout, part, f"h{i}-{len(part)}", now + 1000, unlike_the_last=True)
            processed.extend(batch)
            i += size
            if rng.random() < 0.6 or i >= len(stream):
                reader = UsageReader(store)
                for _ in range(4):
                    meter, query = random_query(rng, now)
                    seen["queries"] += 1
                    try:
                        rows = reader.query("default", meter, query, now)
                    except ValueError as exc:  # too many MINUTE windows is a bad request, not a wrong answer
                        assert "windows" in str(exc)
                        continue
                    assert_same(as_result(rows), recount(meter, processed, query))
    # the scenario did what it is for
    assert seen["crashes"] >= 2 and min(seen.values()) >= 3, seen


class _CompactorDied(Exception):
    pass


def _dies_after(writes: int, put_slot: Any) -> Any:
    left = [writes]

    def put(*args: Any, **kwargs: Any) -> int:
        if left[0] == 0:
            raise _CompactorDied
        left[0] -= 1
        return put_slot(*args, **kwargs)

    return put


def _event(i: int, time_ms: int, ingested_ms: int) -> StoredEvent:
    return StoredEvent("default", f"x{i}", "s1", "use", "alice", time_ms, ingested_ms, {"v": 1, "tier": "a"})


def test_late_rows_while_the_compactor_is_stalled() -> None:
    """A late event counts from the moment it is processed, however long the compactor has not run
    (the events table is the source of truth; docs/architecture.md: missing "only between its arrival as
    a late event and the next compaction"): the reader finds every late list from the compactor's `lateThrough` on."""
    meter = next(m for m in METERS if m.slug == "m_count")
    with usage_table("test-usage-stalled") as (_, store):
        compactor = Compactor(store, catalogs, TIMING)
        compactor.run_until_caught_up(T0)
        on_time = _event(1, T0 + 60_000, T0 + 61_000)
        count_events([on_time], catalogs, store, "b1", T0 + 61_000, TIMING)
        compactor.run_until_caught_up(T0 + HOUR)  # folds the 20:00 quarter; then stops running
        late = _event(2, T0 + 120_000, T0 + HOUR + 60_000)
        count_events([late], catalogs, store, "b2", T0 + HOUR + 60_000, TIMING)
        query = UsageQuery(T0, T0 + HOUR)
        want = recount(meter, [on_time, late], query)
        reader = UsageReader(store)
        assert_same(as_result(reader.query("default", meter, query, T0 + 2 * HOUR)), want)  # 1 h behind: right
        assert_same(as_result(reader.query("default", meter, query, T0 + 4 * HOUR)), want)  # 3 h behind
        assert_same(as_result(reader.query("default", meter, query, T0 + 50 * HOUR)), want)  # 2 days behind
        compactor.run_until_caught_up(T0 + 50 * HOUR)
        assert_same(as_result(reader.query("default", meter, query, T0 + 50 * HOUR)), want)  # and caught up


def test_a_query_to_the_end_of_the_month_reads_few_items() -> None:
    """`to` is often the end of a billing period: the quarters after now must not cost a read each."""
    meter = next(m for m in METERS if m.slug == "m_sum")
    with usage_table("test-usage-month") as (client, store):
        compactor = Compactor(store, catalogs, TIMING)
        compactor.run_until_caught_up(T0)
        event = _event(1, T0 + 60_000, T0 + 61_000)
        count_events([event], catalogs, store, "b1", T0 + 61_000, TIMING)
        compactor.run_until_caught_up(T0 + HOUR)
        calls: list[str] = []
        client.meta.events.register("before-call.dynamodb", lambda event_name, **_: calls.append(event_name))
        month = UsageQuery(to_epoch_ms(parse_rfc3339("2024-03-01T00:00:00Z")),
                           to_epoch_ms(parse_rfc3339("2024-04-01T00:00:00Z")), WindowSize.DAY)
        rows = UsageReader(store).query("default", meter, month, T0 + HOUR)
        assert_same(as_result(rows), recount(meter, [event], month))
        assert len(calls) <= 60, f"{len(calls)} DynamoDB calls for one month"


def test_an_event_dated_up_to_the_ingestion_limit_ahead_counts_once_processed() -> None:
    """Ingestion refuses event times more than MAX_FUTURE_MS after receipt (tests/unit/
    test_event_validation.py); an event at that limit, processed at once, counts in queries right away
    and after compaction, also when the query's clock is a few minutes behind the ingesting one."""
    from meterline.domain.events import MAX_FUTURE_MS

    meter = next(m for m in METERS if m.slug == "m_count")
    with usage_table("test-usage-future") as (_, store):
        compactor = Compactor(store, catalogs, TIMING)
        compactor.run_until_caught_up(T0)
        received = T0 + 14 * 60_000 + 59_000  # the limit lands in the next quarter
        ahead = _event(1, received + MAX_FUTURE_MS, received)
        count_events([ahead], catalogs, store, "b1", received + 1000, TIMING)
        query = UsageQuery(T0, T0 + 2 * HOUR, WindowSize.HOUR)
        want = recount(meter, [ahead], query)
        assert want
        reader = UsageReader(store)
        for now in (received - 5 * 60_000, received + 2000, received + HOUR):
            compactor.run_until_caught_up(now)
            assert_same(as_result(reader.query("default", meter, query, now)), want)


def fresh_usage_table(dynamodb_local: Any, name: str) -> UsageStore:
    """A new, empty usage table `name` on DynamoDB Local."""
    from meterline.storage.tables import USAGE_TABLE

    client = dynamodb_local.client()
    if name in client.list_tables()["TableNames"]:
        client.delete_table(TableName=name)
    client.create_table(**USAGE_TABLE.create_table_request(name))
    return UsageStore(client=client, table=name)


def test_queries_equal_a_recount_on_dynamodb_local(dynamodb_local) -> None:
    """The recount property's scenario on the local stack's engine, for fidelity: the same events,
    batches, redeliveries and compactor runs, and a fixed sample of queries across the plan's paths."""
    store = fresh_usage_table(dynamodb_local, "test-usage-recount")
    events = make_events(7, 200)
    end = max(e.ingested_ms for e in events)
    final_run = end + 2 * HOUR
    process(store, events, random.Random(11), [T0 - HOUR, T0 + 3 * HOUR, T0 + 6 * HOUR + 17_000, T0 + 9 * HOUR,
                                               final_run])
    rng = random.Random(3)
    for _ in range(12):
        meter, query = random_query(rng, final_run)
        rows = UsageReader(store).query("default", meter, query, final_run)
        assert_same(as_result(rows), recount(meter, events, query))


def test_quarter_bundles_read_one_subject_on_dynamodb_local(dynamodb_local) -> None:
    """Bundles on the real engine: a quarter of 500 quiet subjects is cut into several items, and each
    subject's states come back from its bundle (a Query from its key prefix, Limit 1), a missing subject's
    as nothing, and all of them in key order."""
    store = fresh_usage_table(dynamodb_local, "test-usage-bundles")
    rng = random.Random(5)
    states = {f"customer-{i}": {"m": f"[{rng.random()}]"} for i in range(500)}
    states["ü"] = {"m": "[1]", "n": "[2]"}
    store.put_quarter_slots("default", T0, states)
    bundles = list(store.partition_items(bundle_partition("default", QUARTER, T0)))
    assert 1 < len(bundles) < 50
    for subject in ("customer-0", "customer-499", "customer-250", "ü", "customer-5000", "a"):
        assert list(store.read_slots("default", QUARTER, T0, ["m", "n"], subject)) == (
            [(subject, {0: states[subject]})] if subject in states else [])
    assert [s for s, _ in store.read_slots("default", QUARTER, T0, ["m"])] == sorted(states, key=subject_prefix)


# --- raw rows in shared pages and pages of their own -----------------------------------------------------

def raw_rows_by_place(items: Iterator[dict[str, Any]] | list[dict[str, Any]]) -> dict[tuple[str, str, str], set[str]]:
    """Where the rows of the usage table's raw pages lie: (counter set, source, id) -> {"own", "shared"}."""
    places: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for item in items:
        _, kind, counter_set, *_ = [*item["pk"]["S"].split("#"), "", ""]  # these tests' namespace has no "#"
        if kind != RAW:
            continue
        page = unpack(item["rows"]["B"])
        entries = page if counter_set == SHARED else [[counter_set, page]]
        for cs, rows in entries:
            for row in rows:
                places[(cs, row[0], row[1])].add("shared" if counter_set == SHARED else "own")
    return places


def stored_items(store: UsageStore) -> list[dict[str, Any]]:
    """Every item of a store on the cost model."""
    return [item for partition in store.client.tables[store.table].values() for item in partition.values()]


def test_the_scenarios_rows_lie_in_shared_and_own_pages(scenario, multi_day) -> None:
    """What the properties above stand on: rows in shared pages, in pages of their own, and (a batch and its
    redelivery laid out differently) rows of one event in both; and quarters with both kinds of partition."""
    for case in (scenario, multi_day):
        items = stored_items(case.store)
        places = raw_rows_by_place(items)
        layouts = Counter(frozenset(place) for place in places.values())
        assert min(layouts[frozenset({"own"})], layouts[frozenset({"shared"})]) >= 100, layouts
        assert layouts[frozenset({"own", "shared"})] >= 20, layouts
        partitions: dict[tuple[str, str], set[bool]] = defaultdict(set)
        for item in items:
            _, kind, counter_set, quarter, bucket = [*item["pk"]["S"].split("#"), "", "", "", ""][:5]
            if kind == RAW:
                partitions[(quarter, bucket)].add(counter_set == SHARED)
        assert sum(1 for kinds in partitions.values() if kinds == {True, False}) >= 10


def _busy(i: int, start: int) -> StoredEvent:
    """alice's busy minute: many events within ten seconds."""
    time_ms = start + 3 * MINUTE + i * 50
    return StoredEvent("default", f"busy{i}", "s1", "use", "alice", time_ms, time_ms + 20_000,
                       {"v": i % 7, "model": ["gpt", "llama"][i % 2], "tier": "a"})


def _quiet(i: int, start: int) -> StoredEvent:
    """A quiet minute's event: two per minute, of one subject a minute."""
    time_ms = start + (5 + i // 2) * MINUTE + 1234 * i
    return StoredEvent("default", f"quiet{i}", "s2", "use", SUBJECTS[i // 2 % len(SUBJECTS)], time_ms,
                       time_ms + 5_000, {"v": str(i), "model": "gpt", "tier": "b"})


def test_rows_in_shared_and_own_pages_of_one_quarter_count_each_event_once() -> None:
    """One quarter with the deployed threshold: alice's busy minute (a page of its own per counter set, rewritten
    by a redelivery), its batch retried bisected down to a half small enough for the shared page (so the rows
    of those events lie in both), quiet minutes (one shared page per subject bucket and minute for all seven
    counter sets), then, after the quarter was folded, a late event whose rows go to a shared page. Queries with
    MINUTE windows and edges off the quarter-hour (raw rows), over the pending late quarter (raw rows) and over
    folded quarters all equal a recount."""
    from meterline.domain.counting import subject_bucket

    start = T0 + 2 * HOUR  # a quarter-hour: 22:00 UTC
    counter_sets = sorted(c.counter_set for c in counters_for(CATALOG)["use"])
    busy = [_busy(i, start) for i in range(200)]
    quiet = [_quiet(i, start) for i in range(8)]
    late = StoredEvent("default", "late", "s1", "use", "bob", start + 7 * MINUTE + 5, start + HOUR, {"v": 5})

    def check(store: UsageStore, processed: list[StoredEvent], now: int) -> None:
        reader = UsageReader(store)
        for meter in METERS:
            for query in (
                    UsageQuery(start, start + QUARTER_MS, WindowSize.MINUTE, "UTC", None, ["subject", "model"]),
                    UsageQuery(start + 3 * MINUTE + 4_025, start + 2 * HOUR + 7 * MINUTE, None, "UTC", ["alice"],
                               ["model"]),
                    UsageQuery(start - 7 * MINUTE - 3_000, start + 3 * HOUR, WindowSize.HOUR, "Asia/Kolkata", None,
                               ["subject"])):
                assert_same(as_result(reader.query("default", meter, query, now)), recount(meter, processed, query))

    with usage_table("test-usage-layouts") as (client, store):
        compactor = Compactor(store, catalogs, TIMING)
        compactor.run_until_caught_up(start)
        now = start + 4 * MINUTE
        assert count_events(busy, catalogs, store, "busy", now, TIMING).pages == len(counter_sets)
        raw_before = raw_pages(client, store)
        assert {pk.split("#")[2] for pk, _ in raw_before} == set(counter_sets)  # all their own
        # redelivered: the same pages, overwritten
        assert count_events(busy, catalogs, store, "busy", now + 1_000, TIMING).pages == len(counter_sets)
        assert raw_pages(client, store) == raw_before
        # retried bisected, as Lambda does, under other batch ids: the last sixteenth packs small enough to share
        for lo in (100, 150, 175, 188):
            count_events(busy[lo:], catalogs, store, f"busy-{lo}", now + 2_000, TIMING)
        places = raw_rows_by_place(scan_all(client, store.table))
        assert all(places[(cs, "s1", f"busy{i}")] == {"own"} for cs in counter_sets for i in range(100))
        assert all(places[(cs, "s1", f"busy{i}")] == {"own", "shared"} for cs in counter_sets for i in range(188, 200))
        # quiet minutes: one page per (bucket, minute) touched (4), where pages of their own were one per
        # counter set too (28)
        pages = {(subject_bucket(e.subject), e.time_ms // MINUTE) for e in quiet}
        assert count_events(quiet, catalogs, store, "quiet", start + 12 * MINUTE, TIMING).pages == len(pages) == 4
        assert places_of(client, store, "quiet0") == {"shared"}
        check(store, busy + quiet, start + 13 * MINUTE)  # raw rows

        compactor.run_until_caught_up(start + QUARTER_MS + TIMING.grace_ms + MINUTE)  # folds the quarter
        assert store.get_compaction_state().quarter > start
        check(store, busy + quiet, start + QUARTER_MS + TIMING.grace_ms + MINUTE)

        assert count_events([late], catalogs, store, "late", start + HOUR, TIMING).pages == 1
        assert places_of(client, store, "late") == {"shared"}
        assert {part[1] for part in store.read_late_since("default", start)} == set(counter_sets)
        check(store, busy + quiet + [late], start + HOUR + 1_000)  # the late quarter pending: raw rows
        compactor.run_until_caught_up(start + 2 * HOUR)
        assert store.get_compaction_state().late_through > start + HOUR
        check(store, busy + quiet + [late], start + 2 * HOUR)  # folded again, from both kinds of page


def raw_pages(client: Any, store: UsageStore) -> dict[tuple[str, str], bytes]:
    """The raw pages of a store: (partition, sort key) -> the packed rows."""
    return {(item["pk"]["S"], item["sk"]["S"]): item["rows"]["B"] for item in scan_all(client, store.table)
            if f"#{RAW}#" in item["pk"]["S"]}


def places_of(client: Any, store: UsageStore, event_id: str) -> set[str]:
    """Where one event's rows lie, in any counter set."""
    return {place for (_, _, id_), found in raw_rows_by_place(scan_all(client, store.table)).items()
            if id_ == event_id for place in found}


# --- zone days over several days, late events landing in them, DST --------------------------------------

MINUTE = 60_000
DAY = 24 * HOUR
# Asia/Kolkata's days start at 18:30 UTC, Asia/Kathmandu's at 18:15, New York's at 05:00 (EST) and 04:00 (EDT)
ZONE_PHASES = (18 * HOUR + 30 * MINUTE, 18 * HOUR + 15 * MINUTE, 5 * HOUR, 4 * HOUR)
DAYS_FROM = T0 - 28 * HOUR  # 2024-03-08T16:00Z
DAYS_TO = T0 + 68 * HOUR  # 2024-03-12T16:00Z
MULTI_DAY_ZONES = ["UTC", "Asia/Kolkata", "Asia/Kathmandu", "America/New_York"]


def make_multi_day_events(seed: int, n: int) -> list[StoredEvent]:
    """Events over four days around New York's spring-forward; one in five arrives late, up to 40 hours
    after its time (often after the zone day holding it was built), some are duplicates."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        time_ms = DAYS_FROM + rng.randrange(0, DAYS_TO - DAYS_FROM, 1000) + rng.randrange(1000)
        delay = rng.randrange(0, 40 * HOUR) if rng.random() < 0.2 else rng.randrange(0, 5000)
        data = {"v": rng.choice(VALUES), "model": rng.choice(["gpt", "llama", ""]), "tier": rng.choice(["a", "b"])}
        event = StoredEvent("default", f"d{i}", rng.choice(["s1", "s2"]), "use", rng.choice(SUBJECTS), time_ms,
                            time_ms + delay, data)
        events.append(event)
        if rng.random() < 0.05:
            events.append(StoredEvent("default", event.id, event.source, "use", "mallory", time_ms, time_ms,
                                      {"v": 999}))
    return events


def late_in_built_zone_days(events: list[StoredEvent]) -> int:
    """Events processed after the zone day holding them was built (its end, plus the compactor's grace and
    its half-hour schedule)."""
    return sum(1 for e in events for phase in ZONE_PHASES[:2]
               if e.ingested_ms > e.time_ms - (e.time_ms - phase) % DAY + DAY + TIMING.grace_ms + 30 * MINUTE)


@pytest.fixture(scope="module")
def multi_day():
    from meterline.storage.tables import USAGE_TABLE

    name = os.environ["USAGE_TABLE"]
    store = UsageStore(client=CostModelDynamoDB({name: (USAGE_TABLE.partition_key, USAGE_TABLE.sort_key)}), table=name)
    events = make_multi_day_events(17, 400)
    end = max(e.ingested_ms for e in events)
    compact_times = list(range(DAYS_FROM - HOUR, end + 2 * HOUR, 30 * MINUTE))
    process(store, events, random.Random(19), compact_times, ZONE_PHASES)
    return Scenario(store, events, compact_times[-1])


def _local_midnight(zone: str, ms: int) -> int:
    """The first window start at or before `ms` of DAY windows in `zone`."""
    return plan_windows(ms - 2 * DAY, ms + 1, WindowSize.DAY, resolve_time_zone(zone))[-1][0]


MULTI_DAY_QUERY = st.fixed_dictionaries({
    "meter": st.sampled_from(METERS),
    "day": st.integers(0, 4),
    "days": st.integers(1, 4),
    "edge": st.sampled_from([0, 0, 0, 15 * MINUTE, -7 * MINUTE - 3_000, 5 * HOUR]),
    "window": st.sampled_from([WindowSize.DAY, WindowSize.DAY, WindowSize.MONTH, None, WindowSize.HOUR]),
    "zone": st.sampled_from(MULTI_DAY_ZONES),
    "subjects": st.sampled_from([None, ["alice"], ["bob", "carol#1"]]),
    "group_by": st.sampled_from([[], ["model"], ["subject", "tier"], ["model", "tier"]]),
    "filters": st.sampled_from([{}, {"model": ["gpt"]}, {"tier": ["b"], "model": ["", "llama"]}]),
})


@settings(max_examples=400, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(q=MULTI_DAY_QUERY)
def test_local_days_in_any_zone_equal_a_recount_after_late_events(multi_day, q) -> None:
    """Queries mostly of whole local days (zone days where the compactor built them), in UTC, Kolkata,
    Kathmandu and New York across its DST change, after events that arrived up to 40 hours late."""
    start = _local_midnight(q["zone"], DAYS_FROM + q["day"] * DAY) + q["edge"]
    query = UsageQuery(start, start + q["days"] * DAY, q["window"], q["zone"], q["subjects"], q["group_by"],
                       q["filters"])
    rows = UsageReader(multi_day.store).query("default", q["meter"], query, multi_day.now_ms)
    assert_same(as_result(rows), recount(q["meter"], multi_day.events, query))


def test_the_multi_day_scenario_reads_zone_days_that_late_events_changed(multi_day) -> None:
    """What the property above stands on: late events after zone days were built, and DAY queries of every
    zone read one zone day per whole local day (New York's 23-hour day from hours)."""
    assert late_in_built_zone_days(multi_day.events) >= 20
    state = multi_day.store.get_compaction_state()
    assert sorted(state.zones) == sorted(ZONE_PHASES)
    meter = next(m for m in METERS if m.slug == "m_sum")
    for zone, whole_days in (("Asia/Kolkata", 3), ("Asia/Kathmandu", 3), ("America/New_York", 2), ("UTC", 3)):
        start = _local_midnight(zone, DAYS_FROM + DAY)
        query = UsageQuery(start, _local_midnight(zone, DAYS_TO), WindowSize.DAY, zone, None, ["subject", "model"])
        chosen = plan(query, state)
        zone_days = sum(len(starts) for (level, _), starts in chosen.slots.items() if level.key.startswith("z"))
        assert zone_days == (0 if zone == "UTC" else whole_days), (zone, chosen.slots.keys())
        rows = UsageReader(multi_day.store).query("default", meter, query, multi_day.now_ms)
        assert_same(as_result(rows), recount(meter, multi_day.events, query))


# --- eventually consistent reads from a replica that lags -----------------------------------------------

class StaleReplicaDynamoDB(CostModelDynamoDB):
    """The cost model, where eventually consistent reads (Query, GetItem with ConsistentRead false) are
    served by a replica that has applied, in order, only the writes made at least `lag_ms` before the
    simulated `clock_ms`: what DynamoDB allows, with a lag far beyond its usual second."""

    def __init__(self, key_schemas: dict[str, tuple[str, str | None]], lag_ms: int) -> None:
        super().__init__(key_schemas)
        self.lag_ms = lag_ms
        self.replica = CostModelDynamoDB(key_schemas)
        self.log: list[tuple[int, str, str, str, dict[str, Any] | None]] = []
        self.applied = 0
        self.eventual_reads = 0

    def _store(self, table: str, pk: str, sk: str, item: dict[str, Any]) -> None:
        super()._store(table, pk, sk, item)
        self.log.append((self.clock_ms or 0, table, pk, sk, dict(item)))

    def _remove(self, table: str, pk: str, sk: str) -> None:
        super()._remove(table, pk, sk)
        self.log.append((self.clock_ms or 0, table, pk, sk, None))

    def _caught_up(self) -> CostModelDynamoDB:
        while self.applied < len(self.log) and self.log[self.applied][0] <= (self.clock_ms or 0) - self.lag_ms:
            _, table, pk, sk, item = self.log[self.applied]
            if item is None:
                self.replica._remove(table, pk, sk)
            else:
                self.replica._store(table, pk, sk, item)
            self.applied += 1
        self.eventual_reads += 1
        return self.replica

    def query(self, **request: Any) -> dict[str, Any]:  # type: ignore[override]
        if request.get("ConsistentRead"):
            return super().query(**request)
        return self._caught_up().query(**request)

    def get_item(self, **request: Any) -> dict[str, Any]:  # type: ignore[override]
        if request.get("ConsistentRead"):
            return super().get_item(**request)
        return self._caught_up().get_item(**request)


def run_with_a_lagging_replica(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int, int]:
    """Events over two days (a fifth of them late, some batches redelivered), the compactor every minute
    with zone days, and queries of the local days of events just processed, against a replica 4 minutes
    behind (SETTLE_MS is 5). Returns (queries, queries differing from a recount of the events processed,
    eventually consistent reads)."""
    from meterline.domain import slots
    from meterline.storage.tables import USAGE_TABLE

    assert slots.SETTLE_MS == 5 * MINUTE
    name = os.environ["USAGE_TABLE"]
    client = StaleReplicaDynamoDB({name: (USAGE_TABLE.partition_key, USAGE_TABLE.sort_key)}, lag_ms=4 * MINUTE)
    store = UsageStore(client=client, table=name)
    rng = random.Random(23)
    events = [e for e in make_multi_day_events(29, 400) if e.time_ms < DAYS_FROM + 2 * DAY]
    first_wins: dict[tuple[str, str], StoredEvent] = {}
    for event in events:
        first_wins.setdefault((event.source, event.id), event)
    stream = sorted(first_wins.values(), key=lambda e: e.ingested_ms)
    compactor = Compactor(store, catalogs, TIMING, requested(ZONE_PHASES))
    layout = random.Random(len(stream))
    next_run = DAYS_FROM - HOUR
    processed: list[StoredEvent] = []
    queries = wrong = 0
    i = 0
    now = stream[0].ingested_ms
    while i < len(stream):
        size = rng.randint(1, 5)
        batch = stream[i:i + size]
        now = max(now, batch[-1].ingested_ms + rng.randrange(0, 5000))
        while next_run <= now:
            client.clock_ms = next_run
            compactor.run(next_run)
            next_run += MINUTE
        client.clock_ms = now
        count(store, layout, batch, f"b{i}-{size}", now)
        if rng.random() < 0.2:
            count(store, layout, batch, f"r{i}-{size}", now)
        processed.extend(batch)
        i += size
        for _ in range(3):
            zone = rng.choice(MULTI_DAY_ZONES)
            # the local day of an event processed lately (often a late one, in slots just folded again)
            start = _local_midnight(zone, rng.choice(processed[-30:]).time_ms)
            query = UsageQuery(start, start + rng.choice([1, 2]) * DAY, rng.choice([WindowSize.DAY, None]), zone,
                               rng.choice([None, ["alice"]]), rng.choice([[], ["subject", "tier"]]))
            meter = rng.choice(METERS)
            rows = UsageReader(store).query("default", meter, query, now)
            queries += 1
            got, want = as_result(rows), recount(meter, processed, query)
            if got.keys() != want.keys() or any(not math.isclose(got[k], v, abs_tol=1e-9) for k, v in want.items()):
                wrong += 1
    return queries, wrong, client.eventual_reads


def test_eventually_consistent_reads_of_settled_slots_equal_a_recount(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slots, zone days included, are read eventually consistently once settled (below the horizons of
    at least SETTLE_MS ago, and not re-folded from late rows since): against a replica 4 minutes behind,
    every query made while events (late ones included) arrive and the compactor runs equals a recount, and
    many reads were eventually consistent."""
    queries, wrong, eventual = run_with_a_lagging_replica(monkeypatch)
    assert wrong == 0 and queries > 200 and eventual > queries, (queries, wrong, eventual)


@pytest.mark.parametrize("unsafe", ["every slot", "no late lists", "no settling"])
def test_eventually_consistent_reads_of_slots_not_settled_get_numbers_wrong(monkeypatch: pytest.MonkeyPatch,
                                                                          unsafe: str) -> None:
    """The same against the replica, with one part of the rule left out: reading every slot eventually
    consistently; ignoring the late lists between the settled and the current `lateThrough` (slots just
    folded again from late rows); or settling the horizons at once instead of SETTLE_MS later."""
    from meterline.services import compaction, usage_query

    if unsafe == "every slot":
        planned = usage_query.plan

        def plan_everything_eventual(*args: Any, **kwargs: Any) -> Any:
            chosen = planned(*args, **kwargs)
            chosen.eventual = set(chosen.slots)
            return chosen

        monkeypatch.setattr(usage_query, "plan", plan_everything_eventual)
    elif unsafe == "no late lists":
        late_quarters = usage_query.UsageReader._late_quarters

        def pending_only(self: Any, *args: Any) -> tuple[frozenset[int], frozenset[int]]:
            return late_quarters(self, *args)[0], frozenset()

        monkeypatch.setattr(usage_query.UsageReader, "_late_quarters", pending_only)
    else:
        monkeypatch.setattr(compaction, "SETTLE_MS", 0)
    _, wrong, _ = run_with_a_lagging_replica(monkeypatch)
    assert wrong > 0


def test_zone_days_asked_for_after_the_events_are_built_back_over_the_days_before() -> None:
    """The same events counted with no zone days asked for; then queries ask for Kolkata's and Adelaide's
    (+10:30 in March: days from 13:30 UTC), and the compactor builds them back over the days before, a few
    per run: DAY queries then read them and equal a recount."""
    from meterline.storage.tables import USAGE_TABLE

    name = os.environ["USAGE_TABLE"]
    store = UsageStore(client=CostModelDynamoDB({name: (USAGE_TABLE.partition_key, USAGE_TABLE.sort_key)}), table=name)
    events = make_multi_day_events(31, 300)
    end = max(e.ingested_ms for e in events)
    process(store, events, random.Random(37), list(range(DAYS_FROM - HOUR, end + 2 * HOUR, 30 * MINUTE)))
    assert store.get_compaction_state().zones == {}
    now = end + 3 * HOUR
    phases = (18 * HOUR + 30 * MINUTE, 13 * HOUR + 30 * MINUTE)
    compactor = Compactor(store, catalogs, TIMING, requested(phases))
    runs = 1
    while not compactor.run(now).caught_up:
        runs += 1
    assert runs > 2  # a few zone days per run
    state = store.get_compaction_state()
    meter = next(m for m in METERS if m.slug == "m_unique_count")
    for zone in ("Asia/Kolkata", "Australia/Adelaide"):
        query = UsageQuery(_local_midnight(zone, DAYS_FROM), _local_midnight(zone, DAYS_TO + DAY), WindowSize.DAY,
                           zone, None, ["subject", "model"])
        chosen = plan(query, state)
        assert sum(len(starts) for (level, _), starts in chosen.slots.items() if level.key.startswith("z")) == 5
        rows = UsageReader(store).query("default", meter, query, now)
        assert_same(as_result(rows), recount(meter, events, query))


def test_zone_days_equal_a_recount_on_dynamodb_local(dynamodb_local) -> None:
    """The multi-day scenario (fewer events, the compactor every 2 hours) on the local stack's engine: zone
    days, the compaction state's settled horizons and eventually consistent reads as DynamoDB takes them."""
    store = fresh_usage_table(dynamodb_local, "test-usage-zone-days")
    events = make_multi_day_events(41, 120)
    end = max(e.ingested_ms for e in events)
    final_run = end + 2 * HOUR
    process(store, events, random.Random(43), [*range(DAYS_FROM - HOUR, end, 2 * HOUR), final_run], ZONE_PHASES)
    state = store.get_compaction_state()
    assert sorted(state.zones) == sorted(ZONE_PHASES) and state.settled is not None
    rng = random.Random(47)
    for zone in MULTI_DAY_ZONES * 3:
        start = _local_midnight(zone, DAYS_FROM + rng.randrange(0, 3 * DAY))
        query = UsageQuery(start, start + rng.choice([1, 2, 3]) * DAY, rng.choice([WindowSize.DAY, WindowSize.MONTH]),
                           zone, rng.choice([None, ["alice"]]), rng.choice([[], ["subject", "tier"]]))
        meter = rng.choice(METERS)
        rows = UsageReader(store).query("default", meter, query, final_run)
        assert_same(as_result(rows), recount(meter, events, query))
