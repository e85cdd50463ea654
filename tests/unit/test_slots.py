"""Slot levels and keys (zone days included), the packed/split slot layout (with chunks and slices near the
item limit), the query plan across levels (zone days, eventually consistent reads), the compactor's state and
its lag."""

from __future__ import annotations

import bisect
import random
import string
import zlib
from dataclasses import replace

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.domain.meters import MeterCatalog
from meterline.domain.query_plan import UsageQuery, plan
from meterline.domain.slots import BUNDLED_FROM_UNKNOWN, DAY, HOUR, QUARTER, Horizons, ZoneDays, ZoneRange, lower_parts
from meterline.domain.timeutil import DAY_MS, HOUR_MS, QUARTER_MS, floor_to, parse_rfc3339, to_epoch_ms
from meterline.domain.windows import WindowSize
from meterline.services.compaction import Compactor, compaction_lag
from meterline.settings import CompactionTiming
from meterline.storage.usage_store import (
    BUNDLE_BYTES,
    BUNDLE_END,
    MAX_ITEM_BYTES,
    SPLIT_STATE_BYTES,
    IncompleteSlot,
    Retention,
    UsageStore,
    bundle_partition,
    item_bytes,
    parse_slot_key,
    raw_partition,
    shared_raw_partition,
    slot_key,
    subject_prefix,
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
    # the split item, the bundle and the partition's end item
    assert store.put_slot("ns", QUARTER, T, "alice", {"m1": small, "m2": large, "m3": small}) == 3
    tables = store.client.tables["usage"]
    bundle, end = tables[bundle_partition("ns", QUARTER, T)].values()
    assert (bundle["sk"]["S"], end["sk"]["S"]) == (subject_prefix("alice"), BUNDLE_END)
    assert orjson.loads(zlib.decompress(bundle["b"]["B"])) == [["alice", [[0, {"m1": small, "m3": small}]]]]
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
    assert store.put_slot("ns", QUARTER, T, "alice", {"m": fits}) == 2  # one split item, the end item (no bundle)
    partition = store.client.tables["usage"][f"ns#q#{T}#m"]
    assert list(partition) == [slot_key("alice", QUARTER, 0)] and "n" not in partition[slot_key("alice", QUARTER, 0)]
    assert item_bytes(partition[slot_key("alice", QUARTER, 0)]) == MAX_ITEM_BYTES

    assert store.put_slot("ns", QUARTER, T, "alice", {"m": too_big}) == 2  # two chunks
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
    store.shared_page_below = 0  # every group in a page of its own
    assert store.put_raw_rows({("ns", "m", minute, 3): rows, ("ns", "m", minute + 60_000, 3): small}, "b1", T) == 3
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


def test_small_groups_of_raw_rows_share_a_page_and_large_ones_have_their_own() -> None:
    """put_raw_rows: a batch's rows of a counter set, minute and subject bucket smaller than
    SHARED_PAGE_BELOW packed go, tagged with their counter set, to one shared page per (quarter, bucket,
    minute); larger ones to a page of their own, exactly as put_raw_pages writes it. Shared pages too large
    for one item are sliced like any list, and read back whole."""
    store, rng = _store(), random.Random(7)
    minute = T + 120_000

    def rows(n: int, size: int = 8) -> list[list]:
        return [["src", f"e{n}-{i}", "alice", [], _incompressible(rng, size), minute] for i in range(n)]

    few = {f"m{i}.0000000{i}": rows(1) for i in range(5)}
    many = rows(40, 20)
    groups = {**{("ns", cs, minute, 3): r for cs, r in few.items()}, ("ns", "big.00000000", minute, 3): many,
              ("ns", "m0.00000000", minute + 60_000, 3): rows(2), ("ns", "m0.00000000", minute, 5): rows(1)}
    assert store.put_raw_rows(groups, "b1", T) == 4  # 2 shared pages in bucket 3, 1 in bucket 5, 1 own page
    tables = store.client.tables["usage"]
    shared = shared_raw_partition("ns", T, 3)
    assert shared == f"ns#raw#shared#{T}#3" and list(tables[shared]) == [f"{minute:013d}#b1",
                                                                          f"{minute + 60_000:013d}#b1"]
    assert list(store.iter_shared_raw(shared, minute, minute)) == list(few.items())
    assert store.read_raw(raw_partition("ns", "big.00000000", T, 3)) == many
    assert store.read_raw(raw_partition("ns", "m0.00000000", T, 3)) == []  # its rows are all shared
    assert dict(store.iter_shared_raw(shared_raw_partition("ns", T, 5))) == {"m0.00000000": groups[
        ("ns", "m0.00000000", minute, 5)]}
    own = _store()
    own.shared_page_below = 0
    own.put_raw_rows({("ns", "big.00000000", minute, 3): many}, "b1", T)
    assert own.client.tables["usage"][raw_partition("ns", "big.00000000", T, 3)] == tables[
        raw_partition("ns", "big.00000000", T, 3)]  # the page of its own is what it always was

    store.shared_page_below = 0  # nothing is small: every group in a page of its own, as before shared pages
    assert store.put_raw_rows(groups, "b2", T) == 8
    store.shared_page_below = 1 << 30  # everything is small
    assert store.put_raw_rows(groups, "b3", T) == 3

    sliced = _store()
    sliced.item_limit = 2_000
    crowd = {("ns", f"m{i}.{i:08x}", minute, 0): rows(1, 150) for i in range(60)}  # ~10 KB of quiet counter sets
    assert sliced.put_raw_rows(crowd, "b1", T) > 3
    partition = shared_raw_partition("ns", T, 0)
    assert list(sliced.client.tables["usage"][partition])[1] == f"{minute:013d}#b1#1"
    assert list(sliced.iter_shared_raw(partition)) == [(key[1], r) for key, r in crowd.items()]
    _assert_items_fit(sliced, 2_000)


# --- zone days -----------------------------------------------------------------------------------------

KOLKATA, KATHMANDU, NEW_YORK_WINTER = 18 * HOUR_MS + 30 * 60_000, 18 * HOUR_MS + 15 * 60_000, 5 * HOUR_MS


def test_zone_days_are_numbered_by_the_utc_day_they_start_in() -> None:
    level = ZoneDays(KOLKATA)
    start = ms("2024-05-31T18:30:00Z")  # Kolkata's 1 June
    assert (level.key, level.period(start), level.index(start)) == ("z1110", ms("2024-05-01T00:00:00Z"), 30)
    assert level.start(level.period(start), 30) == start
    assert level.containing(ms("2024-06-01T18:29:59.999Z")) == start
    assert level.containing(ms("2024-06-01T18:30:00Z")) == start + DAY_MS
    assert ZoneDays(NEW_YORK_WINTER).key == "z300" and not ZoneDays(NEW_YORK_WINTER).needs_quarters()
    assert level.needs_quarters() and ZoneDays(KATHMANDU).needs_quarters()
    for bad in (0, DAY_MS, 7 * 60_000, -QUARTER_MS):
        with pytest.raises(ValueError, match="multiple of 15 minutes"):
            ZoneDays(bad)


@pytest.mark.parametrize(("phase", "start", "parts"), [
    # Kolkata: the last 2 quarters of 18:00, hours 19-23 and 0-17 of two UTC days, the first 2 quarters of 18:00
    (KOLKATA, "2024-05-13T18:30:00Z", [("q", "2024-05-13T18:00:00Z", 2, 3), ("h", "2024-05-13T00:00:00Z", 19, 23),
                                      ("h", "2024-05-14T00:00:00Z", 0, 17), ("q", "2024-05-14T18:00:00Z", 0, 1)]),
    (KATHMANDU, "2024-05-13T18:15:00Z", [("q", "2024-05-13T18:00:00Z", 1, 3), ("h", "2024-05-13T00:00:00Z", 19, 23),
                                        ("h", "2024-05-14T00:00:00Z", 0, 17), ("q", "2024-05-14T18:00:00Z", 0, 0)]),
    (NEW_YORK_WINTER, "2024-01-10T05:00:00Z", [("h", "2024-01-10T00:00:00Z", 5, 23),
                                              ("h", "2024-01-11T00:00:00Z", 0, 4)]),
    # a phase in the last hour of the UTC day: its whole hours are all in the next UTC day
    (23 * HOUR_MS + 45 * 60_000, "2024-05-13T23:45:00Z", [("q", "2024-05-13T23:00:00Z", 3, 3),
                                                          ("h", "2024-05-14T00:00:00Z", 0, 22),
                                                          ("q", "2024-05-14T23:00:00Z", 0, 2)]),
])
def test_a_zone_day_folds_from_the_hours_and_edge_quarters_it_covers(phase: int, start: str, parts: list) -> None:
    found = lower_parts(ZoneDays(phase), ms(start))
    assert [(level.key, period, first, last) for level, period, first, last in found] == [
        (key, ms(period), first, last) for key, period, first, last in parts]
    covered = sum((last - first + 1) * level.length_ms for level, _, first, last in found)
    assert covered == DAY_MS
    assert lower_parts(HOUR, T) == [(QUARTER, T, 0, 3)] and lower_parts(DAY, T - 18 * HOUR_MS) == [
        (HOUR, T - 18 * HOUR_MS, 0, 23)]


def _zones(*phases: int, through: str = "2024-05-20T00:00:00Z", created: int = 1) -> dict[int, ZoneRange]:
    zones = {}
    for phase in phases:
        level = ZoneDays(phase)
        zones[phase] = ZoneRange(level.containing(ms("2024-05-01T12:00:00Z")),
                                 level.containing(ms(through)) - DAY_MS, T, created)
    return zones


def test_kolkata_days_read_zone_day_slots_where_the_compactor_keeps_them() -> None:
    horizons = Horizons(quarter=ms("2024-05-20T00:00:00Z"), hour=ms("2024-05-20T00:00:00Z"),
                        day=ms("2024-05-20T00:00:00Z"), late_through=ms("2024-05-20T00:00:00Z"))
    query = UsageQuery(ms("2024-05-09T18:30:00Z"), ms("2024-05-14T18:30:00Z"), WindowSize.DAY, "Asia/Kolkata")
    assert _slots_by_level(plan(query, horizons)) == {"q": 20, "h": 115}  # 5 days of 23 hours and 4 quarters
    horizons.zones = _zones(KOLKATA)
    chosen = plan(query, horizons)
    assert _slots_by_level(chosen) == {"z1110": 5} and not chosen.raw_ranges
    assert chosen.day_phases == {KOLKATA}
    # a pending late quarter inside a day: that day from hours, quarters and the quarter's raw rows
    pending = frozenset({ms("2024-05-11T03:15:00Z")})
    chosen = plan(query, horizons, pending)
    assert _slots_by_level(chosen) == {"z1110": 4, "h": 22, "q": 7}
    assert chosen.raw_ranges == [(min(pending), min(pending) + QUARTER_MS)]
    # days past the zone range (and an edge window that is not a whole day) from UTC slots
    clipped = UsageQuery(ms("2024-05-16T20:00:00Z"), ms("2024-05-20T00:00:00Z"), WindowSize.DAY, "Asia/Kolkata")
    assert _slots_by_level(plan(clipped, horizons)) == {"z1110": 1, "h": 22 + 23 + 5, "q": 2 + 4 + 2}
    # MONTH windows: their whole local days; Kathmandu's days are not kept
    month = UsageQuery(ms("2024-04-30T18:30:00Z"), ms("2024-05-19T18:30:00Z"), WindowSize.MONTH, "Asia/Kolkata")
    assert _slots_by_level(plan(month, horizons)) == {"z1110": 18, "h": 23, "q": 4}  # the 19th is not kept yet
    kathmandu = UsageQuery(ms("2024-05-09T18:15:00Z"), ms("2024-05-10T18:15:00Z"), WindowSize.DAY, "Asia/Kathmandu")
    assert _slots_by_level(plan(kathmandu, horizons)) == {"q": 4, "h": 23}
    assert plan(kathmandu, horizons).day_phases == {KATHMANDU}
    # UTC days, whole-hour windows and queries without windows never use zone days
    assert _slots_by_level(plan(UsageQuery(query.from_ms, query.to_ms, None, "Asia/Kolkata"), horizons)) == {
        "q": 4, "h": 23, "d": 4}
    assert plan(UsageQuery(T, T + DAY_MS, WindowSize.DAY), horizons).day_phases == set()


def test_new_york_days_around_dst_read_zone_days_of_both_phases() -> None:
    horizons = Horizons(quarter=ms("2024-03-20T00:00:00Z"), hour=ms("2024-03-20T00:00:00Z"),
                        day=ms("2024-03-20T00:00:00Z"), late_through=ms("2024-03-20T00:00:00Z"))
    horizons.zones = {phase: ZoneRange(ZoneDays(phase).containing(ms("2024-03-01T12:00:00Z")),
                                       ZoneDays(phase).containing(ms("2024-03-19T12:00:00Z")), T, 1)
                      for phase in (4 * HOUR_MS, 5 * HOUR_MS)}
    # 8-12 March in New York: 9 March (EST, 05:00Z), 10 March (23 hours), 11 March (EDT, 04:00Z)
    query = UsageQuery(ms("2024-03-08T05:00:00Z"), ms("2024-03-12T04:00:00Z"), WindowSize.DAY, "America/New_York")
    chosen = plan(query, horizons)
    assert _slots_by_level(chosen) == {"z300": 2, "h": 23, "z240": 1}
    assert chosen.day_phases == {4 * HOUR_MS, 5 * HOUR_MS}


def test_only_settled_slots_are_read_eventually_consistently() -> None:
    day = ms("2024-05-14T00:00:00Z")
    now = day + 10 * DAY_MS
    horizons = Horizons(quarter=now, hour=now, day=now, late_through=now, zones=_zones(KOLKATA))
    query = UsageQuery(day - 2 * DAY_MS, day + 8 * DAY_MS, WindowSize.DAY)
    assert plan(query, horizons).eventual == set()  # nothing settled yet: all strongly consistent
    horizons.settled = Horizons(quarter=day + 5 * DAY_MS, hour=day + 5 * DAY_MS, day=day + 5 * DAY_MS,
                                late_through=day, zones=_zones(KOLKATA))
    chosen = plan(query, horizons)
    months = {DAY.period(start) for start in (day - 2 * DAY_MS, day + 7 * DAY_MS)}
    assert len(months) == 1 and chosen.eventual == set()  # one partition read, not all of it settled
    chosen = plan(UsageQuery(day - 2 * DAY_MS, day + 5 * DAY_MS, WindowSize.DAY), horizons)
    assert chosen.eventual == set(chosen.slots)
    # a quarter re-folded from late rows since the settled horizons: its day is read strongly
    recent = frozenset({day + 3 * DAY_MS + 5 * QUARTER_MS})
    chosen = plan(UsageQuery(day - 2 * DAY_MS, day + 5 * DAY_MS, WindowSize.DAY), horizons, recent=recent)
    assert chosen.eventual == set()
    # zone days: settled where the settled range holds them, in the same range as now
    kolkata = UsageQuery(ms("2024-05-09T18:30:00Z"), ms("2024-05-14T18:30:00Z"), WindowSize.DAY, "Asia/Kolkata")
    assert plan(kolkata, horizons).eventual == {(ZoneDays(KOLKATA), ms("2024-05-01T00:00:00Z"))}
    horizons.zones = _zones(KOLKATA, created=2)  # dropped and requested again since: rebuilt lately
    assert plan(kolkata, horizons).eventual == set()
    horizons.zones = _zones(KOLKATA)
    horizons.settled.zones = _zones(KOLKATA, through="2024-05-12T00:00:00Z")
    assert plan(kolkata, horizons).eventual == set()


# The plan's cover: every instant of the range from exactly one slot or raw range, inside its window, each
# slot complete (below its level's horizon, or held by its zone range) and holding no pending quarter.
ZONES = ["UTC", "Asia/Kolkata", "Asia/Kathmandu", "America/New_York", "Australia/Lord_Howe", "Pacific/Chatham"]
BASE = ms("2024-03-01T00:00:00Z")


@st.composite
def planned(draw: st.DrawFn) -> tuple[UsageQuery, Horizons, frozenset[int]]:
    quarter = BASE + draw(st.integers(0, 60 * 96)) * QUARTER_MS
    hour = floor_to(quarter, HOUR_MS) - draw(st.integers(0, 30)) * HOUR_MS
    day = floor_to(hour, DAY_MS) - draw(st.integers(0, 3)) * DAY_MS
    horizons = Horizons(quarter=quarter, hour=hour, day=day, late_through=quarter)
    for phase in draw(st.sets(st.sampled_from([KOLKATA, KATHMANDU, 4 * HOUR_MS, 5 * HOUR_MS, 13 * HOUR_MS + 15 * 60_000,
                                                10 * HOUR_MS + 30 * 60_000]))):
        level = ZoneDays(phase)
        through = level.containing(hour) - draw(st.integers(0, 20)) * DAY_MS
        horizons.zones[phase] = ZoneRange(through - draw(st.integers(0, 40)) * DAY_MS, through, 0, 0)
    pending = frozenset(BASE + q * QUARTER_MS for q in draw(st.sets(st.integers(0, 60 * 96), max_size=5)))
    start = BASE + draw(st.integers(-2 * 96, 62 * 96)) * QUARTER_MS + draw(st.sampled_from([0, 0, 0, 7_000]))
    query = UsageQuery(start, start + draw(st.integers(1, 45 * 96)) * QUARTER_MS,
                       draw(st.sampled_from([None, WindowSize.DAY, WindowSize.MONTH, WindowSize.HOUR])),
                       draw(st.sampled_from(ZONES)))
    return query, horizons, pending


@settings(max_examples=300, deadline=None)
@given(case=planned())
def test_a_plan_reads_every_instant_once_from_complete_slots(case: tuple[UsageQuery, Horizons, frozenset[int]]
                                                             ) -> None:
    query, horizons, pending = case
    chosen = plan(query, horizons, pending)
    pieces = list(chosen.raw_ranges)
    for (level, period), starts in chosen.slots.items():
        for start in starts:
            assert level.period(start) == period
            end = start + level.length_ms
            pieces.append((start, end))
            assert not any(start <= q < end for q in pending)
            if isinstance(level, ZoneDays):
                assert horizons.zones[level.phase_ms].holds(start)
            else:
                assert end <= {QUARTER: horizons.quarter, HOUR: horizons.hour, DAY: horizons.day}[level]
    pieces.sort()
    assert pieces[0][0] == query.from_ms and pieces[-1][1] == query.to_ms
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:], strict=False))  # contiguous, no overlap
    starts = [w[0] for w in chosen.windows]
    for a, b in pieces:
        window = chosen.windows[bisect.bisect_right(starts, a) - 1]
        assert window[0] <= a < b <= window[1]


def test_the_compaction_state_keeps_zone_days_and_settled_horizons() -> None:
    store = _store()
    horizons = Horizons(quarter=T, hour=T, day=T - 18 * HOUR_MS, late_through=T, zones=_zones(KOLKATA, KATHMANDU))
    store.set_compaction_state(horizons)
    assert store.get_compaction_state() == horizons
    horizons.settled = horizons.plain()
    horizons.snapshot = (T + 60_000, replace(horizons.plain(), quarter=T + QUARTER_MS))
    store.set_compaction_state(horizons, "settled")
    assert store.get_compaction_state() == horizons
    horizons.settled = horizons.snapshot = None
    store.set_compaction_state(horizons, "settled")  # nothing but removals
    assert store.get_compaction_state() == horizons
    horizons.zones = {}
    store.set_compaction_state(horizons, "zones", "settled")
    assert store.get_compaction_state() == horizons


# --- quarter bundles ------------------------------------------------------------------------------------


def _bundle_items(store: UsageStore, quarter: int = T) -> dict[str, dict]:
    return dict(store.client.tables["usage"].get(bundle_partition("ns", QUARTER, quarter), {}))


def test_a_quarter_of_many_quiet_subjects_is_a_few_bundles_each_subject_found_with_one_limited_query() -> None:
    store = _store()
    rng = random.Random(7)
    subjects = [f"customer-{i}" for i in range(600)] + ["a", "a#1", "ab", "ü-1"]
    states = {s: {"m1": orjson.dumps({'["g"]': [rng.random()]}).decode(), "m2": f"[{rng.randint(1, 99)}]"}
              for s in subjects}
    writes = store.put_quarter_slots("ns", T + QUARTER_MS, states)
    bundles = _bundle_items(store, T + QUARTER_MS)
    assert writes == len(bundles) and 3 <= len(bundles) < len(subjects) // 20  # with the end item
    assert all(len(item["b"]["B"]) <= BUNDLE_BYTES for key, item in bundles.items() if key != BUNDLE_END)
    # every subject in exactly one bundle, bundles in key order and disjoint
    entries = [subject for key in sorted(bundles) if key != BUNDLE_END
               for subject, _ in orjson.loads(zlib.decompress(bundles[key]["b"]["B"]))]
    assert entries == sorted(subjects, key=subject_prefix)
    assert [subject for subject, _ in store.read_slots("ns", QUARTER, T, ["m1", "m2"])] == entries
    store.client.calls.clear()
    for subject in ("a", "a#1", "customer-599", "ü-1", "nobody", "zz"):
        got = list(store.read_slots("ns", QUARTER, T, ["m2"], subject, 1, 1))
        assert got == ([(subject, {1: {"m2": states[subject]["m2"]}})] if subject in states else [])
    # per subject: the bundle (Limit 1) and the counter set's split items
    assert sum(count for (_, operation, _), count in store.client.calls.items() if operation == "Query") == 6 * 2


def test_a_quarter_bundle_rewrite_changes_only_what_moved_and_drops_bundles_no_longer_cut() -> None:
    store = _store()
    subjects = [f"customer-{i:04d}" for i in range(1500)]
    rng = random.Random(8)
    store.put_quarter_slots("ns", T, {s: {"m": f"[{rng.random()},{rng.random()}]"} for s in subjects})
    before = _bundle_items(store)
    assert len(before) > 5
    # a late pass re-folds one counter set of a subject: its bundle is cut again, the others untouched
    middle = subjects[700]
    assert store.put_quarter_slots("ns", T, {middle: {"m": _state(3)}}) <= 3  # up to 2 pieces, the end item
    after = _bundle_items(store)
    holder = min(key for key in before if key >= subject_prefix(middle))
    assert all(after[key] == item for key, item in before.items() if key != holder)
    # another counter set for one subject: its other states stay
    store.put_quarter_slots("ns", T, {subjects[0]: {"n": "[5]"}})
    [(_, read_first)] = store.read_slots("ns", QUARTER, T, ["m", "n"], subjects[0])
    assert read_first[0]["n"] == "[5]" and read_first[0]["m"].startswith("[0.")
    # a state that grows past SPLIT_STATE_BYTES leaves the bundle for a split item; when it was its bundle's
    # last subject, the bundle's key moves to the one before and the old key is deleted
    last = subjects[-1]
    store.put_quarter_slots("ns", T, {last: {"m": _state(40)}})
    assert list(store.read_slots("ns", QUARTER, T, ["m"], last)) == [(last, {0: {"m": _state(40)}})]
    assert subject_prefix(last) not in _bundle_items(store) and subject_prefix(subjects[-2]) in _bundle_items(store)
    # every subject rewritten at once: each in exactly one bundle, with its new states
    store.put_quarter_slots("ns", T, {s: {"m": "[1]"} for s in subjects})
    bundles = _bundle_items(store)
    listed = [subject for key in sorted(bundles) if key != BUNDLE_END
              for subject, _ in orjson.loads(zlib.decompress(bundles[key]["b"]["B"]))]
    assert listed == subjects
    read = dict(store.read_slots("ns", QUARTER, T, ["m", "n"]))
    assert len(read) == len(subjects) and all(read[s][0]["m"] == "[1]" for s in subjects)
    assert read[subjects[0]][0]["n"] == "[5]"


# --- a folded day's hours in bundles ------------------------------------------------------------------------


def test_a_folded_days_hours_are_read_from_its_bundles_and_a_day_from_before_bundles_from_its_items() -> None:
    store = _store()
    store.retention = Retention(days=400, minute_days=35, quarter_days=35)
    day = floor_to(T, DAY_MS)
    for hour in range(3):
        store.put_slot("ns", HOUR, day + hour * HOUR_MS, "alice", {"m": f"[{hour + 1}]"})
    store.put_slot("ns", HOUR, day + 5 * HOUR_MS, "bob", {"m": "[9]", "big": _state(40)})
    # in key order: the shorter subject first
    want = [("bob", {5: {"m": "[9]"}}), ("alice", {0: {"m": "[1]"}, 1: {"m": "[2]"}, 2: {"m": "[3]"}})]
    # packed hour items live as long as quarter slots, not as long as hours
    item = store.client.tables["usage"][f"ns#h#{day}"][slot_key("alice", HOUR, 0)]
    assert int(item["expiresAt"]["N"]) * 1000 == day + DAY_MS + store.retention.quarter_ms
    # not bundled yet: read from the items where the period may be from before bundles, else nothing
    assert list(store.read_slots("ns", HOUR, day, ["m"], archived=True)) == want
    assert list(store.read_slots("ns", HOUR, day, ["m"], archived=True, legacy=False)) == []

    assert store.write_hour_bundles("ns", day) == 2  # one bundle, the end item
    del store.client.tables["usage"][f"ns#h#{day}"]  # the hour items expire
    assert list(store.read_slots("ns", HOUR, day, ["m"], archived=True, legacy=False)) == want
    assert list(store.read_slots("ns", HOUR, day, ["m", "big"], "bob", 0, 23, archived=True, legacy=False)) == [
        ("bob", {5: {"m": "[9]", "big": _state(40)}})]  # the large state stays in its split item
    assert list(store.read_slots("ns", HOUR, day, ["m"], "alice", 1, 1, archived=True, legacy=False)) == [
        ("alice", {1: {"m": "[2]"}})]
    # a late pass writes to the bundles
    store.put_bundled("ns", HOUR, day, {"carol": {7: {"m": "[4]"}}})
    store.put_bundled("ns", HOUR, day, {"alice": {0: {"m": "[10]"}}})
    assert list(store.read_slots("ns", HOUR, day, ["m"], archived=True, legacy=False)) == [
        ("bob", {5: {"m": "[9]"}}), ("alice", {0: {"m": "[10]"}, 1: {"m": "[2]"}, 2: {"m": "[3]"}}),
        ("carol", {7: {"m": "[4]"}})]


def test_a_late_hour_of_a_day_folded_before_bundles_bundles_the_day_from_its_items_first() -> None:
    store = _store()
    day = floor_to(T, DAY_MS) - DAY_MS
    for subject in ("alice", "bob"):
        store.put_slot("ns", HOUR, day + 3 * HOUR_MS, subject, {"m": "[1]", "n": "[2]"})
    store.put_bundled("ns", HOUR, day, {"alice": {3: {"m": "[5]"}}})
    assert list(store.read_slots("ns", HOUR, day, ["m", "n"], archived=True, legacy=False)) == [
        ("bob", {3: {"m": "[1]", "n": "[2]"}}), ("alice", {3: {"m": "[5]", "n": "[2]"}})]


def test_the_compactor_notes_where_bundles_start_once_and_a_new_state_bundles_everything() -> None:
    store = _store()
    compactor = Compactor(store, lambda _: MeterCatalog([]), CompactionTiming(grace_ms=180_000,
                                                                               write_margin_ms=90_000))
    compactor.run(T)
    assert store.get_compaction_state().bundled_from == 0  # a new state: nothing from before bundles
    state = store.client.tables["usage"]["compaction"]["state"]
    del state["bundledFrom"]  # a state from before bundles
    before = store.get_compaction_state()
    assert before.bundled_from == BUNDLED_FROM_UNKNOWN
    compactor.run(T + HOUR_MS)  # quarters from its quarter horizon on are bundled from now on
    assert store.get_compaction_state().bundled_from == before.quarter
    compactor.run(T + 2 * HOUR_MS)
    assert store.get_compaction_state().bundled_from == before.quarter
