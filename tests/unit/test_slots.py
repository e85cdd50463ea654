"""Slot levels and keys, the packed/split slot layout, the query plan across levels, and the compactor's lag."""

from __future__ import annotations

from dataclasses import replace

import orjson

from meterline.domain.query_plan import UsageQuery, plan
from meterline.domain.slots import DAY, HOUR, QUARTER, Horizons
from meterline.domain.timeutil import DAY_MS, HOUR_MS, QUARTER_MS, parse_rfc3339, to_epoch_ms
from meterline.domain.windows import WindowSize
from meterline.services.compaction import compaction_lag
from meterline.settings import CompactionTiming
from meterline.storage.usage_store import SPLIT_STATE_BYTES, UsageStore, parse_slot_key, slot_key
from tests.fakes import CostModelDynamoDB

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
