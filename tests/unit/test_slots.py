"""Slot levels and keys, the packed/split slot layout (with chunks and slices near the item limit), the query
plan across levels, and the compactor's lag."""

from __future__ import annotations

import random
import string
import zlib
from dataclasses import replace

import orjson
import pytest

from meterline.domain.query_plan import UsageQuery, plan
from meterline.domain.slots import DAY, HOUR, QUARTER, Horizons
from meterline.domain.timeutil import DAY_MS, HOUR_MS, QUARTER_MS, parse_rfc3339, to_epoch_ms
from meterline.domain.windows import WindowSize
from meterline.services.compaction import compaction_lag
from meterline.settings import CompactionTiming
from meterline.storage.usage_store import (
    MAX_ITEM_BYTES,
    SPLIT_STATE_BYTES,
    IncompleteSlot,
    UsageStore,
    item_bytes,
    parse_slot_key,
    raw_partition,
    slot_key,
)
from tests.fakes import CostModelDynamoDB, item_size

T = to_epoch_ms(parse_rfc3339("2024-05-14T18:00:00Z"))


def ms(text: str) -> int:
    return to_epoch_ms(parse_rfc3339(text))


def test_levels_number_slots_within_their_partitions() -> None:
    assert (QUARTER.period(T + 2 * QUARTER_MS), QUARTER.index(T + 2 * QUARTER_MS)) == (T, 2)
    assert (HOUR.period(T), HOUR.index(T)) == (ms("2024-05-14T00:00:00Z"), 18)
    assert (DAY.period(ms("2024-05-14T00:00:00Z")), DAY.index(ms("2024-05-14T00:00:00Z"))) == (
        ms("2024-05-01T00:00:00Z"), 13)
    assert DAY.start(ms("2024-05-01T00:00:00Z"), 13) == ms("2024-05-14T00:00:00Z")


def test_a_subjects_keys_are_contiguous_and_its_ranges_exact() -> None:
    subjects = ["a", "a#1", "a#0", "b", "ä", "a#", "ab"]
    keys = sorted(slot_key(subject, HOUR, index) for subject in subjects for index in (0, 9, 23))
    order = [parse_slot_key(key)[0] for key in keys]
    assert all(order[i:i + 3] == [order[i]] * 3 for i in range(0, len(order), 3))  # contiguous
    assert sorted(parse_slot_key(key) for key in keys) == sorted((s, i) for s in subjects for i in (0, 9, 23))
    lo, hi = slot_key("a", HOUR, 0), slot_key("a", HOUR, 23)
    assert {parse_slot_key(key)[0] for key in keys if lo <= key <= hi} == {"a"}


def _store() -> UsageStore:
    return UsageStore(client=CostModelDynamoDB({"usage": ("pk", "sk")}), table="usage")


def _state(groups: int) -> str:
    return orjson.dumps({orjson.dumps([f"g{i}"]).decode(): [i] for i in range(groups)}).decode()


def test_small_states_share_an_item_and_large_ones_are_split_out() -> None:
    store = _store()
    small, large = _state(1), _state(40)
    assert len(small) <= SPLIT_STATE_BYTES < len(large)
    assert store.put_slot("ns", QUARTER, T, "alice", {"m1": small, "m2": large, "m3": small}) == 2
    tables = store.client.tables["usage"]
    packed = tables[f"ns#q#{T}"][slot_key("alice", QUARTER, 0)]
    assert {"cm1", "cm3"} <= set(packed) and "cm2" not in packed
    assert tables[f"ns#q#{T}#m2"][slot_key("alice", QUARTER, 0)]["s"]["S"] == large
    assert list(store.read_slots("ns", QUARTER, T, ["m2"])) == [("alice", {0: {"m2": large}})]
    assert list(store.read_slots("ns", QUARTER, T, ["m1", "m2"], "alice", 0, 3)) == [
        ("alice", {0: {"m1": small, "m2": large}})]


def test_a_state_that_grows_or_shrinks_is_read_from_its_current_item() -> None:
    store = _store()
    small, large, smaller = _state(1), _state(40), _state(2)
    store.put_slot("ns", HOUR, T, "bob", {"m": small})
    store.put_slot("ns", HOUR, T, "bob", {"m": large})  # grows: split out, the packed copy removed
    assert list(store.read_slots("ns", HOUR, HOUR.period(T), ["m"])) == [("bob", {18: {"m": large}})]
    store.put_slot("ns", HOUR, T, "bob", {"m": smaller})  # shrinks: the split item is left behind
    assert list(store.read_slots("ns", HOUR, HOUR.period(T), ["m"])) == [("bob", {18: {"m": smaller}})]


def test_a_kolkata_day_reads_hours_and_edge_quarters_and_a_pending_quarter_raw() -> None:
    day = ms("2024-05-14T00:00:00Z")
    horizons = Horizons(quarter=day + 2 * DAY_MS, hour=day + 2 * DAY_MS, day=day + 2 * DAY_MS, late_through=day)
    query = UsageQuery(ms("2024-05-13T18:30:00Z"), ms("2024-05-14T18:30:00Z"), WindowSize.DAY, "Asia/Kolkata")
    chosen = plan(query, horizons)
    assert _slots_by_level(chosen) == {"q": 4, "h": 23} and not chosen.raw_ranges

    pending = frozenset({day + 5 * HOUR_MS + QUARTER_MS})
    chosen = plan(UsageQuery(day, day + DAY_MS), horizons, pending)
    assert _slots_by_level(chosen) == {"h": 23, "q": 3}
    assert chosen.raw_ranges == [(min(pending), min(pending) + QUARTER_MS)]
    assert _slots_by_level(plan(UsageQuery(day, day + DAY_MS), horizons)) == {"d": 1}


def _slots_by_level(chosen: object) -> dict[str, int]:
    counts: dict[str, int] = {}
    for (level, _), starts in chosen.slots.items():  # type: ignore[attr-defined]
        counts[level.key] = counts.get(level.key, 0) + len(starts)
    return counts


def test_compaction_lag_is_how_long_ago_the_oldest_undone_work_became_due() -> None:
    timing = CompactionTiming(grace_ms=180_000, write_margin_ms=90_000)
    horizons = Horizons(quarter=T, hour=T, day=T, late_through=T + QUARTER_MS)
    assert compaction_lag(T + QUARTER_MS + 180_000, horizons, timing) == 0
    assert compaction_lag(T + QUARTER_MS + 180_000 + 60_000, horizons, timing) == 60_000
    assert compaction_lag(T + 4 * QUARTER_MS, replace(horizons, late_through=T - HOUR_MS), timing) == (
        4 * QUARTER_MS - (QUARTER_MS - HOUR_MS + 90_000))


# --- items near DynamoDB's 400 KB limit ------------------------------------------------------------


def _items(store: UsageStore) -> list[dict]:
    return [item for partition in store.client.tables["usage"].values() for item in partition.values()]


def _assert_items_fit(store: UsageStore, limit: int = MAX_ITEM_BYTES) -> None:
    for item in _items(store):
        assert item_size(item) <= item_bytes(item) <= limit, (item["pk"], item["sk"])


def _padded_state(size: int) -> str:
    """A state of exactly `size` characters (one group, its key padded)."""
    base = len(orjson.dumps({"": [1]}))
    return orjson.dumps({"x" * (size - base): [1]}).decode()


def test_a_state_just_over_the_item_limit_is_chunked_and_read_back_exactly() -> None:
    store = _store()
    overhead = item_bytes({"pk": {"S": f"ns#q#{T}#m"}, "sk": {"S": slot_key("alice", QUARTER, 0)}, "s": {"S": ""},
                           "expiresAt": {"N": str(store.retention.slot_expiry_s(QUARTER, T))}})
    fits, too_big = _padded_state(MAX_ITEM_BYTES - overhead), _padded_state(MAX_ITEM_BYTES - overhead + 1)
    assert store.put_slot("ns", QUARTER, T, "alice", {"m": fits}) == 2  # one split item, the packed item
    partition = store.client.tables["usage"][f"ns#q#{T}#m"]
    assert list(partition) == [slot_key("alice", QUARTER, 0)] and "n" not in partition[slot_key("alice", QUARTER, 0)]
    assert item_bytes(partition[slot_key("alice", QUARTER, 0)]) == MAX_ITEM_BYTES

    assert store.put_slot("ns", QUARTER, T, "alice", {"m": too_big}) == 3  # two chunks
    assert sorted(partition) == [slot_key("alice", QUARTER, 0), slot_key("alice", QUARTER, 0) + "#1"]
    head = partition[slot_key("alice", QUARTER, 0)]
    assert head["n"] == {"N": "2"} and head["h"] == {"N": str(zlib.crc32(too_big.encode()))}
    _assert_items_fit(store)
    assert list(store.read_slots("ns", QUARTER, T, ["m"])) == [("alice", {0: {"m": too_big}})]
    assert list(store.read_slots("ns", QUARTER, T, ["m"], "alice", 0, 0)) == [("alice", {0: {"m": too_big}})]


def test_chunks_are_cut_between_characters_and_a_subject_range_reads_its_last_slots_chunks() -> None:
    store = _store()
    store.item_limit = 1_000
    rng = random.Random(3)
    states = {index: orjson.dumps({f"grüße-{i}-{rng.choice('€𝄞ж')}": [i] for i in range(200 + index)}).decode()
              for index in range(4)}
    for subject in ("a", "a#1", "ab"):  # "a#1"'s keys sort among "a"'s if read by anything but its length
        for index, state in states.items():
            store.put_slot("ns", QUARTER, T + index * QUARTER_MS, subject, {"m": state})
    _assert_items_fit(store, 1_000)
    assert all(len(_chunk_numbers(store, "a", index)) > 2 for index in range(4))
    expected = {index: {"m": state} for index, state in states.items()}
    assert list(store.read_slots("ns", QUARTER, T, ["m"])) == [(s, expected) for s in ("a", "ab", "a#1")]
    assert list(store.read_slots("ns", QUARTER, T, ["m"], "a", 1, 2)) == [("a", {1: {"m": states[1]},
                                                                                2: {"m": states[2]}})]
    assert list(store.read_slots("ns", QUARTER, T, ["m"], "a#1", 3, 3)) == [("a#1", {3: {"m": states[3]}})]


def _chunk_numbers(store: UsageStore, subject: str, index: int) -> list[str]:
    key = slot_key(subject, QUARTER, index)
    return [sk for sk in store.client.tables["usage"][f"ns#q#{T}#m"] if sk == key or sk.startswith(key + "#")]


def test_a_chunked_state_that_shrinks_or_grows_is_read_from_its_current_chunks() -> None:
    store = _store()
    store.item_limit = 600
    big, smaller, split, small = _state(200), _state(60), _state(40), _state(1)
    store.put_slot("ns", HOUR, T, "bob", {"m": big})
    chunks = len(_hour_chunks(store))
    store.put_slot("ns", HOUR, T, "bob", {"m": smaller})  # fewer chunks: the last ones of `big` are left over
    assert len(_hour_chunks(store)) == chunks > int(store.client.tables["usage"][f"ns#h#{HOUR.period(T)}#m"][
        slot_key("bob", HOUR, 18)]["n"]["N"]) > 1
    assert list(store.read_slots("ns", HOUR, HOUR.period(T), ["m"])) == [("bob", {18: {"m": smaller}})]
    store.put_slot("ns", HOUR, T, "bob", {"m": split})  # one split item again
    assert list(store.read_slots("ns", HOUR, HOUR.period(T), ["m"])) == [("bob", {18: {"m": split}})]
    store.put_slot("ns", HOUR, T, "bob", {"m": small})  # packed: wins over every split item
    assert list(store.read_slots("ns", HOUR, HOUR.period(T), ["m"])) == [("bob", {18: {"m": small}})]
    store.put_slot("ns", HOUR, T, "bob", {"m": big})  # and chunked again
    assert list(store.read_slots("ns", HOUR, HOUR.period(T), ["m"])) == [("bob", {18: {"m": big}})]
    _assert_items_fit(store, 600)


def _hour_chunks(store: UsageStore) -> list[str]:
    return list(store.client.tables["usage"][f"ns#h#{HOUR.period(T)}#m"])


def test_a_chunked_state_with_a_chunk_missing_or_not_its_own_is_an_error_until_it_expires() -> None:
    store = UsageStore(client=CostModelDynamoDB({"usage": ("pk", "sk")}), table="usage", retention_days=36_500)
    store.item_limit = 600
    store.put_slot("ns", QUARTER, T, "carol", {"m": _state(100)})
    partition = store.client.tables["usage"][f"ns#q#{T}#m"]
    key = slot_key("carol", QUARTER, 0)
    partition[f"{key}#1"]["s"] = {"S": partition[f"{key}#2"]["s"]["S"]}  # a chunk of another write
    with pytest.raises(IncompleteSlot, match="CRC"):
        list(store.read_slots("ns", QUARTER, T, ["m"]))
    del partition[f"{key}#1"]
    store.client._sort_keys[("usage", f"ns#q#{T}#m")].remove(f"{key}#1")
    with pytest.raises(IncompleteSlot, match="incomplete"):
        list(store.read_slots("ns", QUARTER, T, ["m"]))
    for item in partition.values():  # past its expiry, TTL deletes a state's chunks in any order
        item["expiresAt"] = {"N": "1"}
    assert list(store.read_slots("ns", QUARTER, T, ["m"])) == [("carol", {})]


def _incompressible(rng: random.Random, size: int) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits, k=size))


def test_lists_too_large_for_one_item_are_written_in_slices_their_readers_join() -> None:
    store, rng = _store(), random.Random(5)
    partition = raw_partition("ns", "m", T, 3)
    minute = T + 60_000
    rows = [["src", f"e{i}", "alice", [], _incompressible(rng, 2_000), minute] for i in range(400)]  # ~600 KB
    small = [["src", "e-small", "bob", [], "v", minute]]
    assert store.put_raw_pages({(partition, minute): rows, (partition, minute + 60_000): small}, "b1", T) == 3
    keys = list(store.client.tables["usage"][partition])
    assert keys[0] == f"{minute:013d}#b1" and keys[1] == f"{minute:013d}#b1#1"
    assert keys[-1] == f"{minute + 60_000:013d}#b1"  # a page that fits keeps its one item
    assert store.read_raw(partition) == rows + small
    assert list(store.iter_raw(partition, minute, minute)) == rows

    parts = [["ns", f"counter-set-{i}-{_incompressible(rng, 40)}", minute, i % 8] for i in range(10_000)]
    assert store.put_work_lists("b1", {(T, "ns"): parts}, {"ns": parts}, T, T) > 3
    assert store.read_manifests(T, "ns") == store.read_manifests(T) == parts
    assert store.read_late(T) == store.read_late_since("ns", T) == parts
    _assert_items_fit(store)
