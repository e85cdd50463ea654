"""Each function's declared DynamoDB access (infra.lambdas.TABLE_ACCESS, what its IAM role gets) covers
every call its code makes: the handlers run on moto, which checks no IAM, with every DynamoDB and
Streams call recorded. (A missing action is an AccessDenied that only a deployed stack would show.)"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from functions.ingest import handler as ingest
from functions.processor import handler as processor
from infra.lambdas import INDEX_ACCESS, TABLE_ACCESS
from meterline.aws.clients import aws_client
from meterline.storage.tables import ALL_TABLES
from tests.conftest import cloud_event, lambda_context, stream_records
from tests.integration.http import call

TABLES = {os.environ[spec.env_var]: spec.logical_name for spec in ALL_TABLES}
TRANSACTION_ACTIONS = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                       "ConditionCheck": "ConditionCheckItem", "Get": "GetItem"}


@pytest.fixture
def calls(aws: Any) -> Iterator[list[tuple[str, str]]]:
    """(table's logical name, dynamodb:Operation) of every call through the process-wide client."""
    seen: list[tuple[str, str]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        if "TransactItems" in params:  # IAM authorizes a transaction item by item, by each item's own action
            for item in params["TransactItems"]:
                for kind, request in item.items():
                    seen.append((TABLES[request["TableName"]], f"dynamodb:{TRANSACTION_ACTIONS[kind]}"))
            return
        names = [params["TableName"]] if "TableName" in params else list(params.get("RequestItems", {}))
        for name in names:
            seen.append((TABLES[name], f"dynamodb:{model.name}"))

    client = aws_client("dynamodb")
    client.meta.events.register("provide-client-params.dynamodb.*", record)
    yield seen
    client.meta.events.unregister("provide-client-params.dynamodb.*", record)


def allowed(function: str) -> set[tuple[str, str]]:
    return {(table, action) for table, actions in TABLE_ACCESS[function].items() for action in actions}


def test_ingest_and_the_processor_call_only_what_their_roles_allow(calls: list[tuple[str, str]]) -> None:
    events = [cloud_event(f"e{i}", time=f"2024-01-01T0{i}:00:00Z") for i in range(3)]  # three hours: manifests
    assert call(ingest, "POST", "/api/v1/events", body=events, content_type="application/json").status == 204
    assert ("Events", "dynamodb:BatchWriteItem") in calls  # the time index's manifests
    assert set(calls) <= allowed("ingest")

    calls.clear()
    records = stream_records(os.environ["EVENTS_TABLE"])
    assert processor.handler({"Records": records}, lambda_context()) == {"batchItemFailures": []}
    assert calls and set(calls) <= allowed("processor")


def test_the_compactor_exporter_and_sender_call_only_what_their_roles_allow(
        exports_aws: Any, calls: list[tuple[str, str]]) -> None:
    """A window counted, folded by the compactor, exported on schedule and its webhooks delivered."""
    from unittest import mock

    from functions.compactor import handler as compactor
    from tests.integration.test_exports import HOUR, T0, create_report, drain, fire, ingest_and_count, usage_events
    from tests.webhook_receiver import Receiver

    receiver = Receiver()
    try:
        ingest_and_count(usage_events())
        calls.clear()
        with mock.patch("functions.compactor.handler.now_ms", return_value=T0 + 2 * HOUR):
            compactor.handler({}, lambda_context())
        assert calls and set(calls) <= allowed("compactor")

        from meterline import bootstrap
        from meterline.storage.meters_store import MetersStore

        MetersStore().set_backfill("default", "tokens_total", {"status": "completed"})
        report = create_report(bootstrap.reports_context(), receiver, T0)
        calls.clear()
        assert fire(report, T0 + 2 * HOUR) != []
        assert ("Catalog", "dynamodb:PutItem") in calls  # the window's claim and its run (one transaction)
        assert set(calls) <= allowed("exporter")

        calls.clear()
        assert drain(exports_aws) == 3  # hour 0: three subjects (hour 1 waits for its settle)
        assert calls and set(calls) <= allowed("sender")
    finally:
        receiver.close()


def test_a_recount_request_is_written_and_served_within_the_roles(
        calls: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    """An event too old for its quarter to be re-folded: the processor writes a recount request (usage
    table), the backfill function reads the requests (one Query), recounts the hour and deletes the request."""
    from functions.backfill import handler as backfill
    from meterline import bootstrap
    from meterline.domain.timeutil import DAY_MS, format_ms, now_ms
    from meterline.services import backfill as backfill_service
    from meterline.storage.usage_store import UsageStore

    monkeypatch.setenv("METERLINE_MINUTE_RETENTION_DAYS", "7")
    bootstrap.reset()
    backfill.handler({}, lambda_context())  # the example meters' own backfills, before any event
    old = cloud_event("old", time=format_ms(now_ms() - 20 * DAY_MS))
    assert call(ingest, "POST", "/api/v1/events", body=old, content_type="application/json").status == 204
    calls.clear()
    records = stream_records(os.environ["EVENTS_TABLE"])
    assert processor.handler({"Records": records}, lambda_context()) == {"batchItemFailures": []}
    assert len(UsageStore().recount_requests()) == 1
    assert calls and set(calls) <= allowed("processor")

    calls.clear()
    indexes: list[str] = []  # the events table is queried through its time index alone (INDEX_ACCESS)

    def record_index(params: dict[str, Any], **_: Any) -> None:
        if TABLES.get(params.get("TableName", "")) == "Events":
            indexes.append(params.get("IndexName", "the table itself"))

    client = aws_client("dynamodb")
    client.meta.events.register("provide-client-params.dynamodb.Query", record_index)
    try:
        monkeypatch.setattr(backfill_service, "RECOUNT_SETTLE_MS", 0)
        assert len(backfill.handler({}, lambda_context())["recounted"]) == 1
    finally:
        client.meta.events.unregister("provide-client-params.dynamodb.Query", record_index)
    assert {("Usage", "dynamodb:Query"), ("Usage", "dynamodb:DeleteItem")} <= set(calls)
    assert indexes and set(indexes) == set(INDEX_ACCESS["backfill"]["Events"])
    assert set(calls) - {("Events", "dynamodb:Query")} <= allowed("backfill")
    bootstrap.reset()
