"""Zone days (meterline.domain.slots.ZoneDays): a DAY query off UTC asks for its phase through the API, the
compactor builds the phases asked for (back 30 days), drops those nobody asks for any more, never folds a zone
day whose edge quarters may have expired, zone days expire after 62 days and are not read once they may have,
and a query never fails because the request cannot be written."""

from __future__ import annotations

import os
import random
from typing import Any

import boto3
import pytest

from functions.api import handler as api
from meterline import bootstrap
from meterline.domain.events import StoredEvent
from meterline.domain.query_plan import UsageQuery, plan
from meterline.domain.slots import ZONE_RENEW_MS, ZONE_REQUEST_MS, ZoneDays
from meterline.domain.timeutil import DAY_MS, HOUR_MS, MINUTE_MS, QUARTER_MS, format_ms, parse_rfc3339, to_epoch_ms
from meterline.domain.windows import WindowSize
from meterline.errors import InvalidInput
from meterline.processing.counting import count_events
from meterline.services import compaction
from meterline.services.compaction import Compactor
from meterline.services.usage_query import UsageReader
from meterline.storage.usage_store import Retention, UsageStore
from meterline.storage.zone_requests_store import ZONE_REQUESTS, ZoneRequests
from tests.fakes import CostModelDynamoDB
from tests.integration.http import call
from tests.integration.test_counting_recount import (
    METERS,
    TIMING,
    as_result,
    assert_same,
    catalogs,
    recount,
    requested,
)

KOLKATA = 18 * HOUR_MS + 30 * MINUTE_MS
NOW = to_epoch_ms(parse_rfc3339("2024-05-15T06:10:00Z"))


def ms(text: str) -> int:
    return to_epoch_ms(parse_rfc3339(text))


def test_a_day_query_off_utc_asks_for_its_zone_days_until_the_compactor_has_them(
        aws: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from meterline.domain import timeutil

    clock = [NOW]
    monkeypatch.setattr(timeutil, "now_ms", lambda: clock[0])
    monkeypatch.setattr(api, "now_ms", lambda: clock[0])
    catalog = boto3.client("dynamodb")

    def requests() -> dict[str, str]:
        items = catalog.query(TableName=os.environ["CATALOG_TABLE"], KeyConditionExpression="pk = :pk",
                              ExpressionAttributeValues={":pk": {"S": ZONE_REQUESTS}})["Items"]
        return {item["sk"]["S"]: item["requestedAt"]["N"] for item in items}

    def query(**params: str) -> None:
        reply = call(api, "GET", "/api/v1/meters/tokens_total/query", query={
            "from": "2024-05-10T18:30:00Z", "to": "2024-05-14T18:30:00Z", **params})
        assert reply.status == 200, reply.body

    bootstrap.compactor().run_until_caught_up(NOW)
    query(windowSize="DAY")  # UTC
    query(windowSize="HOUR", windowTimeZone="Asia/Kolkata")  # hours: zone days would not help
    query(windowTimeZone="Asia/Kolkata")  # one window, from UTC slots
    assert requests() == {}
    query(windowSize="DAY", windowTimeZone="Asia/Kolkata")
    query(windowSize="DAY", windowTimeZone="America/New_York", **{"from": "2024-05-12T04:00:00Z"})
    assert requests() == {"1110": str(NOW), "0240": str(NOW)}

    bootstrap.compactor().run_until_caught_up(NOW + 60_000)
    zones = UsageStore().get_compaction_state().zones
    assert sorted(zones) == [4 * HOUR_MS, KOLKATA]
    # the range starts with the last zone day the hour horizon has passed, and reaches 30 days back
    assert zones[KOLKATA].through_ms == ms("2024-05-14T18:30:00Z")
    assert zones[KOLKATA].from_ms == ZoneDays(KOLKATA).containing(NOW - compaction.ZONE_BACKFILL_MS) + DAY_MS
    clock[0] = NOW + ZONE_RENEW_MS - 60_000
    query(windowSize="DAY", windowTimeZone="Asia/Kolkata")
    assert requests()["1110"] == str(NOW)  # the compactor has them: no write
    clock[0] = NOW + ZONE_RENEW_MS + 60_000
    query(windowSize="DAY", windowTimeZone="Asia/Kolkata")
    assert requests() == {"1110": str(clock[0]), "0240": str(NOW)}  # renewed before it lapses


def _store() -> UsageStore:
    return UsageStore(client=CostModelDynamoDB({"usage": ("pk", "sk")}), table="usage")


def test_the_compactor_keeps_the_phases_asked_for_and_drops_the_rest() -> None:
    store = _store()
    catalog = ZoneRequests(client=CostModelDynamoDB({"catalog": ("pk", "sk")}), table="catalog")
    compactor = Compactor(store, catalogs, TIMING, catalog.requested)
    compactor.run_until_caught_up(NOW)
    assert store.get_compaction_state().zones == {}
    catalog.request(KOLKATA, NOW)
    catalog.request(7 * 60_000, NOW)  # not a phase any zone has: ignored
    compactor.run_until_caught_up(NOW + 60_000)
    first = store.get_compaction_state().zones[KOLKATA]
    assert list(store.get_compaction_state().zones) == [KOLKATA] and first.created_ms == NOW + 60_000
    later = NOW + ZONE_REQUEST_MS + DAY_MS  # nobody asked again: the request has lapsed
    compactor.run_until_caught_up(later)
    assert store.get_compaction_state().zones == {}
    catalog.request(KOLKATA, later)
    compactor.run_until_caught_up(later + 60_000)
    again = store.get_compaction_state().zones[KOLKATA]
    assert again.created_ms == later + 60_000 and again.through_ms > first.through_ms  # a new range


def test_a_query_is_answered_when_its_zone_day_request_cannot_be_written() -> None:
    class Refusing(ZoneRequests):
        def request(self, phase_ms: int, now_ms: int) -> None:
            raise RuntimeError("AccessDenied")

    store = _store()
    Compactor(store, catalogs, TIMING).run_until_caught_up(NOW)
    event = StoredEvent("default", "e1", "s", "use", "alice", NOW - DAY_MS, NOW - DAY_MS, {"v": 2})
    count_events([event], catalogs, store, "b1", NOW, TIMING)
    meter = next(m for m in METERS if m.slug == "m_sum")
    query = UsageQuery(ms("2024-05-12T18:30:00Z"), ms("2024-05-14T18:30:00Z"), WindowSize.DAY, "Asia/Kolkata")
    rows = UsageReader(store, None, Refusing()).query("default", meter, query, NOW)
    assert_same(as_result(rows), recount(meter, [event], query))


def _expire(store: UsageStore, now_ms: int) -> int:
    """What DynamoDB's TTL does, at once: delete every item whose `expiresAt` has passed."""
    client: CostModelDynamoDB = store.client
    gone = [(pk, sk) for pk, partition in client.tables["usage"].items() for sk, item in partition.items()
            if "expiresAt" in item and int(item["expiresAt"]["N"]) * 1000 <= now_ms]
    for pk, sk in gone:
        client.delete_item(TableName="usage", Key={"pk": {"S": pk}, "sk": {"S": sk}})
    return len(gone)


def test_a_zone_day_whose_quarters_may_have_expired_is_never_folded_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Quarters kept 3 days (minute rows too, so events up to 2 days old are taken): a late event two days
    old lands in a Kolkata day whose first quarters expire while the compactor lags. That zone day (and the
    ones before it) is no longer used: the query is refused for want of quarters, never answered short."""
    store = UsageStore(client=CostModelDynamoDB({"usage": ("pk", "sk")}), table="usage",
                       retention=Retention(days=400, minute_days=3, quarter_days=3))
    compactor = Compactor(store, catalogs, TIMING, requested((KOLKATA,)))
    day = ZoneDays(KOLKATA)
    start = ms("2024-05-10T18:30:00Z")  # Kolkata's 11 May
    compactor.run_until_caught_up(start - HOUR_MS)
    rng = random.Random(1)
    events = [StoredEvent("default", f"e{i}", "s", "use", "alice", t, t + 1000, {"v": rng.randint(1, 9)})
              for i, t in enumerate(range(start + 60_000, start + DAY_MS, 47 * MINUTE_MS))]
    for event in events:
        count_events([event], catalogs, store, f"b-{event.id}", event.ingested_ms, TIMING)
        compactor.run_until_caught_up(event.ingested_ms)
    compactor.run_until_caught_up(start + DAY_MS + HOUR_MS)
    assert store.get_compaction_state().zones[KOLKATA].holds(start)
    meter = next(m for m in METERS if m.slug == "m_sum")
    query = UsageQuery(start, start + DAY_MS, WindowSize.DAY, "Asia/Kolkata")
    reader = UsageReader(store)
    assert_same(as_result(reader.query("default", meter, query, start + DAY_MS + HOUR_MS)), recount(
        meter, events, query))

    # two days later, a late event of the day's last quarter; the compactor is an hour behind
    arrival = start + DAY_MS - QUARTER_MS + 2 * DAY_MS - MINUTE_MS
    late = StoredEvent("default", "late", "s", "use", "alice", start + DAY_MS - 10 * MINUTE_MS, arrival, {"v": 100})
    count_events([late], catalogs, store, "b-late", arrival, TIMING)
    lagging = arrival + HOUR_MS
    assert _expire(store, lagging) > 0 and day.containing(start) == start
    compactor.run_until_caught_up(lagging)
    try:
        rows = reader.query("default", meter, query, lagging)
    except InvalidInput as refused:
        assert "METERLINE_QUARTER_RETENTION_DAYS" in str(refused)
    else:  # folded again without its first quarters, it would be short
        assert_same(as_result(rows), recount(meter, [*events, late], query))
        pytest.fail("answered from quarters that have expired")
    zone = store.get_compaction_state().zones[KOLKATA]
    assert not zone.holds(start) and format_ms(zone.from_ms) == "2024-05-11T18:30:00.000Z"


def test_zone_days_expire_after_62_days_and_older_local_days_are_read_from_hours() -> None:
    store = _store()
    compactor = Compactor(store, catalogs, TIMING, requested((KOLKATA,)))
    start = ms("2024-05-10T18:30:00Z")
    compactor.run_until_caught_up(start - HOUR_MS)
    events = [StoredEvent("default", f"e{i}", "s", "use", "bob", t, t + 1000, {"v": i})
              for i, t in enumerate(range(start + 60_000, start + DAY_MS, 5 * HOUR_MS))]
    count_events(events, catalogs, store, "b1", start + DAY_MS - 1, TIMING)
    compactor.run_until_caught_up(start + DAY_MS + HOUR_MS)
    partition = store.client.tables["usage"][f"default#z1110#{ZoneDays(KOLKATA).period(start)}"]
    [item] = partition.values()
    assert int(item["expiresAt"]["N"]) == (start + DAY_MS + 62 * DAY_MS) // 1000
    assert Retention(days=30).zone_day_ms == 30 * DAY_MS  # never longer than the events
    meter = next(m for m in METERS if m.slug == "m_sum")
    query = UsageQuery(start, start + DAY_MS, WindowSize.DAY, "Asia/Kolkata")
    for now in (start + DAY_MS + HOUR_MS, start + 63 * DAY_MS - 2 * HOUR_MS, start + 63 * DAY_MS):
        _expire(store, now)  # TTL has deleted whatever expired
        compactor.run_until_caught_up(now)
        chosen = plan(query, store.get_compaction_state(), zone_days_from=now + HOUR_MS - 63 * DAY_MS)
        assert [level.key for level, _ in chosen.slots][:1] == (["z1110"] if now < start + 63 * DAY_MS - HOUR_MS
                                                                else ["q"])
        assert_same(as_result(UsageReader(store).query("default", meter, query, now)), recount(meter, events, query))


def test_the_query_and_the_compactor_call_only_what_their_roles_allow(aws: Any) -> None:
    """A DAY query off UTC writes its zone day request to the catalog, and the compactor reads the requests
    and writes zone days and its settled horizons: each within its role (infra.lambdas.TABLE_ACCESS; moto
    checks no IAM, so the calls are recorded and compared)."""
    from functions.compactor import handler as compactor_handler
    from infra.lambdas import TABLE_ACCESS
    from meterline.aws.clients import aws_client
    from meterline.storage.tables import ALL_TABLES
    from tests.conftest import lambda_context

    tables = {os.environ[spec.env_var]: spec.logical_name for spec in ALL_TABLES}
    calls: list[tuple[str, str]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        for name in [params["TableName"]] if "TableName" in params else list(params.get("RequestItems", {})):
            calls.append((tables[name], f"dynamodb:{model.name}"))

    def allowed(function: str) -> set[tuple[str, str]]:
        return {(table, action) for table, actions in TABLE_ACCESS[function].items() for action in actions}

    client = aws_client("dynamodb")
    client.meta.events.register("provide-client-params.dynamodb.*", record)
    try:
        compactor_handler.handler({}, lambda_context())
        calls.clear()
        reply = call(api, "GET", "/api/v1/meters/tokens_total/query", query={
            "windowSize": "DAY", "windowTimeZone": "Asia/Kolkata", "from": format_ms(NOW - 3 * DAY_MS),
            "to": format_ms(NOW)})
        assert reply.status == 200, reply.body
        assert ("Catalog", "dynamodb:PutItem") in calls and set(calls) <= allowed("api")
        calls.clear()
        compactor_handler.handler({}, lambda_context())
        assert ("Catalog", "dynamodb:Query") in calls and set(calls) <= allowed("compactor")
        assert UsageStore().get_compaction_state().zones  # the phase was picked up
    finally:
        client.meta.events.unregister("provide-client-params.dynamodb.*", record)
