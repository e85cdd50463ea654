"""Entitlements through the real handlers: create (metered with issueAfterReset, static, boolean), the
value as usage is ingested and counted by the real processor, grants, reset, history, void, override,
delete, the namespace listings and the customer aliases. Times come from a fixed clock."""

from __future__ import annotations

import os
from typing import Any

import pytest

from functions.entitlements import handler as entitlements
from functions.ingest import handler as ingest
from functions.processor import handler as processor
from meterline import bootstrap
from meterline.domain.timeutil import parse_rfc3339, to_epoch_ms
from meterline.storage.meters_store import MetersStore
from tests.conftest import cloud_event, lambda_context, stream_records
from tests.integration.http import Reply, call

JSON = "application/json"
NOW = "2024-01-15T12:00:00Z"


def ms(text: str) -> int:
    return to_epoch_ms(parse_rfc3339(text))


@pytest.fixture
def clock(aws: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    now = {"ms": ms(NOW)}
    monkeypatch.setattr(entitlements, "now_ms", lambda: now["ms"])
    MetersStore().set_backfill("default", "tokens_total", {"status": "completed"})
    bootstrap.reset()
    return now


def send(method: str, path: str, body: Any = None, query: dict[str, str] | None = None) -> Reply:
    return call(entitlements, method, path, body=body, content_type=JSON, query=query)


def ok(reply: Reply, status: int = 200) -> Any:
    assert reply.status == status, reply.body
    return reply.json() if reply.body else None


def usage(*events: tuple[str, str, int, str]) -> None:
    """Ingest (subject, time, tokens, model) events and count them with the real processor."""
    body = [cloud_event(f"{subject}-{time}-{tokens}-{model}", subject=subject, time=time,
                        data={"tokens": tokens, "model": model, "type": "input"})
            for subject, time, tokens, model in events]
    reply = call(ingest, "POST", "/api/v1/events", body=body, content_type=JSON)
    assert reply.status == 204, reply.body
    assert processor.handler({"Records": stream_records(os.environ["EVENTS_TABLE"])},
                             lambda_context()) == {"batchItemFailures": []}


def test_seed_walkthrough_metered_value(clock: dict[str, int]) -> None:
    feature = ok(send("POST", "/api/v1/features", {"key": "gpt_4_tokens", "name": "GPT-4 Tokens",
                                                   "meterSlug": "tokens_total",
                                                   "meterGroupByFilters": {"model": "gpt-4"}}), 201)
    entitlement = ok(send("POST", "/api/v1/subjects/customer-1/entitlements", {
        "type": "metered", "featureKey": "gpt_4_tokens", "issueAfterReset": 1_000_000,
        "usagePeriod": {"interval": "MONTH"}, "isSoftLimit": False}), 201)
    assert entitlement["featureId"] == feature["id"] and entitlement["measureUsageFrom"] == "2024-01-15T12:00:00.000Z"
    assert entitlement["currentUsagePeriod"] == {"from": "2024-01-15T12:00:00.000Z", "to": "2024-02-15T12:00:00.000Z"}
    value = ok(send("GET", "/api/v1/subjects/customer-1/entitlements/gpt_4_tokens/value"))
    assert value == {"hasAccess": True, "balance": 1_000_000, "usage": 0, "overage": 0}
    usage(("customer-1", "2024-01-15T12:00:30Z", 400_000, "gpt-4"), ("customer-1", "2024-01-15T12:00:40Z", 5, "gpt-3"),
          ("customer-2", "2024-01-15T12:00:40Z", 7, "gpt-4"), ("customer-1", "2024-01-15T11:59:00Z", 9, "gpt-4"))
    clock["ms"] = ms("2024-01-15T12:05:00Z")
    value = ok(send("GET", "/api/v1/subjects/customer-1/entitlements/gpt_4_tokens/value"))
    assert value == {"hasAccess": True, "balance": 600_000, "usage": 400_000, "overage": 0}
    usage(("customer-1", "2024-01-15T12:04:00Z", 700_000, "gpt-4"))
    value = ok(send("GET", "/api/v1/subjects/customer-1/entitlements/gpt_4_tokens/value"))
    assert value == {"hasAccess": False, "balance": 0, "usage": 1_100_000, "overage": 100_000}
    grants = ok(send("GET", f"/api/v1/subjects/customer-1/entitlements/{entitlement['id']}/grants"))
    assert [(g["amount"], g["metadata"], g["minRolloverAmount"]) for g in grants] == [
        (1_000_000, {"issueAfterReset": "true"}, 1_000_000)]
    grant = ok(send("POST", "/api/v1/subjects/customer-1/entitlements/gpt_4_tokens/grants", {
        "amount": 300_000, "effectiveAt": "2024-01-15T12:05:00Z",
        "expiration": {"duration": "MONTH", "count": 1}}), 201)
    assert grant["priority"] == 1 and grant["expiresAt"] == "2024-02-15T12:05:00.000Z"
    value = ok(send("GET", "/api/v1/subjects/customer-1/entitlements/gpt_4_tokens/value"))
    assert value == {"hasAccess": True, "balance": 200_000, "usage": 1_100_000, "overage": 0}
    clock["ms"] = ms("2024-02-20T00:00:00Z")
    value = ok(send("GET", "/api/v1/subjects/customer-1/entitlements/gpt_4_tokens/value"))
    assert value == {"hasAccess": True, "balance": 1_000_000, "usage": 0, "overage": 0}
    history = ok(send("GET", f"/api/v1/subjects/customer-1/entitlements/{entitlement['id']}/history",
                      query={"windowSize": "DAY", "from": "2024-01-15T12:00:00Z", "to": "2024-01-17T00:00:00Z"}))
    assert [(w["period"]["from"], w["usage"], w["balanceAtStart"]) for w in history["windowedHistory"]] == [
        ("2024-01-15T12:00:00.000Z", 1_100_000, 1_000_000), ("2024-01-16T00:00:00.000Z", 0, 200_000)]
    first, second = history["burndownHistory"]
    assert (first["usage"], first["overage"], first["balanceAtEnd"]) == (1_100_000, 100_000, 0)
    assert second["period"]["from"] == "2024-01-15T12:05:00.000Z" and second["grantUsages"] == [
        {"grantId": grant["id"], "usage": 100_000}]
