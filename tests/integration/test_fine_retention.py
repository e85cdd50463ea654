"""Shorter retention of the fine resolutions (METERLINE_MINUTE_RETENTION_DAYS, METERLINE_QUARTER_RETENTION_DAYS):
items get their expiry, a query that would need an expired resolution is a 400 naming what to change
(never a silently short answer), queries on coarser boundaries still work, and events older than the minute
retention are still taken (counted by a recount of their hour: tests/integration/test_late_recount.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from functions.api import handler as api
from functions.ingest import handler as ingest
from meterline import bootstrap
from meterline.domain.slots import HOUR, QUARTER, Horizons
from meterline.domain.timeutil import DAY_MS, format_ms, now_ms
from meterline.settings import Settings
from meterline.storage.usage_store import Retention, UsageStore
from tests.conftest import cloud_event, scan_events
from tests.integration.http import call

JSON = "application/json"


@pytest.fixture
def short_fine_retention(aws: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("METERLINE_MINUTE_RETENTION_DAYS", "7")
    monkeypatch.setenv("METERLINE_QUARTER_RETENTION_DAYS", "30")
    bootstrap.reset()
    yield
    bootstrap.reset()


def compacted_up_to(ms: int) -> None:
    """As if the compactor had folded everything before `ms` (every level)."""
    UsageStore().set_compaction_state(Horizons(quarter=ms, hour=ms, day=ms, late_through=ms))


def query(**params: str) -> Any:
    return call(api, "GET", "/api/v1/meters/tokens_total/query", query=params)


def day_start(days_ago: int) -> int:
    now = now_ms()
    return now - now % DAY_MS - days_ago * DAY_MS


def test_items_expire_by_resolution() -> None:
    retention = Retention(days=400, minute_days=7, quarter_days=30)
    start = 1_704_067_200_000
    assert retention.slot_expiry_s(QUARTER, start) == (start + 15 * 60_000 + 30 * DAY_MS) // 1000
    assert retention.slot_expiry_s(HOUR, start) == (start + 3_600_000 + 400 * DAY_MS) // 1000
    # written late (a recount of an old hour), a slot still lives a day from its write
    assert retention.slot_expiry_s(QUARTER, start, start + 40 * DAY_MS) == (start + 41 * DAY_MS) // 1000
    assert retention.slot_expiry_s(QUARTER, start, start) == (start + 15 * 60_000 + 30 * DAY_MS) // 1000
    assert Retention(days=400).minute_ms == 400 * DAY_MS


def test_slots_and_raw_rows_carry_their_expiry(aws: Any) -> None:
    store = UsageStore(retention=Retention(days=400, minute_days=7, quarter_days=30))
    start = 1_704_067_200_000
    store.put_slot("default", QUARTER, start, "customer-1", {"abc": '{"[]": 1}'})
    store.put_raw_rows({("default", "m.1", start, 0): [["src", "e1", "customer-1", [], 1, start]]}, "batch1",
                       now_ms=start)
    scanned = aws.scan(TableName=os.environ["USAGE_TABLE"])["Items"]
    items = {"raw" if "#raw#" in item["pk"]["S"] else "slot": item for item in scanned}
    assert int(items["raw"]["expiresAt"]["N"]) == (start + 7 * DAY_MS) // 1000
    slot = items["slot"]
    assert int(slot["expiresAt"]["N"]) == (start + 15 * 60_000 + 30 * DAY_MS) // 1000


def test_queries_needing_expired_resolutions_are_refused(short_fine_retention: None) -> None:
    compacted_up_to(day_start(0))
    ten_days_ago = day_start(10)
    minute = query(**{"from": format_ms(ten_days_ago), "to": format_ms(ten_days_ago + 3_600_000),
                      "windowSize": "MINUTE"})
    assert minute.status == 400 and [e["field"] for e in minute.json()["errors"]] == ["windowSize"]
    assert "METERLINE_MINUTE_RETENTION_DAYS" in minute.json()["detail"]

    odd_edge = query(**{"from": format_ms(ten_days_ago + 7 * 60_000), "to": format_ms(ten_days_ago + DAY_MS)})
    assert odd_edge.status == 400 and [e["field"] for e in odd_edge.json()["errors"]] == ["from"]

    quarter_edge = query(**{"from": format_ms(ten_days_ago + 15 * 60_000), "to": format_ms(ten_days_ago + DAY_MS)})
    assert quarter_edge.status == 200, quarter_edge.body  # quarters are kept 30 days

    kolkata_old = query(**{"from": format_ms(day_start(60) - 330 * 60_000), "to": format_ms(day_start(58)),
                           "windowSize": "DAY", "windowTimeZone": "Asia/Kolkata"})
    assert kolkata_old.status == 400 and "METERLINE_QUARTER_RETENTION_DAYS" in kolkata_old.json()["detail"]

    for params in ({"windowSize": "DAY"}, {"windowSize": "HOUR"}, {}):
        utc_old = query(**{"from": format_ms(day_start(60)), "to": format_ms(day_start(30)), **params})
        assert utc_old.status == 200, utc_old.body  # hours and days are kept as long as events
    recent_minutes = query(**{"from": format_ms(day_start(1)), "to": format_ms(day_start(1) + 600_000),
                              "windowSize": "MINUTE"})
    assert recent_minutes.status == 200


def test_events_older_than_the_minute_retention_are_taken(short_fine_retention: None) -> None:
    """Minute rows kept 7 days: events of any past time are stored (the stream processor asks for a
    recount of the hour of those too old for their quarter to be re-folded); only times more than 5
    minutes ahead are refused, precisely."""
    now = now_ms()
    for i, age in enumerate((5 * DAY_MS, 6 * DAY_MS + 60_000, 30 * DAY_MS, 399 * DAY_MS)):
        old = cloud_event(f"old-{i}", time=format_ms(now - age))
        assert call(ingest, "POST", "/api/v1/events", body=old, content_type=JSON).status == 204
    stored = {item["pk"]["S"] for item in scan_events(boto3.client("dynamodb"), os.environ["EVENTS_TABLE"])}
    assert len(stored) == 4
    ahead = cloud_event("ahead", time=format_ms(now + 6 * 60_000))
    reply = call(ingest, "POST", "/api/v1/events", body=ahead, content_type=JSON)
    assert reply.status == 400 and [e["field"] for e in reply.json()["errors"]] == ["time"]
    assert "at most 5 minutes after the time of receipt" in reply.json()["errors"][0]["reason"]


@pytest.mark.parametrize(("env", "message"), [
    ({"METERLINE_MINUTE_RETENTION_DAYS": "1"}, "at least 2"),
    ({"METERLINE_MINUTE_RETENTION_DAYS": "40", "METERLINE_QUARTER_RETENTION_DAYS": "30"}, "must not exceed"),
    ({"METERLINE_QUARTER_RETENTION_DAYS": "500"}, "between 1 and METERLINE_RETENTION_DAYS"),
    ({"METERLINE_RETENTION_DAYS": "4000"}, "between 1 and 3650"),
    ({"METERLINE_MINUTE_RETENTION_DAYS": "seven"}, "whole number"),
])
def test_retention_settings_are_validated(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(RuntimeError, match=message):
        Settings.from_env()
