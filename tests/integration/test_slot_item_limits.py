"""DynamoDB's 400 KB item limit: slot states of any size (10^5 groups, 10^6 distinct UNIQUE_COUNT values
in one slot) and lists of any length are written in items that fit, and every reader (read_slots, the
compactor's roll-ups, the usage query) gets exactly what was written. The states are built directly
rather than by ingesting events; the in-memory cost model stands in for DynamoDB, here refusing any
write that leaves an item over the limit as DynamoDB does, and every stored item's size is checked after
the fact too."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from botocore.exceptions import ClientError

from meterline.domain.counting import counter_set_id, encode_groups
from meterline.domain.meters import Meter, MeterCatalog, parse_meters
from meterline.domain.query_plan import UsageQuery
from meterline.domain.slots import DAY, HOUR, QUARTER, Horizons
from meterline.domain.timeutil import DAY_MS, HOUR_MS, QUARTER_MS, parse_rfc3339, to_epoch_ms
from meterline.domain.windows import WindowSize
from meterline.services.compaction import CompactionReport, Compactor
from meterline.services.usage_query import UsageReader
from meterline.settings import CompactionTiming
from meterline.storage.usage_store import MAX_ITEM_BYTES, UsageStore, slot_key, slot_partition
from tests.fakes import CostModelDynamoDB, item_size
from tests.integration.test_counting_recount import (
    METERS,
    T0,
    as_result,
    assert_same,
    make_events,
    process,
    recount,
)

TABLE = "usage"
DYNAMODB_ITEM_LIMIT = 400 * 1024
NAMESPACE = "ns"
DAY_START = to_epoch_ms(parse_rfc3339("2024-05-14T00:00:00Z"))
SUBJECT = "customer-1"
TIMING = CompactionTiming(grace_ms=120_000, write_margin_ms=60_000)


# The compactor's state is one item of bounded size (four horizons, two copies of them and at most 95 zone
# day phases: a few KB at most), never cut up, so the tiny limits here leave it out.
COMPACTION_STATE = "compaction"


class ItemLimitDynamoDB(CostModelDynamoDB):
    """The cost model, refusing as DynamoDB does (ValidationException) any write that would leave an
    item larger than `limit` (but the compactor's state: COMPACTION_STATE)."""

    def __init__(self, limit: int = DYNAMODB_ITEM_LIMIT) -> None:
        super().__init__({TABLE: ("pk", "sk")})
        self.limit = limit
        self.refused = 0

    def _check(self, item: dict[str, Any], operation: str) -> None:
        if item_size(item) > self.limit and item["pk"]["S"] != COMPACTION_STATE:
            self.refused += 1
            message = "Item size to update has exceeded the maximum allowed size" if operation == "UpdateItem" else (
                "Item size has exceeded the maximum allowed size")
            raise ClientError({"Error": {"Code": "ValidationException", "Message": message}}, operation)

    def put_item(self, TableName: str, Item: dict[str, Any], **rest: Any) -> dict[str, Any]:  # type: ignore[override]
        self._check(Item, "PutItem")
        return super().put_item(TableName=TableName, Item=Item, **rest)

    def batch_write_item(self, RequestItems: dict[str, list[dict[str, Any]]], **rest: Any) -> dict[str, Any]:
        for requests in RequestItems.values():
            for request in requests:
                self._check(request["PutRequest"]["Item"], "BatchWriteItem")
        return super().batch_write_item(RequestItems=RequestItems, **rest)

    def update_item(self, TableName: str, Key: dict[str, Any], **rest: Any) -> dict[str, Any]:  # type: ignore[override]
        # the update on a scratch copy of the item first: DynamoDB refuses it as a whole
        scratch = CostModelDynamoDB(self.key_schemas)
        before = self.tables[TableName].get(Key["pk"]["S"], {}).get(Key["sk"]["S"])
        if before is not None:
            scratch.seed(TableName, before)
        scratch.update_item(TableName=TableName, Key=Key, **rest)
        self._check(scratch.tables[TableName][Key["pk"]["S"]][Key["sk"]["S"]], "UpdateItem")
        return super().update_item(TableName=TableName, Key=Key, **rest)


def assert_every_item_fits(client: CostModelDynamoDB, limit: int = MAX_ITEM_BYTES) -> int:
    """Every stored item within `limit` (DynamoDB's billing size); returns how many items there are."""
    items = [item for pk, partition in client.tables[TABLE].items() if pk != COMPACTION_STATE
             for item in partition.values()]
    too_large = [(item["pk"]["S"], item["sk"]["S"], item_size(item)) for item in items if item_size(item) > limit]
    assert not too_large
    return len(items)


def limited_store(limit: int = DYNAMODB_ITEM_LIMIT) -> UsageStore:
    return UsageStore(client=ItemLimitDynamoDB(limit), table=TABLE)


def unlimited_store() -> UsageStore:
    """The layout before size-driven splitting: one item per state, however large."""
    store = UsageStore(client=CostModelDynamoDB({TABLE: ("pk", "sk")}), table=TABLE)
    store.item_limit = 10**12
    return store


def meter(aggregation: str) -> Meter:
    (only,) = parse_meters({"meters": [{
        "slug": f"m_{aggregation.lower()}", "eventType": "use", "aggregation": aggregation,
        **({} if aggregation == "COUNT" else {"valueProperty": "$.v"}), "groupBy": {"model": "$.model"}}]})
    return only


def sum_state(groups: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    return orjson.dumps({encode_groups((f"model-{i:06d}",)): [rng.random() * 1e6] for i in range(groups)}).decode()


def unique_state(values: range, groups: int = 1) -> str:
    return orjson.dumps({encode_groups((f"model-{g}",)): sorted(f"user-{v:08d}-{g}" for v in values)
                         for g in range(groups)}).decode()


def query_day(store: UsageStore, the_meter: Meter, subjects: list[str] | None) -> list[dict[str, Any]]:
    """Group by model over one UTC day (answered from its day slot: every horizon is past it)."""
    store.set_compaction_state(Horizons(quarter=DAY_START + DAY_MS, hour=DAY_START + DAY_MS, day=DAY_START + DAY_MS,
                                        late_through=DAY_START + DAY_MS))
    query = UsageQuery(DAY_START, DAY_START + DAY_MS, WindowSize.DAY, "UTC", subjects, ["model"])
    return UsageReader(store).query(NAMESPACE, the_meter, query, DAY_START + DAY_MS + QUARTER_MS)


@pytest.mark.parametrize(("aggregation", "build"), [
    ("SUM", lambda: sum_state(100_000)),
    ("UNIQUE_COUNT", lambda: unique_state(range(1_000_000))),
    ("UNIQUE_COUNT", lambda: unique_state(range(10), groups=100_000)),
], ids=["sum-100k-groups", "unique-count-1m-values", "unique-count-100k-groups"])
def test_a_query_over_a_chunked_day_slot_answers_exactly_as_before_the_split(
        aggregation: str, build: Callable[[], str]) -> None:
    the_meter, state = meter(aggregation), build()
    counter_set = counter_set_id(the_meter)
    chunked, whole = limited_store(), unlimited_store()
    other = unique_state(range(3)) if aggregation == "UNIQUE_COUNT" else sum_state(2)
    for store in (chunked, whole):
        store.put_slot(NAMESPACE, DAY, DAY_START, SUBJECT, {counter_set: state})
        store.put_slot(NAMESPACE, DAY, DAY_START, "customer-2", {counter_set: other})
    split = slot_partition(NAMESPACE, DAY, DAY.period(DAY_START), counter_set)
    assert len(chunked.client.tables[TABLE][split]) >= len(state) // MAX_ITEM_BYTES + 1 >= 2
    assert_every_item_fits(chunked.client)
    assert whole.client.tables[TABLE][split][slot_key(SUBJECT, DAY, DAY.index(DAY_START))]["s"]["S"] == state

    assert list(chunked.read_slots(NAMESPACE, DAY, DAY.period(DAY_START), [counter_set], SUBJECT)) == [
        (SUBJECT, {DAY.index(DAY_START): {counter_set: state}})]
    rows = query_day(chunked, the_meter, [SUBJECT])
    assert rows == query_day(whole, the_meter, [SUBJECT])
    assert {row["groupBy"]["model"]: row["value"] for row in rows} == {
        orjson.loads(groups)[0]: float(len(values)) if aggregation == "UNIQUE_COUNT" else values[0]
        for groups, values in orjson.loads(state).items()}
    assert query_day(chunked, the_meter, None) == query_day(whole, the_meter, None)  # both subjects


def test_chunked_states_on_moto_which_refuses_items_over_400_kb_as_dynamodb_does() -> None:
    from tests.integration.test_counting_recount import usage_table

    the_meter, state = meter("SUM"), sum_state(100_000)
    counter_set = counter_set_id(the_meter)
    with usage_table("test-usage-item-limits") as (client, store):
        with pytest.raises(ClientError, match="Item size has exceeded"):
            client.put_item(TableName=store.table, Item={"pk": {"S": "x"}, "sk": {"S": "y"}, "s": {"S": "z" * 410_000}})
        for subject in (SUBJECT, "customer-10", "customer-1#2"):  # neighbours in key order
            store.put_slot(NAMESPACE, DAY, DAY_START, subject, {counter_set: state})
            store.put_slot(NAMESPACE, DAY, DAY_START + DAY_MS, subject, {counter_set: sum_state(3)})
        day = DAY.index(DAY_START)
        assert list(store.read_slots(NAMESPACE, DAY, DAY.period(DAY_START), [counter_set], SUBJECT, day, day)) == [
            (SUBJECT, {day: {counter_set: state}})]
        assert [subject for subject, _ in store.read_slots(NAMESPACE, DAY, DAY.period(DAY_START), [counter_set])] == [
            "customer-1", "customer-10", "customer-1#2"]
        rows = query_day(store, the_meter, [SUBJECT])
    assert rows == query_day(unlimited_store_with(SUBJECT, DAY_START, counter_set, state), the_meter, [SUBJECT])
    assert len(rows) == 100_000


def unlimited_store_with(subject: str, start: int, counter_set: str, state: str) -> UsageStore:
    store = unlimited_store()
    store.put_slot(NAMESPACE, DAY, start, subject, {counter_set: state})
    return store


def test_compaction_rolls_chunked_slots_up_into_the_same_hour_and_day_slots() -> None:
    """Quarter slots of 150,000 distinct values each (300,000 in the hour) fold into hour and day slots
    byte for byte equal to the ones folded from whole items."""
    the_meter = meter("UNIQUE_COUNT")
    counter_set = counter_set_id(the_meter)
    catalog = MeterCatalog([the_meter])
    hour = DAY_START + 5 * HOUR_MS
    results = []
    for store in (limited_store(), unlimited_store()):
        for quarter in range(4):
            values = range(quarter * 50_000, quarter * 50_000 + 150_000)
            store.put_slot(NAMESPACE, QUARTER, hour + quarter * QUARTER_MS, SUBJECT,
                           {counter_set: unique_state(values, groups=1)})
        compactor = Compactor(store, lambda _: catalog, TIMING)
        compactor._fold_up(HOUR, NAMESPACE, hour, None, None, CompactionReport())
        compactor._fold_up(DAY, NAMESPACE, DAY_START, None, None, CompactionReport())
        assert_every_item_fits(store.client, MAX_ITEM_BYTES if store.item_limit == MAX_ITEM_BYTES else 10**12)
        slots = [list(store.read_slots(NAMESPACE, level, level.period(start), [counter_set]))
                 for level, start in ((HOUR, hour), (DAY, DAY_START))]
        results.append(slots)
        assert query_day(store, the_meter, [SUBJECT]) == [{
            "value": 300_000.0, "windowStart": "2024-05-14T00:00:00.000Z", "windowEnd": "2024-05-15T00:00:00.000Z",
            "subject": SUBJECT, "groupBy": {"model": "model-0"}}]
    assert results[0] == results[1]


def test_a_packed_item_that_would_outgrow_the_item_limit_takes_its_states_to_items_of_their_own() -> None:
    store = limited_store(4_000)
    store.item_limit = 4_000
    small = {f"meter-{i:02d}.abcdef01": orjson.dumps({f'["model-{i}"]': [i] * 30}).decode() for i in range(40)}
    assert all(len(state) <= 256 for state in small.values())
    assert store.put_slot(NAMESPACE, HOUR, DAY_START, SUBJECT, small) == 41  # a split item each
    assert store.client.refused == 1  # the packed update, once
    assert store.put_slot(NAMESPACE, HOUR, DAY_START, SUBJECT, {"other.1": "[1]"}) == 1  # fits: packed
    assert list(store.read_slots(NAMESPACE, HOUR, HOUR.period(DAY_START), [*small, "other.1"])) == [
        (SUBJECT, {0: {**small, "other.1": "[1]"}})]
    assert_every_item_fits(store.client, 4_000)


def test_a_subject_too_large_for_a_quarter_bundle_takes_its_states_to_items_of_their_own() -> None:
    """Bundles are compressed: 40 small states of random text do not fit one 4,000-byte item, so the
    subject's states go to split items; a neighbour's stay bundled, and a later small state is bundled."""
    store = limited_store(4_000)
    store.item_limit = 4_000
    rng = random.Random(2)
    small = {f"meter-{i:02d}.abcdef01": orjson.dumps({"".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789",
                                                                         k=240)): [i]}).decode() for i in range(40)}
    assert all(len(state) <= 256 for state in small.values())
    states = {SUBJECT: small, "customer-2": {"other.1": "[2]"}}
    assert store.put_quarter_slots(NAMESPACE, DAY_START, states) == 42  # a split item each, a bundle, the end
    assert store.put_slot(NAMESPACE, QUARTER, DAY_START, SUBJECT, {"other.1": "[1]"}) == 1  # fits: bundled
    assert list(store.read_slots(NAMESPACE, QUARTER, DAY_START, [*small, "other.1"])) == [
        (SUBJECT, {0: {**small, "other.1": "[1]"}}), ("customer-2", {0: {"other.1": "[2]"}})]
    assert list(store.read_slots(NAMESPACE, QUARTER, DAY_START, ["other.1"], "customer-2")) == [
        ("customer-2", {0: {"other.1": "[2]"}})]
    assert_every_item_fits(store.client, 4_000)


def test_events_counted_through_tiny_items_answer_like_the_default_layout() -> None:
    """The recount scenario (duplicates, redelivered and bisected batches, late events, compaction while
    events arrive) with a 300-byte item limit, so that raw pages, manifests, late lists, slot states and
    packed items are all cut up: every query equals the default layout's and a recount of the events."""
    default, tiny = UsageStore(client=CostModelDynamoDB({TABLE: ("pk", "sk")}), table=TABLE), limited_store(300)
    tiny.item_limit = 300
    events = make_events(7, 200)
    end = max(e.ingested_ms for e in events)
    for store in (default, tiny):
        process(store, events, random.Random(11), [T0 - HOUR_MS, T0 + 3 * HOUR_MS, T0 + 6 * HOUR_MS + 17_000,
                                                   T0 + 9 * HOUR_MS, end + 2 * HOUR_MS])
    assert assert_every_item_fits(tiny.client, 300) > assert_every_item_fits(default.client)
    items = [item for partition in tiny.client.tables[TABLE].values() for item in partition.values()]
    assert any("n" in item for item in items)  # chunked slot states
    assert any(("rows" in item or "parts" in item) and item["sk"]["S"].rpartition("#")[2].isdigit()
               for item in items)  # sliced raw pages or work lists
    assert tiny.client.refused > 0  # packed items that outgrew the limit

    rng = random.Random(3)
    for the_meter in METERS:
        for _ in range(12):
            start = T0 - 2 * HOUR_MS + rng.randrange(0, 14 * HOUR_MS, 60_000) + rng.choice([0, 7_000])
            query = UsageQuery(start, start + rng.randrange(HOUR_MS, 30 * HOUR_MS), rng.choice(
                [None, WindowSize.HOUR, WindowSize.DAY]), rng.choice(["UTC", "Asia/Kolkata"]),
                rng.choice([None, ["alice"], ["carol#1"]]), rng.choice([[], ["model"], ["subject", "tier"]]))
            now = end + 2 * HOUR_MS
            got = as_result(UsageReader(tiny).query("default", the_meter, query, now))
            assert_same(got, as_result(UsageReader(default).query("default", the_meter, query, now)))
            assert_same(got, recount(the_meter, events, query))

