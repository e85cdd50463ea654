"""Late events older than the minute retention still land (design invariant 4): ingestion takes them, the
stream processor asks for a recount of their hour instead of counting them (rows of their own would make the
compactor re-fold a quarter whose other raw rows have expired: a short quarter, hour and day), the backfill
function recounts the hour from the events table, and the compactor re-folds it from complete rows. All real
handlers on moto, a fake clock, and DynamoDB's TTL simulated by deleting whatever has expired."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from functions.api import handler as api
from functions.backfill import handler as backfill_handler
from functions.ingest import handler as ingest
from functions.processor import handler as processor
from meterline import bootstrap
from meterline.domain import timeutil
from meterline.domain.events import StoredEvent
from meterline.domain.meters import Meter
from meterline.domain.query_plan import UsageQuery
from meterline.domain.timeutil import DAY_MS, HOUR_MS, MINUTE_MS, QUARTER_MS, floor_to, format_ms
from meterline.domain.windows import WindowSize
from meterline.processing import stream_batch
from meterline.services import backfill
from meterline.services.recount import Recounter
from meterline.storage.tables import ALL_TABLES
from meterline.storage.usage_store import RECOUNT_REQUESTS, UsageStore, unpack
from tests.conftest import cloud_event, lambda_context, scan_all, stream_records
from tests.integration.http import call
from tests.integration.test_counting_recount import as_result, assert_same, recount

EVENTS = os.environ["EVENTS_TABLE"]
USAGE = os.environ["USAGE_TABLE"]
JSON = "application/json"
# Today, for the fake clock: twelve days before the real one (so nothing looks ahead of the stream records).
DAY0 = floor_to(timeutil.now_ms() - 12 * DAY_MS, DAY_MS)
OLD_HOUR = DAY0 + 5 * HOUR_MS


@pytest.fixture
def clock(aws: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Minute rows and quarter slots kept 7 days; every handler's clock reads `clock[0]`."""
    monkeypatch.setenv("METERLINE_MINUTE_RETENTION_DAYS", "7")
    monkeypatch.setenv("METERLINE_QUARTER_RETENTION_DAYS", "7")
    bootstrap.reset()
    now = [OLD_HOUR - 30 * MINUTE_MS]
    for module in (timeutil, ingest, processor, stream_batch, backfill_handler, api):
        monkeypatch.setattr(module, "now_ms", lambda: now[0])
    # the example meters' own backfills, done before any event exists (they would recount every hour)
    assert backfill_handler.handler({}, lambda_context())["completed"]
    yield now
    bootstrap.reset()


def expire(now_ms: int) -> int:
    """What DynamoDB's TTL does, at once: delete every item of every table whose `expiresAt` has passed."""
    client = boto3.client("dynamodb")
    gone = 0
    for spec in ALL_TABLES:
        table = os.environ[spec.env_var]
        for item in scan_all(client, table):
            if "expiresAt" in item and int(item["expiresAt"]["N"]) * 1000 <= now_ms:
                client.delete_item(TableName=table, Key={key["AttributeName"]: item[key["AttributeName"]]
                                                         for key in spec.key_schema()})
                gone += 1
    return gone


def usage_items(prefix: str) -> list[dict[str, Any]]:
    return [item for item in scan_all(boto3.client("dynamodb"), USAGE) if item["pk"]["S"].startswith(prefix)]


def quarter_slots_of_hour(hour_ms: int) -> list[tuple[str, int, int]]:
    """(subject, quarter, expiry s) of every subject's small states in the hour's quarter bundles:
    pk "{ns}#q#{quarter}#bundles"."""
    return [(subject, int(item["pk"]["S"].split("#")[2]), int(item["expiresAt"]["N"]))
            for item in usage_items("default#q#") if item["pk"]["S"].endswith("#bundles") and "b" in item
            and hour_ms <= int(item["pk"]["S"].split("#")[2]) < hour_ms + HOUR_MS
            for subject, _ in unpack(item["b"]["B"])]


def raw_rows_of_hour(hour_ms: int) -> list[dict[str, Any]]:
    """The raw pages (own and shared) of the hour's quarters: pk "{ns}#raw#{counter set}#{quarter}#{bucket}"."""
    return [item for item in usage_items("default#raw#")
            if hour_ms <= int(item["pk"]["S"].split("#")[3]) < hour_ms + HOUR_MS]


def recount_requests() -> dict[str, dict[str, Any]]:
    return {item["sk"]["S"]: item for item in usage_items(RECOUNT_REQUESTS) if item["pk"]["S"] == RECOUNT_REQUESTS}


def post(events: list[dict[str, Any]]) -> None:
    reply = call(ingest, "POST", "/api/v1/events", body=events, content_type=JSON)
    assert reply.status == 204, reply.body


def process(seen: set[str]) -> None:
    records = [r for r in stream_records(EVENTS) if r["dynamodb"]["SequenceNumber"] not in seen]
    seen.update(r["dynamodb"]["SequenceNumber"] for r in records)
    if records:
        assert processor.handler({"Records": records}, lambda_context()) == {"batchItemFailures": []}


def stored(events: list[dict[str, Any]], ingested_ms: int) -> list[StoredEvent]:
    return [StoredEvent("default", e["id"], e["source"], e["type"], e["subject"],
                        timeutil.to_epoch_ms(timeutil.parse_rfc3339(e["time"])), ingested_ms, e["data"])
            for e in events]


def tokens(i: int | str, subject: str, time_ms: int, value: int) -> dict[str, Any]:
    return cloud_event(i, subject=subject, time=format_ms(time_ms),
                       data={"tokens": str(value), "model": "gpt4", "type": "output"})


def assert_queries_equal_recount(meter: Meter, events: list[StoredEvent]) -> None:
    """HOUR windows of the old day by subject, and its DAY window, through the API, equal the oracle."""
    for window, group_by in ((WindowSize.HOUR, ["subject"]), (WindowSize.DAY, ["subject"]), (WindowSize.DAY, [])):
        query = UsageQuery(DAY0, DAY0 + DAY_MS, window, group_by=group_by)
        params = {"from": format_ms(DAY0), "to": format_ms(DAY0 + DAY_MS), "windowSize": window.value}
        if group_by:
            params["groupBy"] = ",".join(group_by)
        reply = call(api, "GET", "/api/v1/meters/tokens_total/query", query=params)
        assert reply.status == 200, reply.body
        assert_same(as_result(reply.json()["data"]), recount(meter, events, query))


def test_a_late_event_older_than_the_minute_retention_lands_through_a_recount_of_its_hour(
        clock: list[int], example_meters: list[Meter]) -> None:
    meter = next(m for m in example_meters if m.slug == "tokens_total")
    compactor = bootstrap.compactor()
    compactor.run_until_caught_up(clock[0])
    seen: set[str] = set()

    # traffic in the first three quarters of an hour, counted and folded as usual
    clock[0] = OLD_HOUR + 70 * MINUTE_MS
    traffic = [tokens(i, f"c{i % 2}", OLD_HOUR + i * 5 * MINUTE_MS + 1_000, 10 + i) for i in range(9)]
    post(traffic)
    process(seen)
    compactor.run_until_caught_up(OLD_HOUR + 2 * HOUR_MS)
    events = stored(traffic, clock[0])
    assert_queries_equal_recount(meter, events)

    # ten days later TTL has deleted the hour's raw rows and quarter slots; hours and days are kept
    clock[0] = OLD_HOUR + 10 * DAY_MS
    compactor.run_until_caught_up(clock[0])
    assert expire(clock[0]) > 0
    assert raw_rows_of_hour(OLD_HOUR) == [] and quarter_slots_of_hour(OLD_HOUR) == []
    assert_queries_equal_recount(meter, events)

    # late events of that hour: one (sent twice) for a subject with usage there, one for a new subject
    late = [tokens("late-1", "c0", OLD_HOUR + 20 * MINUTE_MS, 1000),
            tokens("late-2", "c9", OLD_HOUR + 35 * MINUTE_MS, 7)]
    post(late)
    post([tokens("late-1", "c0", OLD_HOUR + 20 * MINUTE_MS, 99_999)])  # a duplicate: the first write wins
    process(seen)
    # no rows of their own (the compactor would fold the quarter from them alone): a recount request instead
    assert raw_rows_of_hour(OLD_HOUR) == []
    assert list(recount_requests()) == [f"default#{OLD_HOUR:013d}"]
    listed = call(api, "GET", "/api/v1/events",
                  query={"from": format_ms(OLD_HOUR), "to": format_ms(OLD_HOUR + HOUR_MS), "limit": "100"})
    assert {"evt-late-1", "evt-late-2"} <= {e["event"]["id"] for e in listed.json()}
    assert_queries_equal_recount(meter, events)  # not counted yet
    with pytest.raises(AssertionError):
        assert_queries_equal_recount(meter, [*events, *stored(late, clock[0])])

    # the backfill function serves the request once it has settled
    clock[0] += 30_000
    assert backfill_handler.handler({}, lambda_context())["recounted"] == []
    clock[0] += backfill.RECOUNT_SETTLE_MS
    served = backfill_handler.handler({}, lambda_context())
    assert served["recounted"] == [f"default/{format_ms(OLD_HOUR)}"] and served["events"] == 11
    assert recount_requests() == {}
    rows = raw_rows_of_hour(OLD_HOUR)
    assert rows and all(int(item["expiresAt"]["N"]) * 1000 >= clock[0] + 7 * DAY_MS - 1000 for item in rows)
    everything = [*events, *stored(late, clock[0])]
    # the recount's quarters are pending: read from its raw rows (and the empty last quarter from its slot),
    # whatever the minute and quarter retention
    assert_queries_equal_recount(meter, everything)

    # The compactor re-folds the quarters, then the hour and the day. TTL may delete a slot whose expiry has
    # passed at any moment: here right after each write, so a quarter slot written with its quarter's own
    # expiry (long past) would be gone before the hour is folded from it.
    store = bootstrap.usage_store()
    put_slot, put_quarter_slots = store.put_slot, store.put_quarter_slots

    def put_and_expire(*args: Any, **kwargs: Any) -> int:
        writes = put_slot(*args, **kwargs)
        expire(clock[0])
        return writes

    def put_quarter_and_expire(*args: Any, **kwargs: Any) -> int:
        writes = put_quarter_slots(*args, **kwargs)
        expire(clock[0])
        return writes

    store.put_slot = put_and_expire  # type: ignore[method-assign]
    store.put_quarter_slots = put_quarter_and_expire  # type: ignore[method-assign]
    try:
        clock[0] += 20 * MINUTE_MS
        report = compactor.run_until_caught_up(clock[0])
    finally:
        del store.put_slot, store.put_quarter_slots
    assert report.caught_up and report.late_quarters
    quarters = quarter_slots_of_hour(OLD_HOUR)
    assert len(quarters) == 7 and all(  # c0, c1: 3 quarters each, c9: 1; each kept a day from now
        expires * 1000 >= clock[0] + DAY_MS - 1000 for _, _, expires in quarters)
    assert_queries_equal_recount(meter, everything)

    clock[0] += 2 * DAY_MS  # the re-folded quarters expire; the hour and day stay right
    compactor.run_until_caught_up(clock[0])
    assert expire(clock[0]) > 0 and quarter_slots_of_hour(OLD_HOUR) == []
    assert_queries_equal_recount(meter, everything)


def test_the_processor_asks_for_a_recount_only_for_events_too_old_to_re_fold(clock: list[int]) -> None:
    """Minute rows kept 7 days: one day of margin, so an event up to 6 days old gets rows (late, listed for
    the compactor), an older one a recount request of its hour; both are listed; events no meter counts
    ask for nothing."""
    clock[0] = now = DAY0 + 11 * DAY_MS + 7 * HOUR_MS
    inside = now - 6 * DAY_MS + MINUTE_MS
    too_old = now - 6 * DAY_MS - MINUTE_MS
    unmetered = now - 9 * DAY_MS
    post([tokens("inside", "c1", inside, 5), tokens("too-old", "c1", too_old, 6),
          cloud_event("other", type="no-meter-for-this", time=format_ms(unmetered))])
    process(set())

    assert list(recount_requests()) == [f"default#{floor_to(too_old, HOUR_MS):013d}"]
    assert raw_rows_of_hour(floor_to(too_old, HOUR_MS)) == []
    assert raw_rows_of_hour(floor_to(inside, HOUR_MS)) != []
    late_parts = UsageStore().read_late_since("default", 0)
    assert {floor_to(minute, QUARTER_MS) for _, _, minute, _ in late_parts} == {floor_to(inside, QUARTER_MS)}
    listed = call(api, "GET", "/api/v1/events", query={"from": format_ms(now - 10 * DAY_MS), "to": format_ms(now)})
    assert {e["event"]["id"] for e in listed.json()} == {"evt-inside", "evt-too-old", "evt-other"}


@pytest.mark.parametrize("aws", ["moto", "dynamodb_local"], indirect=True)
def test_a_request_asked_for_again_during_its_recount_stays_for_the_next_run(clock: list[int],
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The request is deleted on the condition that nobody asked again since it was read: a newer late event
    may have missed the recount, so its request survives and is served by the next run. Also on DynamoDB
    Local, where `meterline dev` runs the same backfill function."""
    clock[0] = now = DAY0 + 11 * DAY_MS
    store = UsageStore()
    store.put_recount_requests([("default", OLD_HOUR)], "batch-1", now)
    run = Recounter.run

    def asked_again_meanwhile(self: Recounter, *args: Any, **kwargs: Any) -> Any:
        report = run(self, *args, **kwargs)
        store.put_recount_requests([("default", OLD_HOUR)], "batch-2", clock[0])
        return report

    monkeypatch.setattr(Recounter, "run", asked_again_meanwhile)
    clock[0] += backfill.RECOUNT_SETTLE_MS
    assert backfill_handler.handler({}, lambda_context())["recounted"] == []
    [request] = store.recount_requests()
    assert (request.batch, request.at_ms) == ("batch-2", clock[0])
    monkeypatch.setattr(Recounter, "run", run)
    clock[0] += backfill.RECOUNT_SETTLE_MS
    assert backfill_handler.handler({}, lambda_context())["recounted"] == [f"default/{format_ms(OLD_HOUR)}"]
    assert store.recount_requests() == []
