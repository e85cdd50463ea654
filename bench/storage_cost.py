"""DynamoDB cost of the benchmark workload (bench/workload.py), counted by a model that applies
DynamoDB's on-demand billing rules to the calls the real code makes (tests/fakes.py CostModelDynamoDB),
and the read cost of a 30-day query. Every figure is one `<name> <value>` line.

Workload (bench/workload.py): 100,000 events of the example meters arriving at 1,000 events/s, sent
100 per request through EventsStore.put_new (ingestion time = event time); the events table's stream,
in commit order, is fed to the real processor handler in 1,000-record batches (each a second after
its last write); then the real Compactor.run_until_caught_up runs once every quarter of the workload is
closed. The workload ends at UTC midnight, so that run also folds its hour and its day: quarter, hour
and day slots are all paid for, over only 100 s of traffic (a slot write per subject seen at each level,
plus one per state of more than 256 bytes).

Queries (UsageReader.query, tokens_total, DAY windows, groupBy model and type) are for the most active
subject, `customer-1` (Zipf rank 1, ~10% of the events: the most rows and the largest slots to read):
- `query_rru_30d_day`: the 30 UTC days ending at the workload's midnight, after compaction;
- `query_rru_30d_day_fresh`: the same right after ingestion, before any compaction (all raw rows);
- `query_rru_30d_day_kolkata`: the same from/to with windowTimeZone Asia/Kolkata;
- `query_rru_30d_day_through_today`: 30 days through the end of the current UTC day (`to` in the future).
Each result is checked against a recount of the generated events.

Steady state (`*_steady`): one full UTC quarter (900,000 events at 1,000 events/s) through the processor
and the compactor, so quarter slots amortise over a quarter as under continuous traffic. Event puts are
not replayed (same cost per event by construction). Hour slots are written once per subject and hour,
day slots once per subject and day: the figures are the roll-ups of that quarter / 4 and / 96. Then
queries ask for the zone days of three phases (Asia/Kolkata 18:30, Asia/Kathmandu 18:15, America/New_York
in May 04:00) and the compactor builds the ones holding the quarter (and the empty ones of the 30 days
before): `wru_zone_day_slots_per_event_steady_per_phase` is that / 96 / 3 (a zone day's slots, like a
day's, are written once per subject and day; not in `wru_per_event_steady`, which has no phase asked for).
Also:
- `query_rru_to_now_steady`: the 30-day query with `to` = now, at the end of that quarter (the usual
  dashboard query: the quarter not yet compacted is read through its manifest and raw rows; the
  compactor's horizons have not been settled long enough for eventually consistent reads);
- `query_rru_30d_day_steady`, `query_rru_30d_day_{kolkata,kathmandu,new_york}_steady`: the 30-day queries
  (from and to at UTC midnights, so in a zone the first and last windows are part days) over 30 days of
  steady traffic for `customer-1`, approximated by copying its compacted quarter, hour, day and zone day
  slots (packed and split items) into every quarter, hour, day and zone day of the range (its group
  vocabularies saturate within a quarter, so a day slot is about as large as a quarter slot), under a
  compactor that is up to date, keeps the three phases and has been up to date for more than SETTLE_MS
  (settled horizons: slots are read eventually consistently). Each lever alone: `..._consistent` (zone
  days, every read strongly consistent: the figures before eventually consistent reads) and
  `query_rru_30d_day_kolkata_steady_without_zone_days` (eventually consistent reads of UTC slots). No
  recount check there (the copies are not events).

All-in cost per million events at 1, 4, 40 and 1,000 events/s (bench/all_in.py, run side by side with the
above in processes of their own): `usd_per_million_all_in_<rate>eps` (DynamoDB writes and reads of every
function, storage and point-in-time recovery of what the events leave stored for as long as it lives, Lambda
GB-s of CPU measured with real botocore, Lambda, API Gateway, SQS and Scheduler requests, logs),
`usd_floor_per_million_<rate>eps` (the event put, the event item's storage and backups for the retention, the
API Gateway and Lambda requests) and `cost_ratio_to_floor_<rate>eps`; their parts (`usd_<part>_per_million`),
and the ratio with the storage settings the defaults replaced (`..._usage_with_pitr`: point-in-time recovery on
the usage table; `..._fine_rows_kept_as_events`: minute rows and quarter slots kept 400 days, not 35;
`..._before_storage_defaults`: both).
"""

from __future__ import annotations

import math
import sys
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# importing `bench` first sets the environment the handlers read (bench/__init__.py)

from bench import all_in, processor_cpu  # noqa: E402
from bench.categories import EVENTS_TABLE, USAGE_TABLE, category  # noqa: E402
from bench.workload import FIRST_SEQUENCE, NAMESPACE, example_catalog, generate, stream_record  # noqa: E402
from functions.processor import handler as processor  # noqa: E402
from meterline.domain.events import CloudEvent  # noqa: E402
from meterline.domain.meters import MeterCatalog  # noqa: E402
from meterline.domain.slots import DAY, HOUR, QUARTER, Horizons, ZoneDays, ZoneRange, floor_to  # noqa: E402
from meterline.domain.timeutil import (  # noqa: E402
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    QUARTER_MS,
    format_ms,
)
from meterline.services.compaction import Compactor  # noqa: E402
from meterline.services.usage_query import UsageQueryParameters, UsageReader  # noqa: E402
from meterline.settings import CompactionTiming  # noqa: E402
from meterline.storage.events_store import EventsStore, is_manifest  # noqa: E402
from meterline.storage.tables import EVENT_TIME_INDEX  # noqa: E402
from meterline.storage.usage_store import (  # noqa: E402
    UsageStore,
    bundle_partition,
    slot_key,
    slot_partition,
    subject_prefix,
)
from meterline_local.lambda_runtime import LocalLambdaContext  # noqa: E402
from tests.fakes import DYNAMODB_ITEM_LIMIT, CostModelDynamoDB  # noqa: E402

CONTEXT = LocalLambdaContext("bench")

EVENTS = 100_000
RATE_PER_S = 1_000
REQUEST_EVENTS = 100
STREAM_BATCH = 1_000
SMALL_STREAM_BATCH = 100  # a lightly loaded stream, or streamBatchSize=100
DAY_END_MS = 1_715_731_200_000  # 2024-05-15T00:00:00Z
START_MS = DAY_END_MS - EVENTS * 1000 // RATE_PER_S  # 2024-05-14T23:58:20Z
TIMING = CompactionTiming(grace_ms=180_000, write_margin_ms=90_000)
TOP_SUBJECT = "customer-1"  # Zipf rank 1: the most active subject
QUERY_METER = "tokens_total"
STEADY_QUARTER_START_MS = DAY_END_MS + 44 * QUARTER_MS  # 2024-05-15T11:00:00Z
STEADY_EVENTS = 900_000  # one quarter at 1,000 events/s
QUARTERS_PER_DAY = DAY_MS // QUARTER_MS

WRITE_CATEGORIES = ["event_puts", "time_index", "raw_rows", "manifests", "quarter_slots", "hour_slots",
                    "day_slots", "compaction_state"]
STEADY_CATEGORIES = ("raw_rows", "manifests", "quarter_slots", "hour_slots", "day_slots")
# The zone day phases the steady state's queries ask for: Asia/Kolkata (+05:30), Asia/Kathmandu (+05:45) and
# New York in May (EDT, -04:00)
ZONE_PHASES = {"kolkata": 18 * HOUR_MS + 30 * MINUTE_MS, "kathmandu": 18 * HOUR_MS + 15 * MINUTE_MS,
               "new_york": 4 * HOUR_MS}
ZONE_NAMES = {"kolkata": "Asia/Kolkata", "kathmandu": "Asia/Kathmandu", "new_york": "America/New_York"}
TIME_INDEX = {EVENTS_TABLE: ((EVENT_TIME_INDEX.partition_key, EVENT_TIME_INDEX.sort_key),)}


def new_client() -> CostModelDynamoDB:
    return CostModelDynamoDB({EVENTS_TABLE: ("pk", None), USAGE_TABLE: ("pk", "sk")}, category,
                             stream_table=EVENTS_TABLE, indexes=TIME_INDEX, item_limit=DYNAMODB_ITEM_LIMIT)


def usage_store(client: CostModelDynamoDB) -> UsageStore:
    return UsageStore(client=client, table=USAGE_TABLE)


# --- driving the real code ------------------------------------------------------------------------------

def ingest(client: CostModelDynamoDB, events: Iterable[CloudEvent]) -> list[CloudEvent]:
    """Store the events through EventsStore.put_new, 100 per request, each request at the time of its
    last event."""
    client.phase = "ingest"
    store = EventsStore(client=client, table=EVENTS_TABLE)
    kept: list[CloudEvent] = []
    request: list[CloudEvent] = []
    for event in events:
        kept.append(event)
        request.append(event)
        if len(request) == REQUEST_EVENTS:
            assert store.put_new(NAMESPACE, request, request[-1].time).stored == len(request)
            request = []
    if request:
        store.put_new(NAMESPACE, request, request[-1].time)
    return kept


def stream_of(items: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Stream records of stored events, in order, with increasing sequence numbers (the time index's
    manifests are filtered out, as the event source mapping does)."""
    events = (item for item in items if not is_manifest(item))
    for i, item in enumerate(events):
        yield stream_record(item, FIRST_SEQUENCE + 17 * i, int(item["ingestedAt"]["N"]) // 1000)


def process(client: CostModelDynamoDB, catalog: MeterCatalog, records: Iterable[dict[str, Any]],
            batch_size: int) -> None:
    """Feed stream records to the real processor handler in batches, each a second after its last write."""
    client.phase = "processor"
    clock = [0]
    processor_cpu.install(catalog, client, lambda: clock[0])
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        clock[0] = processor_cpu.batch_now({"Records": batch})
        assert processor.handler({"Records": batch}, CONTEXT) == {"batchItemFailures": []}

    for record in records:
        batch.append(record)
        if len(batch) == batch_size:
            flush()
            batch = []
    if batch:
        flush()


def compact(client: CostModelDynamoDB, catalog: MeterCatalog, now_ms: int, phase: str = "compactor",
            zone_phases: tuple[int, ...] = ()) -> None:
    """The real compactor, caught up at now_ms; asked for the zone days of `zone_phases`."""
    client.phase = phase
    requested = dict.fromkeys(zone_phases, now_ms)
    report = Compactor(usage_store(client), lambda namespace: catalog, TIMING,
                       lambda now: requested).run_until_caught_up(now_ms)
    assert report.caught_up, report


def closed_now(last_event_ms: int) -> int:
    """A compaction time at which the quarter of `last_event_ms` is closed (grace passed), plus a minute."""
    return floor_to(last_event_ms, QUARTER_MS) + QUARTER_MS + TIMING.grace_ms + 60_000


def run_query(client: CostModelDynamoDB, catalog: MeterCatalog, phase: str, now_ms: int, **params: Any
              ) -> tuple[float, dict[tuple[str, str], float]]:
    """RRU of one usage query of TOP_SUBJECT on QUERY_METER (DAY windows, groupBy model and type), and
    its totals per group."""
    meter = next(m for m in catalog.meters if m.slug == QUERY_METER)
    raw = {"windowSize": "DAY", "subject": [TOP_SUBJECT], "groupBy": ["model", "type"], **params}
    query = UsageQueryParameters.model_validate(raw).query(meter, now_ms, 30 * DAY_MS)
    client.phase = phase
    rows = UsageReader(usage_store(client)).query(NAMESPACE, meter, query, now_ms=now_ms)
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for row in rows:
        totals[(row["groupBy"]["model"], row["groupBy"]["type"])] += row["value"]
    return client.total("RRU", phase), dict(totals)


def checked(result: tuple[float, dict[tuple[str, str], float]], expected: dict[tuple[str, str], float]) -> float:
    rru, got = result
    assert set(got) == set(expected) and all(math.isclose(got[k], expected[k]) for k in expected), (got, expected)
    return rru


class Recount:
    """Per-group token totals of TOP_SUBJECT, computed straight from the events."""

    def __init__(self) -> None:
        self.totals: dict[tuple[str, str], float] = defaultdict(float)

    def watch(self, events: Iterable[CloudEvent]) -> Iterator[CloudEvent]:
        for event in events:
            if event.type == "prompt" and event.subject == TOP_SUBJECT:
                self.totals[(event.data["model"], event.data["type"])] += float(event.data["tokens"])
            yield event


def write_breakdown(client: CostModelDynamoDB, events: int, phase: str | None = None) -> dict[str, float]:
    by = client.by_category("WRU", phase)
    return {name: by.get(name, 0.0) / events for name in WRITE_CATEGORIES}


# --- scenarios --------------------------------------------------------------------------------------------

def burst(catalog: MeterCatalog, figures: dict[str, float]) -> float:
    """The benchmark workload. Returns its event-put WRU per event."""
    client = new_client()
    recount = Recount()
    events = ingest(client, recount.watch(generate(EVENTS, START_MS, RATE_PER_S)))
    assert sum(1 for item in client.stream if not is_manifest(item)) == EVENTS
    records = list(stream_of(client.stream))
    process(client, catalog, records, STREAM_BATCH)
    day_query = {"from": format_ms(DAY_END_MS - 30 * DAY_MS), "to": format_ms(DAY_END_MS)}
    fresh = checked(run_query(client, catalog, "query_fresh", events[-1].time + 2_000, **day_query), recount.totals)
    now = closed_now(events[-1].time)
    compact(client, catalog, now)
    figures["query_rru_30d_day"] = checked(run_query(client, catalog, "query", now, **day_query), recount.totals)
    figures["query_rru_30d_day_fresh"] = fresh
    figures["query_rru_30d_day_kolkata"] = checked(run_query(
        client, catalog, "query_kolkata", now, windowTimeZone="Asia/Kolkata", **day_query), recount.totals)
    figures["query_rru_30d_day_through_today"] = checked(run_query(
        client, catalog, "query_through_today", now,
        **{"from": format_ms(DAY_END_MS + DAY_MS - 30 * DAY_MS), "to": format_ms(DAY_END_MS + DAY_MS)}),
        recount.totals)

    breakdown = write_breakdown(client, EVENTS)
    figures["wru_per_event"] = sum(breakdown.values())
    assert math.isclose(figures["wru_per_event"], client.total("WRU") / EVENTS), client.by_category("WRU")
    figures.update({f"wru_{name}_per_event": value for name, value in breakdown.items()})
    figures["failed_conditional_writes"] = sum(client.failed_conditions.values())
    figures["rru_compaction_per_event"] = client.total("RRU", "compactor") / EVENTS

    # The same stream in batches of 100 records (the deployed default is 1,000: infra/config.py).
    small = new_client()
    process(small, catalog, records, SMALL_STREAM_BATCH)
    compact(small, catalog, now)
    figures["wru_per_event_batch100"] = breakdown["event_puts"] + small.total("WRU") / EVENTS
    return breakdown["event_puts"]


def steady(catalog: MeterCatalog, event_puts: float, figures: dict[str, float]) -> CostModelDynamoDB:
    """One whole quarter at 1,000 events/s behind a compactor that is up to date."""
    client = new_client()
    compact(client, catalog, STEADY_QUARTER_START_MS + 30_000, phase="setup")  # horizons as a live stack has them
    recount = Recount()
    store = EventsStore(table=EVENTS_TABLE)
    events = recount.watch(generate(STEADY_EVENTS, STEADY_QUARTER_START_MS, RATE_PER_S, seed=7))
    process(client, catalog, stream_of(store.item(NAMESPACE, event, event.time) for event in events), STREAM_BATCH)
    end = STEADY_QUARTER_START_MS + STEADY_EVENTS * 1000 // RATE_PER_S
    now = end + 2_000
    figures["query_rru_to_now_steady"] = checked(run_query(
        client, catalog, "query_to_now", now, **{"from": format_ms(floor_to(now, DAY_MS) - 29 * DAY_MS),
                                                 "to": format_ms(now)}), recount.totals)
    compact(client, catalog, closed_now(end - 1))
    day_fold_at = floor_to(end, DAY_MS) + DAY_MS + TIMING.grace_ms + 60_000
    compact(client, catalog, day_fold_at, phase="day_fold")
    # Then queries ask for zone days: the compactor builds the one holding this quarter (and, backwards, the
    # empty ones before it), one per phase, once the hour horizon has passed its end (New York's, 04:00).
    zone_days_end = max(ZoneDays(phase).containing(STEADY_QUARTER_START_MS) + DAY_MS for phase in ZONE_PHASES.values())
    compact(client, catalog, max(day_fold_at, zone_days_end + TIMING.grace_ms + 60_000) + 60_000, phase="zone_fold",
            zone_phases=tuple(ZONE_PHASES.values()))

    breakdown = {name: client.by_category("WRU", "processor").get(name, 0.0) / STEADY_EVENTS
                 + client.by_category("WRU", "compactor").get(name, 0.0) / STEADY_EVENTS
                 for name in WRITE_CATEGORIES}
    breakdown["event_puts"] = event_puts
    # one quarter of traffic: an hour's slots are written once per 4 quarters, a day's once per 96
    breakdown["hour_slots"] = client.total("WRU", "day_fold", "hour_slots") / 4 / STEADY_EVENTS
    breakdown["day_slots"] = client.total("WRU", "day_fold", "day_slots") / QUARTERS_PER_DAY / STEADY_EVENTS
    # compaction state: a few 1-WRU writes per quarter (~1e-5 per event)
    figures["wru_per_event_steady"] = sum(breakdown.values())
    figures.update({f"wru_{name}_per_event_steady": breakdown[name] for name in STEADY_CATEGORIES})
    # a zone day's slots are written once per subject and day, like a day's: per phase asked for
    figures["wru_zone_day_slots_per_event_steady_per_phase"] = client.total(
        "WRU", "zone_fold", "zone_day_slots") / len(ZONE_PHASES) / QUARTERS_PER_DAY / STEADY_EVENTS
    # the day fold phase reads the hour's quarters (once per 4 quarters) and the day's hours (once per 96)
    day_fold_rru = client.by_category("RRU", "day_fold")
    figures["rru_compaction_per_event_steady"] = (
        client.total("RRU", "compactor") + day_fold_rru.get("quarter_slots", 0.0) / 4
        + sum(units for name, units in day_fold_rru.items() if name != "quarter_slots") / QUARTERS_PER_DAY
    ) / STEADY_EVENTS
    return client


def history(catalog: MeterCatalog, steady_client: CostModelDynamoDB, figures: dict[str, float]) -> None:
    """30 days of steady traffic for TOP_SUBJECT: its compacted slots of the steady quarter (its quarter,
    hour, day and zone day slots, packed and split items), copied into every quarter, hour, day and zone day
    of the queried range, under a compactor that is up to date and has been for more than SETTLE_MS."""
    usage = steady_client.tables[USAGE_TABLE]
    client = new_client()
    levels = [QUARTER, HOUR, DAY, *(ZoneDays(phase) for phase in ZONE_PHASES.values())]
    for level in levels:
        start_ms = level.containing(STEADY_QUARTER_START_MS) if isinstance(level, ZoneDays) else STEADY_QUARTER_START_MS
        key = slot_key(TOP_SUBJECT, level, level.index(start_ms))
        base = slot_partition(NAMESPACE, level, level.period(start_ms))
        found = {pk[len(base):]: items[key] for pk, items in usage.items()
                 if (pk == base or pk.startswith(base + "#")) and key in items}
        bundle = None
        if level is QUARTER:  # its small states are in the bundle of its bucket that holds it
            bundles = usage[bundle_partition(NAMESPACE, QUARTER, start_ms)]
            bundle = bundles[min(sk for sk in bundles if sk >= subject_prefix(TOP_SUBJECT))]
        else:
            assert "" in found, (level, key)
        first = DAY_END_MS - 30 * DAY_MS
        if isinstance(level, ZoneDays):
            first = level.containing(first)
        for start in range(first, DAY_END_MS, level.length_ms):
            for suffix, item in found.items():
                client.seed(USAGE_TABLE, {**item, "pk": {"S": slot_partition(NAMESPACE, level, level.period(start))
                                                         + suffix},
                                          "sk": {"S": slot_key(TOP_SUBJECT, level, level.index(start))}})
            if bundle is not None:
                client.seed(USAGE_TABLE, {**bundle, "pk": {"S": bundle_partition(NAMESPACE, QUARTER, start)}})
        if level is HOUR:  # every folded day's hours are read from its bundles: TOP_SUBJECT's 24 hours
            states = {name[1:]: value["S"] for name, value in found[""].items() if name.startswith("c")}
            client.phase = "setup"
            for day in range(first, DAY_END_MS, DAY_MS):
                usage_store(client).put_bundled(NAMESPACE, HOUR, day, {TOP_SUBJECT: dict.fromkeys(range(24), states)})
    now = DAY_END_MS + 4 * 60_000
    zones = {phase: ZoneRange(ZoneDays(phase).containing(DAY_END_MS - 30 * DAY_MS),
                              ZoneDays(phase).containing(DAY_END_MS), 0, 0) for phase in ZONE_PHASES.values()}
    folded = Horizons(quarter=DAY_END_MS, hour=DAY_END_MS, day=DAY_END_MS, late_through=DAY_END_MS, zones=zones)
    store = usage_store(client)
    day_query = {"from": format_ms(DAY_END_MS - 30 * DAY_MS), "to": format_ms(DAY_END_MS)}

    def state(settled: bool, zone_days: bool) -> None:
        horizons = folded.plain()
        horizons.zones = folded.zones if zone_days else {}
        horizons.settled = horizons.plain() if settled else None  # the same horizons, SETTLE_MS ago
        client.phase = "setup"
        store.set_compaction_state(horizons)

    state(settled=True, zone_days=True)
    figures["query_rru_30d_day_steady"] = run_query(client, catalog, "history", now, **day_query)[0]
    for name, zone in ZONE_NAMES.items():
        figures[f"query_rru_30d_day_{name}_steady"] = run_query(
            client, catalog, f"history_{name}", now, windowTimeZone=zone, **day_query)[0]
    # each lever alone: strongly consistent reads, or no zone days
    state(settled=False, zone_days=True)
    figures["query_rru_30d_day_kolkata_steady_consistent"] = run_query(
        client, catalog, "history_consistent", now, windowTimeZone="Asia/Kolkata", **day_query)[0]
    figures["query_rru_30d_day_steady_consistent"] = run_query(
        client, catalog, "history_consistent_utc", now, **day_query)[0]
    state(settled=True, zone_days=False)
    figures["query_rru_30d_day_kolkata_steady_without_zone_days"] = run_query(
        client, catalog, "history_without_zone_days", now, windowTimeZone="Asia/Kolkata", **day_query)[0]


def main() -> None:
    rates: dict[str, float] = {}
    failure: list[BaseException] = []

    def all_in_figures() -> None:  # waits on processes of its own while this one works
        try:
            rates.update(all_in.run())
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            failure.append(exc)

    side = threading.Thread(target=all_in_figures, name="all-in")
    side.start()
    catalog = example_catalog()
    figures: dict[str, float] = {}
    event_puts = burst(catalog, figures)
    steady_client = steady(catalog, event_puts, figures)
    history(catalog, steady_client, figures)
    order = ["wru_per_event", *(f"wru_{name}_per_event" for name in WRITE_CATEGORIES), "failed_conditional_writes",
             "rru_compaction_per_event", "wru_per_event_batch100", "wru_per_event_steady",
             *(f"wru_{name}_per_event_steady" for name in STEADY_CATEGORIES),
             "rru_compaction_per_event_steady", "wru_zone_day_slots_per_event_steady_per_phase",
             "query_rru_30d_day", "query_rru_30d_day_fresh", "query_rru_30d_day_kolkata",
             "query_rru_30d_day_through_today", "query_rru_to_now_steady", "query_rru_30d_day_steady",
             "query_rru_30d_day_kolkata_steady", "query_rru_30d_day_kathmandu_steady",
             "query_rru_30d_day_new_york_steady", "query_rru_30d_day_steady_consistent",
             "query_rru_30d_day_kolkata_steady_consistent", "query_rru_30d_day_kolkata_steady_without_zone_days"]
    assert sorted(order) == sorted(figures), set(order) ^ set(figures)
    for name in order:
        print(f"{name} {figures[name]:.4f}".rstrip("0").rstrip("."))
    side.join()
    if failure:
        raise failure[0]
    for name, value in rates.items():
        if name.startswith("usd"):
            print(f"{name} {value:.5f}")
        elif name.startswith("cost_ratio"):
            print(f"{name} {value:.3f}")
        else:
            print(f"{name} {value:.4f}".rstrip("0").rstrip("."))


if __name__ == "__main__":
    main()
