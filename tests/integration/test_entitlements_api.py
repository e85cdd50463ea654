"""Entitlements through the real handlers: create (metered with issueAfterReset, static, boolean), the
value as usage is ingested and counted by the real processor, grants, reset, history, void, override,
delete, the namespace listings and the customer aliases. Times come from a fixed clock.

Every refusal is checked for its status, its problem+json body and the field it names, and (for writes)
for leaving the catalog table as it was. Values follow the worked examples of the notes (A.10); a value
from a balance snapshot equals one computed from measureUsageFrom."""

from __future__ import annotations

import os
import threading
from typing import Any, cast

import orjson
import pytest

from functions.entitlements import handler as entitlements
from functions.ingest import handler as ingest
from functions.processor import handler as processor
from meterline import bootstrap
from meterline.domain.timeutil import format_ms, parse_rfc3339, to_epoch_ms
from meterline.services import entitlements as entitlements_service
from meterline.services.usage_query import UsageReader
from meterline.storage.meters_store import MetersStore
from tests.conftest import cloud_event, lambda_context, scan_all, stream_records
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


# --- helpers ------------------------------------------------------------------------------------------

PROBLEM = "application/problem+json"
METERED = {"type": "metered", "featureKey": "gpt_4_tokens", "usagePeriod": {"interval": "MONTH"}}
CONFIG = '{"integrations":["github"]}'


def at(text: str) -> str:
    """A time as the API writes it."""
    return format_ms(ms(text))


def feature(key: str = "gpt_4_tokens", model: str | None = "gpt-4") -> dict[str, Any]:
    """A feature: metered by `tokens_total` (filtered to `model`) or, with model None, static."""
    body: dict[str, Any] = {"key": key, "name": key}
    if model is not None:
        body.update(meterSlug="tokens_total", meterGroupByFilters={"model": model})
    created: dict[str, Any] = ok(send("POST", "/api/v1/features", body), 201)
    return created


def entitle(subject: str, body: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    created: dict[str, Any] = ok(send("POST", f"/api/v1/subjects/{subject}/entitlements",
                                      {**(body or METERED), **fields}), 201)
    return created


def grant(subject: str, id_or_feature: str, amount: float, effective_at: str, **fields: Any) -> dict[str, Any]:
    body = {"amount": amount, "effectiveAt": effective_at, "expiration": {"duration": "YEAR", "count": 1}, **fields}
    created: dict[str, Any] = ok(send("POST", f"/api/v1/subjects/{subject}/entitlements/{id_or_feature}/grants",
                                      body), 201)
    return created


def value(subject: str, id_or_feature: str, **query: str) -> Any:
    return ok(send("GET", f"/api/v1/subjects/{subject}/entitlements/{id_or_feature}/value", query=query or None))


def reset(subject: str, entitlement_id: str, body: dict[str, Any] | None = None) -> Reply:
    return send("POST", f"/api/v1/subjects/{subject}/entitlements/{entitlement_id}/reset", {} if body is None else body)


def history(subject: str, entitlement_id: str, **query: str) -> Reply:
    return send("GET", f"/api/v1/subjects/{subject}/entitlements/{entitlement_id}/history", query=query)


def refused(reply: Reply, status: int, field: str | None = None) -> dict[str, Any]:
    """A problem+json answer of `status`, naming `field` among its errors when given."""
    assert reply.status == status, reply.body
    assert reply.content_type == PROBLEM
    body: dict[str, Any] = reply.json()
    assert body["status"] == status
    if field is not None:
        assert field in [e["field"] for e in body.get("errors", [])], body
    return body


def catalog(aws: Any) -> list[dict[str, Any]]:
    return scan_all(aws, os.environ["CATALOG_TABLE"])


def partition(aws: Any, pk: str) -> list[dict[str, Any]]:
    return [item for item in catalog(aws) if item["pk"]["S"] == pk]


def without_id(shown: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in shown.items() if k != "id"}


# --- create -------------------------------------------------------------------------------------------

def test_create_metered_with_defaults(clock: dict[str, int]) -> None:
    clock["ms"] = ms("2024-01-15T12:00:42.123Z")
    gpt4 = feature()
    created = entitle("customer-1")
    minute = "2024-01-15T12:00:00.000Z"
    assert without_id(created) == {
        "type": "metered", "subjectKey": "customer-1", "featureKey": "gpt_4_tokens", "featureId": gpt4["id"],
        "createdAt": "2024-01-15T12:00:42.123Z", "updatedAt": "2024-01-15T12:00:42.123Z", "activeFrom": minute,
        "usagePeriod": {"interval": "MONTH", "intervalISO": "P1M", "anchor": minute},
        "currentUsagePeriod": {"from": minute, "to": "2024-02-15T12:00:00.000Z"},
        "isSoftLimit": False, "isUnlimited": False, "preserveOverageAtReset": False,
        "measureUsageFrom": minute, "lastReset": minute}
    assert len(created["id"]) == 26
    assert ok(send("GET", f"/api/v1/subjects/customer-1/entitlements/{created['id']}")) == created
    assert ok(send("GET", f"/api/v1/entitlements/{created['id']}")) == created
    assert ok(send("GET", f"/api/v1/subjects/customer-1/entitlements/{created['id']}/grants")) == []
    assert value("customer-1", "gpt_4_tokens") == {"hasAccess": False, "balance": 0, "usage": 0, "overage": 0}


@pytest.mark.parametrize(("usage_period", "interval", "iso", "anchor", "current"), [
    ({"interval": "WEEK", "anchor": "2024-01-01T00:00:00Z"}, "WEEK", "P1W", "2024-01-01T00:00:00Z",
     ("2024-01-15T12:00:00Z", "2024-01-22T00:00:00Z")),
    ({"interval": "P1W"}, "WEEK", "P1W", NOW, (NOW, "2024-01-22T12:00:00Z")),
    ({"interval": "DAY"}, "DAY", "P1D", NOW, (NOW, "2024-01-16T12:00:00Z")),
    ({"interval": "P1D", "anchor": "2024-01-01T06:30:00+01:00"}, "DAY", "P1D", "2024-01-01T05:30:00Z",
     (NOW, "2024-01-16T05:30:00Z")),
    ({"interval": "YEAR", "anchor": "2023-03-01T00:00:00Z"}, "YEAR", "P1Y", "2023-03-01T00:00:00Z",
     (NOW, "2024-03-01T00:00:00Z")),
    ({"interval": "P1Y"}, "YEAR", "P1Y", NOW, (NOW, "2025-01-15T12:00:00Z")),
    ({"interval": "P1M", "anchor": "2023-12-31T00:00:00Z"}, "MONTH", "P1M", "2023-12-31T00:00:00Z",
     (NOW, "2024-01-31T00:00:00Z")),
    ({"interval": "MONTH", "anchor": "2024-01-31T00:00:00Z"}, "MONTH", "P1M", "2024-01-31T00:00:00Z",
     (NOW, "2024-01-31T00:00:00Z")),  # an anchor in the future: the period before it
    ({"interval": "MONTH", "anchor": "2024-01-15T12:00:59.999Z"}, "MONTH", "P1M", NOW,
     (NOW, "2024-02-15T12:00:00Z")),  # floored to the minute
])
def test_create_usage_periods(clock: dict[str, int], usage_period: dict[str, str], interval: str, iso: str,
                              anchor: str, current: tuple[str, str]) -> None:
    feature()
    created = entitle("customer-1", usagePeriod=usage_period)
    assert created["usagePeriod"] == {"interval": interval, "intervalISO": iso, "anchor": at(anchor)}
    assert created["currentUsagePeriod"] == {"from": at(current[0]), "to": at(current[1])}
    assert created["measureUsageFrom"] == created["lastReset"] == at(NOW)


@pytest.mark.parametrize(("usage_period", "measure_from", "expected", "current"), [
    ({"interval": "MONTH"}, "NOW", NOW, (NOW, "2024-02-15T12:00:00Z")),
    ({"interval": "MONTH", "anchor": "2023-11-30T00:00:00Z"}, "CURRENT_PERIOD_START", "2023-12-30T00:00:00Z",
     ("2023-12-30T00:00:00Z", "2024-01-30T00:00:00Z")),
    ({"interval": "DAY", "anchor": "2024-01-01T00:00:00Z"}, "CURRENT_PERIOD_START", "2024-01-15T00:00:00Z",
     ("2024-01-15T00:00:00Z", "2024-01-16T00:00:00Z")),
    ({"interval": "DAY", "anchor": "2024-01-01T00:00:00Z"}, "2024-01-10T08:30:45.5+02:00", "2024-01-10T06:30:00Z",
     ("2024-01-15T00:00:00Z", "2024-01-16T00:00:00Z")),
    ({"interval": "MONTH"}, "2024-01-10T06:30:00Z", "2024-01-10T06:30:00Z", (NOW, "2024-02-15T12:00:00Z")),
])
def test_create_measure_usage_from(clock: dict[str, int], usage_period: dict[str, str], measure_from: str,
                                   expected: str, current: tuple[str, str]) -> None:
    feature()
    created = entitle("customer-1", usagePeriod=usage_period, measureUsageFrom=measure_from, issueAfterReset=10)
    assert created["measureUsageFrom"] == created["lastReset"] == at(expected)
    assert created["currentUsagePeriod"] == {"from": at(current[0]), "to": at(current[1])}
    [default] = ok(send("GET", f"/api/v1/subjects/customer-1/entitlements/{created['id']}/grants"))
    assert default["effectiveAt"] == at(expected)  # the default grant counts from measureUsageFrom


def test_create_with_issue_after_reset_makes_the_default_grant(clock: dict[str, int]) -> None:
    feature()
    created = entitle("customer-1", issueAfterReset=100, issueAfterResetPriority=3, isSoftLimit=True,
                      preserveOverageAtReset=True, metadata={"plan": "pro"}, isUnlimited=False)
    assert (created["issueAfterReset"], created["issueAfterResetPriority"], created["isSoftLimit"],
            created["preserveOverageAtReset"], created["metadata"]) == (100, 3, True, True, {"plan": "pro"})
    [default] = ok(send("GET", "/api/v1/subjects/customer-1/entitlements/gpt_4_tokens/grants"))
    assert without_id(default) == {
        "entitlementId": created["id"], "subjectKey": "customer-1", "featureKey": "gpt_4_tokens", "amount": 100,
        "priority": 3, "effectiveAt": at(NOW), "expiration": {"duration": "YEAR", "count": 100},
        "expiresAt": "2124-01-15T12:00:00.000Z", "maxRolloverAmount": 100, "minRolloverAmount": 100,
        "metadata": {"issueAfterReset": "true"}, "createdAt": at(NOW), "updatedAt": at(NOW)}
    assert value("customer-1", created["id"]) == {"hasAccess": True, "balance": 100, "usage": 0, "overage": 0}
    other = entitle("customer-2", issueAfterReset=0.5)
    assert other["issueAfterResetPriority"] == 1
    assert [g["priority"] for g in ok(send("GET", f"/api/v1/subjects/customer-2/entitlements/{other['id']}/grants"))
            ] == [1]
    none = entitle("customer-3", issueAfterReset=0)  # nothing to issue: no grant
    assert none["issueAfterReset"] == 0
    assert ok(send("GET", f"/api/v1/subjects/customer-3/entitlements/{none['id']}/grants")) == []


def test_create_static_and_boolean(clock: dict[str, int]) -> None:
    payment = feature("payment-api-access", model=None)
    sso = feature("sso", model=None)
    static = entitle("customer-1", {"type": "static", "featureKey": "payment-api-access", "config": CONFIG})
    assert without_id(static) == {
        "type": "static", "subjectKey": "customer-1", "featureKey": "payment-api-access", "featureId": payment["id"],
        "createdAt": at(NOW), "updatedAt": at(NOW), "activeFrom": at(NOW), "config": CONFIG}
    spaced = '{ "seats" : 5 }'  # returned as given, not re-encoded
    assert entitle("customer-2", {"type": "static", "featureId": payment["id"], "config": spaced})["config"] == spaced
    boolean = entitle("customer-1", {"type": "boolean", "featureKey": "sso", "metadata": {"a": "b"},
                                     "usagePeriod": {"interval": "DAY"}})
    assert without_id(boolean) == {
        "type": "boolean", "subjectKey": "customer-1", "featureKey": "sso", "featureId": sso["id"],
        "createdAt": at(NOW), "updatedAt": at(NOW), "activeFrom": at(NOW), "metadata": {"a": "b"},
        "usagePeriod": {"interval": "DAY", "intervalISO": "P1D", "anchor": at(NOW)},
        "currentUsagePeriod": {"from": at(NOW), "to": "2024-01-16T12:00:00.000Z"}}
    # a static entitlement of a metered feature is fine: it just does not read the meter
    feature()
    assert entitle("customer-1", {"type": "static", "featureKey": "gpt_4_tokens", "config": "[]"})["type"] == "static"
    assert value("customer-1", "sso") == {"hasAccess": True}
    assert value("customer-1", static["id"]) == {"hasAccess": True, "config": CONFIG}
    assert value("customer-1", "gpt_4_tokens") == {"hasAccess": True, "config": "[]"}


BAD_CREATES = [
    ({**METERED, "type": "credits"}, 400, "type"),
    ({k: v for k, v in METERED.items() if k != "type"}, 400, "type"),
    ({k: v for k, v in METERED.items() if k != "usagePeriod"}, 400, "usagePeriod"),
    ({**METERED, "usagePeriod": {"interval": "HOUR"}}, 400, "usagePeriod.interval"),
    ({**METERED, "usagePeriod": {"interval": "PT1H"}}, 400, "usagePeriod.interval"),
    ({**METERED, "usagePeriod": {"interval": "MONTHLY"}}, 400, "usagePeriod.interval"),
    ({**METERED, "usagePeriod": {}}, 400, "usagePeriod.interval"),
    ({**METERED, "usagePeriod": {"interval": "DAY", "anchor": "yesterday"}}, 400, "usagePeriod.anchor"),
    ({**METERED, "usagePeriod": {"interval": "DAY", "every": 2}}, 400, "usagePeriod.every"),
    ({**METERED, "usagePeriod": "MONTH"}, 400, "usagePeriod"),
    ({**METERED, "featureKey": "payment-api-access"}, 400, "featureKey"),  # no meter
    ({**METERED, "config": CONFIG}, 400, "config"),
    ({**METERED, "measureUsageFrom": "LAST_WEEK"}, 400, "measureUsageFrom"),
    ({**METERED, "measureUsageFrom": "2024-01-10"}, 400, "measureUsageFrom"),
    ({**METERED, "isSoftLimit": "true"}, 400, "isSoftLimit"),
    ({**METERED, "preserveOverageAtReset": 1}, 400, "preserveOverageAtReset"),
    ({**METERED, "issueAfterReset": -1}, 400, "issueAfterReset"),
    ({**METERED, "issueAfterReset": "100"}, 400, "issueAfterReset"),
    ({**METERED, "issueAfterReset": True}, 400, "issueAfterReset"),
    ({**METERED, "issueAfterResetPriority": 2}, 400, "issueAfterResetPriority"),
    ({**METERED, "issueAfterReset": 10, "issueAfterResetPriority": 0}, 400, "issueAfterResetPriority"),
    ({**METERED, "issueAfterReset": 10, "issueAfterResetPriority": 256}, 400, "issueAfterResetPriority"),
    ({**METERED, "issueAfterReset": 10, "issueAfterResetPriority": 1.5}, 400, "issueAfterResetPriority"),
    ({**METERED, "metadata": {"tier": 1}}, 400, "metadata.tier"),
    ({**METERED, "colour": "red"}, 400, "colour"),
    ({**METERED, "featureKey": ""}, 400, "featureKey"),
    ({"type": "metered", "usagePeriod": {"interval": "MONTH"}}, 400, "featureKey"),
    ({"type": "boolean"}, 400, "featureKey"),
    ({"type": "static", "featureKey": "payment-api-access", "config": CONFIG, "measureUsageFrom": "NOW"},
     400, "measureUsageFrom"),
    ({"type": "static", "featureKey": "payment-api-access", "config": CONFIG, "issueAfterReset": 10},
     400, "issueAfterReset"),
    ({"type": "static", "featureKey": "payment-api-access", "config": CONFIG, "isSoftLimit": False},
     400, "isSoftLimit"),
    ({"type": "boolean", "featureKey": "payment-api-access", "measureUsageFrom": "CURRENT_PERIOD_START"},
     400, "measureUsageFrom"),
    ({"type": "boolean", "featureKey": "payment-api-access", "issueAfterReset": 0}, 400, "issueAfterReset"),
    ({"type": "boolean", "featureKey": "payment-api-access", "isSoftLimit": True}, 400, "isSoftLimit"),
    ({"type": "boolean", "featureKey": "payment-api-access", "config": CONFIG}, 400, "config"),
    ({"type": "static", "featureKey": "payment-api-access"}, 400, "config"),
    ({"type": "static", "featureKey": "payment-api-access", "config": "{nope"}, 400, "config"),
    ({"type": "static", "featureKey": "payment-api-access", "config": ""}, 400, "config"),
    ({"type": "static", "featureKey": "payment-api-access", "config": {"integrations": ["github"]}}, 400, "config"),
    ({**METERED, "featureKey": "no_such_feature"}, 404, "featureKey"),
    ({**METERED, "featureKey": None, "featureId": "01ARZ3NDEKTSV4RRFFQ69G5FAV"}, 404, "featureId"),
    ({**METERED, "featureId": "not-an-id"}, 404, "featureId"),
]


BAD_BODIES = [
    (b'{"type": "metered",', JSON, 400, None),
    (b"", JSON, 400, None),
    (b"[]", JSON, 400, "entitlement"),
    (b'"metered"', JSON, 400, "entitlement"),
    (orjson.dumps(METERED), "text/plain", 415, "Content-Type"),
    (orjson.dumps(METERED), None, 415, "Content-Type"),
]


def test_bad_creates_are_refused_and_write_nothing(aws: Any, clock: dict[str, int]) -> None:
    """Every case of BAD_CREATES and BAD_BODIES on one set of tables (a table set costs more than a case)."""
    feature()
    feature("payment-api-access", model=None)
    before = catalog(aws)
    for body, status, field in BAD_CREATES:
        refused(send("POST", "/api/v1/subjects/customer-1/entitlements", body), status, field)
    assert catalog(aws) == before
    entitle("customer-2")  # something to override
    before = catalog(aws)
    for raw, content_type, status, field in BAD_BODIES:
        for method, path in (("POST", "/api/v1/subjects/customer-1/entitlements"),
                             ("PUT", "/api/v1/subjects/customer-2/entitlements/gpt_4_tokens/override")):
            problem = refused(call(entitlements, method, path, raw_body=raw, content_type=content_type), status, field)
            if field is None:
                assert problem["type"].endswith("malformed-json")
    assert catalog(aws) == before


def test_archived_features_take_no_new_entitlements(aws: Any, clock: dict[str, int]) -> None:
    gpt4 = feature()
    kept = entitle("customer-1")
    assert send("DELETE", "/api/v1/features/gpt_4_tokens").status == 204
    before = catalog(aws)
    refused(send("POST", "/api/v1/subjects/customer-2/entitlements", METERED), 404, "featureKey")
    refused(send("POST", "/api/v1/subjects/customer-2/entitlements",
                 {**METERED, "featureKey": None, "featureId": gpt4["id"]}), 404, "featureId")
    assert catalog(aws) == before
    # existing entitlements keep working
    assert value("customer-1", kept["id"]) == {"hasAccess": False, "balance": 0, "usage": 0, "overage": 0}
    again = feature()  # the key is free again: a new feature, a new entitlement
    assert entitle("customer-2")["featureId"] == again["id"]


def test_feature_id_wins_over_feature_key(clock: dict[str, int]) -> None:
    feature()
    gpt3 = feature("gpt_3_tokens", model="gpt-3")
    created = entitle("customer-1", featureId=gpt3["id"])
    assert (created["featureKey"], created["featureId"]) == ("gpt_3_tokens", gpt3["id"])
    # the feature key given was not used: that feature is still free
    assert entitle("customer-1")["featureKey"] == "gpt_4_tokens"


def test_one_active_entitlement_per_subject_and_feature(aws: Any, clock: dict[str, int]) -> None:
    gpt4 = feature()
    first = entitle("customer-1", issueAfterReset=10)
    before = catalog(aws)
    for body in (METERED, {**METERED, "featureKey": None, "featureId": gpt4["id"]},
                 {"type": "boolean", "featureKey": "gpt_4_tokens"}):
        problem = refused(send("POST", "/api/v1/subjects/customer-1/entitlements", body), 409, "featureKey")
        assert problem["extensions"] == {"conflictingEntityId": first["id"]}
    assert catalog(aws) == before
    assert entitle("customer-2")["featureKey"] == "gpt_4_tokens"  # another subject may


def test_concurrent_creates_make_exactly_one(aws: Any, clock: dict[str, int]) -> None:
    feature()
    replies: list[Reply] = []
    barrier = threading.Barrier(6)

    def attempt() -> None:
        barrier.wait()
        replies.append(send("POST", "/api/v1/subjects/customer-1/entitlements", {**METERED, "issueAfterReset": 10}))

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.status for r in replies) == [201] + [409] * 5
    [winner] = [r.json() for r in replies if r.status == 201]
    assert {r.json()["extensions"]["conflictingEntityId"] for r in replies if r.status == 409} == {winner["id"]}
    assert [e["id"] for e in ok(send("GET", "/api/v1/subjects/customer-1/entitlements"))] == [winner["id"]]
    assert len(partition(aws, "default#entitlement")) == 1
    assert len(partition(aws, "default#grant")) == 1  # the losers' default grants were not written
    assert len(partition(aws, f"default#entgrants#{winner['id']}")) == 1


# --- list, get, delete, override ------------------------------------------------------------------------

def test_list_get_and_delete(aws: Any, clock: dict[str, int]) -> None:
    feature()
    feature("sso", model=None)
    metered = entitle("customer-1", issueAfterReset=100)
    clock["ms"] = ms("2024-01-15T12:00:01Z")
    boolean = entitle("customer-1", {"type": "boolean", "featureKey": "sso"})
    other = entitle("customer-2")
    listed = ok(send("GET", "/api/v1/subjects/customer-1/entitlements"))
    assert [e["id"] for e in listed] == [metered["id"], boolean["id"]]
    assert ok(send("GET", f"/api/v1/subjects/customer-1/entitlements/{boolean['id']}")) == boolean
    for subject, entitlement_id in (("customer-2", metered["id"]), ("customer-1", other["id"]),
                                    ("customer-1", "01ARZ3NDEKTSV4RRFFQ69G5FAV"), ("customer-1", "gpt_4_tokens")):
        refused(send("GET", f"/api/v1/subjects/{subject}/entitlements/{entitlement_id}"), 404, "entitlementId")
        refused(send("DELETE", f"/api/v1/subjects/{subject}/entitlements/{entitlement_id}"), 404, "entitlementId")
    refused(send("GET", "/api/v1/subjects/customer-1/entitlements", query={"includeDeleted": "maybe"}), 400,
            "includeDeleted")
    refused(send("GET", "/api/v1/subjects/customer-1/entitlements", query={"page": "1"}), 400, "page")

    usage(("customer-1", "2024-01-15T12:05:00Z", 30, "gpt-4"))
    clock["ms"] = ms("2024-01-15T12:30:00Z")
    assert send("DELETE", f"/api/v1/subjects/customer-1/entitlements/{metered['id']}").status == 204
    assert [e["id"] for e in ok(send("GET", "/api/v1/subjects/customer-1/entitlements"))] == [boolean["id"]]
    with_deleted = ok(send("GET", "/api/v1/subjects/customer-1/entitlements", query={"includeDeleted": "true"}))
    assert [e["id"] for e in with_deleted] == [metered["id"], boolean["id"]]
    deleted = with_deleted[0]
    assert (deleted["deletedAt"], deleted["activeTo"], deleted["updatedAt"]) == (at("2024-01-15T12:30:00Z"),) * 3
    assert ok(send("GET", f"/api/v1/subjects/customer-1/entitlements/{metered['id']}")) == deleted
    assert ok(send("GET", f"/api/v1/entitlements/{metered['id']}")) == deleted

    assert value("customer-1", metered["id"]) == {"hasAccess": False}
    refused(send("GET", "/api/v1/subjects/customer-1/entitlements/gpt_4_tokens/value"), 404, "entitlementId")
    before = {"hasAccess": True, "balance": 70, "usage": 30, "overage": 0}
    assert value("customer-1", metered["id"], time="2024-01-15T12:20:00Z") == before
    assert value("customer-1", "gpt_4_tokens", time="2024-01-15T12:29:00Z") == before
    assert value("customer-1", metered["id"], time="2024-01-15T12:30:00Z") == {"hasAccess": False}

    # the feature is free again
    again = entitle("customer-1", issueAfterReset=5)
    assert value("customer-1", "gpt_4_tokens") == {"hasAccess": True, "balance": 5, "usage": 0, "overage": 0}
    assert value("customer-1", "gpt_4_tokens", time="2024-01-15T12:20:00Z")["balance"] == 70
    refused(send("DELETE", f"/api/v1/subjects/customer-1/entitlements/{metered['id']}"), 404, "entitlementId")
    assert send("DELETE", f"/api/v1/subjects/customer-1/entitlements/{again['id']}").status == 204
    # grants of a deleted entitlement take no more grants or resets
    refused(send("POST", f"/api/v1/subjects/customer-1/entitlements/{again['id']}/grants", {
        "amount": 1, "effectiveAt": "2024-01-15T12:30:00Z", "expiration": {"duration": "DAY", "count": 1}}),
        404, "entitlementId")
    refused(reset("customer-1", again["id"]), 404, "entitlementId")


def test_override_replaces_the_active_entitlement(aws: Any, clock: dict[str, int]) -> None:
    feature()
    feature("sso", model=None)
    old = entitle("customer-1", issueAfterReset=100)
    clock["ms"] = ms("2024-01-15T12:10:00Z")
    path = "/api/v1/subjects/customer-1/entitlements/{}/override"
    new = ok(send("PUT", path.format("gpt_4_tokens"), {**METERED, "issueAfterReset": 500}), 201)
    assert new["id"] != old["id"] and new["issueAfterReset"] == 500
    assert new["measureUsageFrom"] == at("2024-01-15T12:10:00Z")
    assert ok(send("GET", f"/api/v1/subjects/customer-1/entitlements/{old['id']}"))["deletedAt"] == at(
        "2024-01-15T12:10:00Z")
    assert [e["id"] for e in ok(send("GET", "/api/v1/subjects/customer-1/entitlements"))] == [new["id"]]
    assert value("customer-1", "gpt_4_tokens") == {"hasAccess": True, "balance": 500, "usage": 0, "overage": 0}
    assert [g["amount"] for g in ok(send("GET", "/api/v1/subjects/customer-1/entitlements/gpt_4_tokens/grants"))
            ] == [500]
    # by entitlement id, to another type
    clock["ms"] = ms("2024-01-15T12:20:00Z")
    newer = ok(send("PUT", path.format(new["id"]), {"type": "boolean", "featureKey": "gpt_4_tokens"}), 201)
    assert value("customer-1", "gpt_4_tokens") == {"hasAccess": True}
    assert value("customer-1", new["id"]) == {"hasAccess": False}

    before = catalog(aws)
    refused(send("PUT", path.format("sso"), {"type": "boolean", "featureKey": "sso"}), 404, "entitlementId")
    refused(send("PUT", "/api/v1/subjects/customer-2/entitlements/gpt_4_tokens/override", METERED), 404,
            "entitlementId")
    refused(send("PUT", path.format(new["id"]), METERED), 400, "entitlementIdOrFeatureKey")  # deleted already
    refused(send("PUT", path.format("gpt_4_tokens"), {"type": "boolean", "featureKey": "sso"}), 400, "featureKey")
    refused(send("PUT", path.format("gpt_4_tokens"), {**METERED, "usagePeriod": None}), 400, "usagePeriod")
    refused(send("PUT", path.format("gpt_4_tokens"), {**METERED, "featureKey": "nope"}), 404, "featureKey")
    assert catalog(aws) == before
    assert ok(send("GET", f"/api/v1/subjects/customer-1/entitlements/{newer['id']}")).get("deletedAt") is None


# --- grants -------------------------------------------------------------------------------------------

def test_create_grants(clock: dict[str, int]) -> None:
    feature()
    entitlement = entitle("customer-1")
    created = grant("customer-1", "gpt_4_tokens", 100, "2024-01-31T00:00:59Z",
                    expiration={"duration": "MONTH", "count": 1})
    assert without_id(created) == {
        "entitlementId": entitlement["id"], "subjectKey": "customer-1", "featureKey": "gpt_4_tokens", "amount": 100,
        "priority": 1, "effectiveAt": "2024-01-31T00:00:00.000Z", "expiration": {"duration": "MONTH", "count": 1},
        "expiresAt": "2024-02-29T00:00:00.000Z", "maxRolloverAmount": 0, "minRolloverAmount": 0,
        "createdAt": at(NOW), "updatedAt": at(NOW)}
    assert grant("customer-1", entitlement["id"], 1, NOW, expiration={"duration": "MONTH", "count": 13}
                 )["expiresAt"] == "2025-02-15T12:00:00.000Z"
    assert grant("customer-1", entitlement["id"], 1, NOW, expiration={"duration": "HOUR", "count": 36}
                 )["expiresAt"] == "2024-01-17T00:00:00.000Z"
    assert grant("customer-1", entitlement["id"], 1, NOW, expiration={"duration": "WEEK", "count": 2}
                 )["expiresAt"] == "2024-01-29T12:00:00.000Z"
    recurring = grant("customer-1", "gpt_4_tokens", 12.5, NOW, priority=2, metadata={"source": "promo"},
                      maxRolloverAmount=10, minRolloverAmount=5, recurrence={"interval": "DAY"})
    assert (recurring["amount"], recurring["priority"], recurring["metadata"], recurring["maxRolloverAmount"],
            recurring["minRolloverAmount"]) == (12.5, 2, {"source": "promo"}, 10, 5)
    assert recurring["recurrence"] == {"interval": "DAY", "intervalISO": "P1D", "anchor": at(NOW)}
    assert recurring["nextRecurrence"] == "2024-01-16T12:00:00.000Z"
    weekly = grant("customer-1", "gpt_4_tokens", 1, NOW,
                   recurrence={"interval": "P1W", "anchor": "2024-01-01T06:00:00Z"})
    assert weekly["recurrence"] == {"interval": "WEEK", "intervalISO": "P1W", "anchor": "2024-01-01T06:00:00.000Z"}
    assert weekly["nextRecurrence"] == "2024-01-22T06:00:00.000Z"
    listed = ok(send("GET", f"/api/v1/subjects/customer-1/entitlements/{entitlement['id']}/grants"))
    assert len(listed) == 6 and created in listed and recurring in listed
    assert ok(send("GET", "/api/v1/subjects/customer-1/entitlements/gpt_4_tokens/grants",
                   query={"orderBy": "id"})) == sorted(listed, key=lambda g: g["id"])
    clock["ms"] = ms("2024-01-16T13:00:00Z")
    shown = ok(send("GET", f"/api/v1/subjects/customer-1/entitlements/{entitlement['id']}/grants"))
    assert {g["id"]: g.get("nextRecurrence") for g in shown}[recurring["id"]] == "2024-01-17T12:00:00.000Z"


BAD_GRANTS = [
    ({"amount": None}, "amount"),
    ({"amount": -1}, "amount"),
    ({"amount": "100"}, "amount"),
    ({"amount": True}, "amount"),
    ({"effectiveAt": None}, "effectiveAt"),
    ({"effectiveAt": "soon"}, "effectiveAt"),
    ({"effectiveAt": "2024-01-15T11:59:59Z"}, "effectiveAt"),  # before the current period
    ({"expiration": None}, "expiration"),
    ({"expiration": {"duration": "FORTNIGHT", "count": 1}}, "expiration.duration"),
    ({"expiration": {"duration": "DAY", "count": 0}}, "expiration.count"),
    ({"expiration": {"duration": "DAY"}}, "expiration.count"),
    ({"priority": 0}, "priority"),
    ({"priority": 256}, "priority"),
    ({"minRolloverAmount": 10, "maxRolloverAmount": 5}, "minRolloverAmount"),
    ({"minRolloverAmount": 10}, "minRolloverAmount"),  # the default max is 0
    ({"maxRolloverAmount": -5}, "maxRolloverAmount"),
    ({"recurrence": {"interval": "HOUR"}}, "recurrence.interval"),
    ({"recurrence": {}}, "recurrence.interval"),
    ({"metadata": {"a": 1}}, "metadata.a"),
    ({"voidedAt": NOW}, "voidedAt"),
]


def test_bad_grants_are_refused_and_write_nothing(aws: Any, clock: dict[str, int]) -> None:
    feature()
    entitle("customer-1")
    clock["ms"] = ms("2024-01-15T12:30:00Z")
    before = catalog(aws)
    for change, field in BAD_GRANTS:
        body = {"amount": 100, "effectiveAt": NOW, "expiration": {"duration": "MONTH", "count": 1}, **change}
        body = {k: v for k, v in body.items() if v is not None}
        refused(send("POST", "/api/v1/subjects/customer-1/entitlements/gpt_4_tokens/grants", body), 400, field)
    for raw, content_type, status, field in BAD_BODIES:
        refused(call(entitlements, "POST", "/api/v1/subjects/customer-1/entitlements/gpt_4_tokens/grants",
                     raw_body=raw, content_type=content_type), status, field and field.replace("entitlement", "grant"))
    assert catalog(aws) == before


def test_grants_need_a_metered_entitlement(aws: Any, clock: dict[str, int]) -> None:
    feature()
    feature("sso", model=None)
    feature("payment-api-access", model=None)
    entitle("customer-1", {"type": "boolean", "featureKey": "sso"})
    static = entitle("customer-1", {"type": "static", "featureKey": "payment-api-access", "config": CONFIG})
    body = {"amount": 100, "effectiveAt": NOW, "expiration": {"duration": "MONTH", "count": 1}}
    before = catalog(aws)
    for id_or_feature in ("sso", static["id"]):
        refused(send("POST", f"/api/v1/subjects/customer-1/entitlements/{id_or_feature}/grants", body), 400,
                "entitlementIdOrFeatureKey")
    for subject, id_or_feature in (("customer-1", "gpt_4_tokens"), ("customer-1", "01ARZ3NDEKTSV4RRFFQ69G5FAV"),
                                   ("customer-2", static["id"])):
        refused(send("POST", f"/api/v1/subjects/{subject}/entitlements/{id_or_feature}/grants", body), 404,
                "entitlementId")
        refused(send("GET", f"/api/v1/subjects/{subject}/entitlements/{id_or_feature}/grants"), 404, "entitlementId")
    assert catalog(aws) == before
    refused(history("customer-1", static["id"], windowSize="DAY"), 400, "entitlementId")
    refused(reset("customer-1", static["id"]), 400, "entitlementId")
    assert catalog(aws) == before


def test_grant_listings_and_void(clock: dict[str, int]) -> None:
    gpt4 = feature()
    feature("gpt_3_tokens", model="gpt-3")
    one = entitle("customer-1")
    two = entitle("customer-2")
    three = entitle("customer-1", featureKey="gpt_3_tokens")
    made = []
    for i, (subject, entitlement) in enumerate([("customer-1", one), ("customer-2", two), ("customer-1", three),
                                                ("customer-1", one)]):
        clock["ms"] = ms(NOW) + i * 1000
        made.append(grant(subject, entitlement["id"], 10 * (i + 1), NOW))
    ids = [g["id"] for g in made]
    clock["ms"] = ms("2024-01-15T12:10:00Z")

    def grants(**query: str) -> Any:
        return ok(send("GET", "/api/v1/grants", query=query))
    assert [g["id"] for g in grants()] == ids
    assert [g["id"] for g in grants(feature="gpt_4_tokens")] == [ids[0], ids[1], ids[3]]
    assert [g["id"] for g in grants(feature=gpt4["id"], subject="customer-1")] == [ids[0], ids[3]]
    assert [g["id"] for g in grants(subject="customer-1,customer-2", order="DESC")] == ids[::-1]
    repeated = call(entitlements, "GET", "/api/v1/grants", content_type=JSON,
                    query=cast(Any, [("feature", "gpt_3_tokens"), ("feature", "gpt_4_tokens"),
                                     ("subject", "customer-2")]))
    assert [g["id"] for g in ok(repeated)] == [ids[1]]
    assert [g["id"] for g in grants(limit="2", offset="1")] == ids[1:3]
    page = grants(page="2", pageSize="3")
    assert (page["totalCount"], page["page"], page["pageSize"], [g["id"] for g in page["items"]]) == (
        4, 2, 3, [ids[3]])
    assert grants(pageSize="2")["page"] == 1
    for query, field in (({"pageSize": "1001"}, "pageSize"), ({"page": "0"}, "page"),
                         ({"orderBy": "amount"}, "orderBy"), ({"includeDeleted": "yes"}, "includeDeleted"),
                         ({"subjectKey": "x"}, "subjectKey")):
        refused(send("GET", "/api/v1/grants", query=query), 400, field)

    assert send("DELETE", f"/api/v1/grants/{ids[0]}").status == 204
    voided = {g["id"]: g for g in grants(includeDeleted="true")}[ids[0]]
    assert (voided["voidedAt"], voided["updatedAt"]) == (at("2024-01-15T12:10:00Z"),) * 2
    assert [g["id"] for g in grants()] == ids[1:]
    assert [g["id"] for g in grants(includeDeleted="true", orderBy="createdAt")] == ids
    assert [g["id"] for g in ok(send("GET", f"/api/v1/subjects/customer-1/entitlements/{one['id']}/grants"))
            ] == [ids[3]]
    assert [g["id"] for g in ok(send("GET", "/api/v1/subjects/customer-1/entitlements/gpt_4_tokens/grants",
                                     query={"includeDeleted": "true", "orderBy": "createdAt"}))] == [ids[0], ids[3]]

    problem = refused(send("DELETE", f"/api/v1/grants/{ids[0]}"), 409)
    assert problem["extensions"] == {"conflictingEntityId": ids[0]}
    refused(send("DELETE", "/api/v1/grants/01ARZ3NDEKTSV4RRFFQ69G5FAV"), 404, "grantId")
    refused(send("DELETE", "/api/v1/grants/not-a-grant"), 404, "grantId")
    refused(send("DELETE", f"/api/v1/grants/{ids[1]}", query={"at": "2024-01-15T12:11:00Z"}), 400, "at")
    refused(send("DELETE", f"/api/v1/grants/{ids[1]}", query={"at": "2024-01-15T11:59:00Z"}), 400, "at")
    refused(send("DELETE", f"/api/v1/grants/{ids[1]}", query={"at": "later"}), 400, "at")
    assert [g["id"] for g in grants()] == ids[1:]
    assert send("DELETE", f"/api/v1/grants/{ids[1]}", query={"at": "2024-01-15T12:05:30Z"}).status == 204
    assert {g["id"]: g for g in grants(includeDeleted="true")}[ids[1]]["voidedAt"] == at("2024-01-15T12:05:00Z")

    # the grants of a deleted entitlement are listed only with includeDeleted
    assert send("DELETE", f"/api/v1/subjects/customer-1/entitlements/{three['id']}").status == 204
    assert [g["id"] for g in grants()] == [ids[3]]
    assert [g["id"] for g in ok(send("GET", f"/api/v1/subjects/customer-1/entitlements/{three['id']}/grants"))
            ] == [ids[2]]


def test_void_keeps_what_the_grant_covered(clock: dict[str, int]) -> None:
    """A.10 example 6: grant 100, usage 60, void: balance 0; the 60 stay covered, new usage is overage."""
    feature()
    entitlement = entitle("customer-1")
    covering = grant("customer-1", "gpt_4_tokens", 100, NOW)
    usage(("customer-1", "2024-01-15T12:01:00Z", 60, "gpt-4"))
    clock["ms"] = ms("2024-01-15T12:10:00Z")
    assert value("customer-1", "gpt_4_tokens") == {"hasAccess": True, "balance": 40, "usage": 60, "overage": 0}
    assert send("DELETE", f"/api/v1/grants/{covering['id']}").status == 204
    assert value("customer-1", "gpt_4_tokens") == {"hasAccess": False, "balance": 0, "usage": 60, "overage": 0}
    assert value("customer-1", "gpt_4_tokens", time="2024-01-15T12:09:00Z")["balance"] == 40  # before the void
    usage(("customer-1", "2024-01-15T12:15:00Z", 25, "gpt-4"))
    clock["ms"] = ms("2024-01-15T12:20:00Z")
    assert value("customer-1", "gpt_4_tokens") == {"hasAccess": False, "balance": 0, "usage": 85, "overage": 25}
    segments = ok(history("customer-1", entitlement["id"], windowSize="HOUR"))["burndownHistory"]
    assert [(s["period"]["from"], s["period"]["to"], s["usage"], s["overage"], s["grantUsages"]) for s in segments] == [
        (at(NOW), at("2024-01-15T12:10:00Z"), 60, 0, [{"grantId": covering["id"], "usage": 60}]),
        (at("2024-01-15T12:10:00Z"), at("2024-01-15T12:20:00Z"), 25, 25, [])]


# --- values -------------------------------------------------------------------------------------------

def test_value_burns_the_allowance_of_the_subject_and_filter(clock: dict[str, int]) -> None:
    """A.10 example 1, counting only the subject's events of the feature's model."""
    feature()
    feature("gpt_3_tokens", model="gpt-3")
    entitlement = entitle("customer-1", issueAfterReset=100)
    entitle("customer-2", issueAfterReset=100)
    usage(("customer-1", "2024-01-15T12:01:10Z", 60, "gpt-4"), ("customer-1", "2024-01-15T12:02:00Z", 1000, "gpt-3"),
          ("customer-2", "2024-01-15T12:02:00Z", 1000, "gpt-4"), ("customer-1", "2024-01-15T11:59:59Z", 1000, "gpt-4"),
          ("customer-10", "2024-01-15T12:02:00Z", 1000, "gpt-4"))
    clock["ms"] = ms("2024-01-15T12:05:00Z")
    assert value("customer-1", "gpt_4_tokens") == {"hasAccess": True, "balance": 40, "usage": 60, "overage": 0}
    assert value("customer-1", entitlement["id"]) == value("customer-1", "gpt_4_tokens")
    assert value("customer-2", "gpt_4_tokens") == {"hasAccess": False, "balance": 0, "usage": 1000, "overage": 900}
    usage(("customer-1", "2024-01-15T12:06:20Z", 70, "gpt-4"))
    clock["ms"] = ms("2024-01-15T12:06:40Z")  # the current minute counts
    assert value("customer-1", "gpt_4_tokens") == {"hasAccess": False, "balance": 0, "usage": 130, "overage": 30}
    # `time` is rounded up to the minute
    for time, used in (("2024-01-15T12:00:30Z", 0), ("2024-01-15T12:01:00Z", 0), ("2024-01-15T12:01:00.001Z", 60),
                       ("2024-01-15T12:06:00Z", 60), ("2024-01-15T12:06:00.001Z", 130),
                       ("2024-01-15T17:36:01+05:30", 130)):
        assert value("customer-1", entitlement["id"], time=time)["usage"] == used, time
    assert value("customer-1", "gpt_4_tokens", time="2024-01-15T11:00:00Z") == {"hasAccess": False}  # not yet
    for query, field in (({"time": "noon"}, "time"), ({"time": "2024-01-15T12:00:00"}, "time"), ({"at": NOW}, "at")):
        refused(send("GET", "/api/v1/subjects/customer-1/entitlements/gpt_4_tokens/value", query=query), 400, field)
    for subject, id_or_feature in (("customer-1", "gpt_3_tokens"), ("customer-3", "gpt_4_tokens"),
                                   ("customer-1", "nope"), ("customer-2", entitlement["id"]),
                                   ("customer-1", "01ARZ3NDEKTSV4RRFFQ69G5FAV")):
        refused(send("GET", f"/api/v1/subjects/{subject}/entitlements/{id_or_feature}/value"), 404, "entitlementId")


def test_soft_limit_keeps_access_in_overage(clock: dict[str, int]) -> None:
    """A.10 example 2."""
    feature()
    entitle("customer-1", issueAfterReset=100, isSoftLimit=True)
    usage(("customer-1", "2024-01-15T12:01:00Z", 130, "gpt-4"))
    clock["ms"] = ms("2024-01-15T12:05:00Z")
    assert value("customer-1", "gpt_4_tokens") == {"hasAccess": True, "balance": 0, "usage": 130, "overage": 30}


def test_burn_order_priority_then_expiry(clock: dict[str, int]) -> None:
    """A.10 example 3 (with priority 1 for the omitted one, Meterline's default)."""
    feature()
    entitle("customer-1")
    a = grant("customer-1", "gpt_4_tokens", 50, NOW, priority=2)
    b = grant("customer-1", "gpt_4_tokens", 50, NOW, priority=2, expiration={"duration": "MONTH", "count": 1})
    c = grant("customer-1", "gpt_4_tokens", 50, NOW)
    usage(("customer-1", "2024-01-15T12:01:00Z", 70, "gpt-4"))
    clock["ms"] = ms("2024-01-15T12:05:00Z")
    assert value("customer-1", "gpt_4_tokens") == {"hasAccess": True, "balance": 80, "usage": 70, "overage": 0}
    entitlement_id = a["entitlementId"]
    [segment] = ok(history("customer-1", entitlement_id, windowSize="HOUR"))["burndownHistory"]
    assert segment["grantBalancesAtEnd"] == {a["id"]: 50, b["id"]: 30, c["id"]: 0}
    assert segment["grantUsages"] == [{"grantId": c["id"], "usage": 50}, {"grantId": b["id"], "usage": 20}]


def test_reset_rolls_grants_over(clock: dict[str, int]) -> None:
    """A.10 example 4: the default grant returns to issueAfterReset, a grant with rollover 0 drops to 0, one
    with maxRolloverAmount keeps its remainder."""
    feature()
    entitlement = entitle("customer-1", issueAfterReset=100)
    dropped = grant("customer-1", "gpt_4_tokens", 500, NOW, priority=5)
    clock["ms"] = ms("2024-01-15T12:00:01Z")  # created later: burns after `dropped` (same priority and expiry)
    kept = grant("customer-1", "gpt_4_tokens", 500, NOW, priority=5, maxRolloverAmount=500)
    usage(("customer-1", "2024-01-15T12:05:00Z", 130, "gpt-4"))
    clock["ms"] = ms("2024-01-15T12:30:00Z")
    assert value("customer-1", "gpt_4_tokens") == {"hasAccess": True, "balance": 970, "usage": 130, "overage": 0}
    assert reset("customer-1", entitlement["id"]).status == 204
    assert value("customer-1", "gpt_4_tokens") == {"hasAccess": True, "balance": 600, "usage": 0, "overage": 0}
    usage(("customer-1", "2024-01-15T12:40:00Z", 50, "gpt-4"))
    clock["ms"] = ms("2024-01-15T12:45:00Z")
    assert value("customer-1", "gpt_4_tokens") == {"hasAccess": True, "balance": 550, "usage": 50, "overage": 0}
    [default] = [g["id"] for g in ok(send("GET", "/api/v1/subjects/customer-1/entitlements/gpt_4_tokens/grants"))
                 if g.get("metadata") == {"issueAfterReset": "true"}]
    segments = ok(history("customer-1", entitlement["id"], windowSize="HOUR", **{"from": NOW}))["burndownHistory"]
    assert [(s["period"], s["grantBalancesAtStart"], s["grantBalancesAtEnd"]) for s in segments] == [
        ({"from": at(NOW), "to": at("2024-01-15T12:30:00Z")}, {default: 100, dropped["id"]: 500, kept["id"]: 500},
         {default: 0, dropped["id"]: 470, kept["id"]: 500}),
        ({"from": at("2024-01-15T12:30:00Z"), "to": at("2024-01-15T12:45:00Z")},
         {default: 100, dropped["id"]: 0, kept["id"]: 500}, {default: 50, dropped["id"]: 0, kept["id"]: 500})]
    assert value("customer-1", "gpt_4_tokens", time="2024-01-15T12:29:00Z")["balance"] == 970


@pytest.mark.parametrize(("at_creation", "at_reset", "balance"), [
    (False, None, 100), (False, True, 70), (True, None, 70), (True, False, 100)])
def test_reset_preserving_overage(clock: dict[str, int], at_creation: bool, at_reset: bool | None,
                                  balance: int) -> None:
    """A.10 example 5: an overage of 30 is paid from the new allowance only when overage is preserved."""
    feature()
    entitlement = entitle("customer-1", issueAfterReset=100, preserveOverageAtReset=at_creation)
    usage(("customer-1", "2024-01-15T12:05:00Z", 130, "gpt-4"))
    clock["ms"] = ms("2024-01-15T12:30:00Z")
    assert value("customer-1", "gpt_4_tokens")["overage"] == 30
    body = {} if at_reset is None else {"preserveOverage": at_reset}
    assert reset("customer-1", entitlement["id"], body).status == 204
    assert value("customer-1", "gpt_4_tokens") == {"hasAccess": True, "balance": balance, "usage": 0, "overage": 0}


def test_period_boundaries_reset_like_retained_anchor_resets(clock: dict[str, int]) -> None:
    feature()
    plain = entitle("customer-1", issueAfterReset=100, usagePeriod={"interval": "DAY"})
    preserving = entitle("customer-2", issueAfterReset=100, usagePeriod={"interval": "DAY"},
                         preserveOverageAtReset=True)
    usage(("customer-1", "2024-01-15T13:00:00Z", 130, "gpt-4"), ("customer-2", "2024-01-15T13:00:00Z", 130, "gpt-4"),
          ("customer-2", "2024-01-16T12:00:00Z", 5, "gpt-4"))
    clock["ms"] = ms("2024-01-16T12:05:00Z")
    assert value("customer-1", plain["id"]) == {"hasAccess": True, "balance": 100, "usage": 0, "overage": 0}
    assert value("customer-2", preserving["id"]) == {"hasAccess": True, "balance": 65, "usage": 5, "overage": 0}
    shown = ok(send("GET", f"/api/v1/subjects/customer-1/entitlements/{plain['id']}"))
    assert shown["currentUsagePeriod"] == {"from": "2024-01-16T12:00:00.000Z", "to": "2024-01-17T12:00:00.000Z"}
    assert shown["lastReset"] == at(NOW)  # the last manual reset: there was none


def test_preserved_overage_is_paid_by_a_grant_starting_at_the_reset(clock: dict[str, int]) -> None:
    """The overage kept at a period boundary is paid from what the new period starts with, grants that
    start at that very instant included (not burnt before they get their amount, and lost)."""
    feature()
    entitle("customer-1", usagePeriod={"interval": "DAY"}, preserveOverageAtReset=True)
    grant("customer-1", "gpt_4_tokens", 100, NOW, expiration={"duration": "DAY", "count": 1})
    grant("customer-1", "gpt_4_tokens", 50, "2024-01-16T12:00:00Z")
    usage(("customer-1", "2024-01-15T13:00:00Z", 130, "gpt-4"), ("customer-1", "2024-01-16T12:01:00Z", 5, "gpt-4"))
    clock["ms"] = ms("2024-01-16T11:59:00Z")
    assert value("customer-1", "gpt_4_tokens") == {"hasAccess": False, "balance": 0, "usage": 130, "overage": 30}
    clock["ms"] = ms("2024-01-16T12:05:00Z")
    assert value("customer-1", "gpt_4_tokens") == {"hasAccess": True, "balance": 15, "usage": 5, "overage": 0}


def test_late_grant_pays_back_overage(clock: dict[str, int]) -> None:
    """A.10 example 8."""
    feature()
    entitle("customer-1")
    grant("customer-1", "gpt_4_tokens", 100, NOW)
    usage(("customer-1", "2024-01-15T12:05:00Z", 120, "gpt-4"))
    clock["ms"] = ms("2024-01-15T12:10:00Z")
    assert value("customer-1", "gpt_4_tokens") == {"hasAccess": False, "balance": 0, "usage": 120, "overage": 20}
    grant("customer-1", "gpt_4_tokens", 50, "2024-01-15T12:10:00Z")
    assert value("customer-1", "gpt_4_tokens") == {"hasAccess": True, "balance": 30, "usage": 120, "overage": 0}
    # a future grant counts from its effectiveAt on
    grant("customer-1", "gpt_4_tokens", 1000, "2024-01-15T13:00:00Z")
    assert value("customer-1", "gpt_4_tokens")["balance"] == 30
    assert value("customer-1", "gpt_4_tokens", time="2024-01-15T13:00:00Z")["balance"] == 1030


def test_recurring_and_expiring_grants(clock: dict[str, int]) -> None:
    """A.10 example 7: a daily grant is back to its amount every day, mid-period; an expired grant is gone."""
    feature()
    entitle("customer-1")
    grant("customer-1", "gpt_4_tokens", 10, NOW, recurrence={"interval": "DAY"})
    grant("customer-1", "gpt_4_tokens", 5, NOW, priority=9, expiration={"duration": "HOUR", "count": 2})
    usage(("customer-1", "2024-01-15T12:30:00Z", 12, "gpt-4"), ("customer-1", "2024-01-16T12:30:00Z", 4, "gpt-4"))
    clock["ms"] = ms("2024-01-15T13:00:00Z")
    assert value("customer-1", "gpt_4_tokens") == {"hasAccess": True, "balance": 3, "usage": 12, "overage": 0}
    clock["ms"] = ms("2024-01-16T12:10:00Z")
    assert value("customer-1", "gpt_4_tokens") == {"hasAccess": True, "balance": 10, "usage": 12, "overage": 0}
    clock["ms"] = ms("2024-01-16T13:00:00Z")
    assert value("customer-1", "gpt_4_tokens") == {"hasAccess": True, "balance": 6, "usage": 16, "overage": 0}


# --- resets -------------------------------------------------------------------------------------------

def test_reset_moves_or_keeps_the_anchor(aws: Any, clock: dict[str, int]) -> None:
    feature()
    entitlement = entitle("customer-1", issueAfterReset=100)
    path = f"/api/v1/subjects/customer-1/entitlements/{entitlement['id']}"
    clock["ms"] = ms("2024-01-15T12:30:00Z")
    before = catalog(aws)
    for effective_at, reasons in (("2024-01-15T12:31:00Z", 1), ("2024-01-15T11:00:00Z", 2), (NOW, 1)):
        problem = refused(reset("customer-1", entitlement["id"], {"effectiveAt": effective_at}), 400, "effectiveAt")
        assert len(problem["errors"]) == reasons, problem
    for body, field in (({"retainAnchor": "yes"}, "retainAnchor"), ({"preserveOverage": 1}, "preserveOverage"),
                        ({"effectiveAt": "now"}, "effectiveAt"), ({"anchor": NOW}, "anchor")):
        refused(reset("customer-1", entitlement["id"], body), 400, field)
    refused(call(entitlements, "POST", f"{path}/reset", raw_body=b"[]", content_type=JSON), 400, "reset")
    refused(reset("customer-2", entitlement["id"]), 404, "entitlementId")
    refused(reset("customer-1", "01ARZ3NDEKTSV4RRFFQ69G5FAV"), 404, "entitlementId")
    refused(reset("customer-1", "gpt_4_tokens"), 404, "entitlementId")  # by id only
    assert catalog(aws) == before

    usage(("customer-1", "2024-01-15T12:05:00Z", 30, "gpt-4"), ("customer-1", "2024-01-15T12:25:00Z", 80, "gpt-4"))
    assert reset("customer-1", entitlement["id"], {"effectiveAt": "2024-01-15T12:20:30Z"}).status == 204
    shown = ok(send("GET", path))
    assert (shown["lastReset"], shown["usagePeriod"]["anchor"], shown["currentUsagePeriod"], shown["updatedAt"]) == (
        at("2024-01-15T12:20:00Z"), at("2024-01-15T12:20:00Z"),
        {"from": at("2024-01-15T12:20:00Z"), "to": at("2024-02-15T12:20:00Z")}, at("2024-01-15T12:30:00Z"))
    assert shown["measureUsageFrom"] == at(NOW)
    assert value("customer-1", "gpt_4_tokens") == {"hasAccess": True, "balance": 20, "usage": 80, "overage": 0}
    for effective_at, field_count in (("2024-01-15T12:20:00Z", 1), ("2024-01-15T12:10:00Z", 2)):
        problem = refused(reset("customer-1", entitlement["id"], {"effectiveAt": effective_at}), 400, "effectiveAt")
        assert len(problem["errors"]) == field_count, problem

    assert reset("customer-1", entitlement["id"], {"retainAnchor": True}).status == 204  # at now, 12:30
    shown = ok(send("GET", path))
    assert (shown["lastReset"], shown["usagePeriod"]["anchor"], shown["currentUsagePeriod"]) == (
        at("2024-01-15T12:30:00Z"), at("2024-01-15T12:20:00Z"),
        {"from": at("2024-01-15T12:30:00Z"), "to": at("2024-02-15T12:20:00Z")})
    assert value("customer-1", "gpt_4_tokens") == {"hasAccess": True, "balance": 100, "usage": 0, "overage": 0}
    # values before a reset still see the period they were in
    assert value("customer-1", "gpt_4_tokens", time="2024-01-15T12:19:00Z") == {
        "hasAccess": True, "balance": 70, "usage": 30, "overage": 0}
    # the retained cadence resets on Feb 15 12:20, the default grant refilled
    usage(("customer-1", "2024-01-15T12:35:00Z", 10, "gpt-4"))
    assert value("customer-1", "gpt_4_tokens", time="2024-01-15T12:40:00Z")["balance"] == 90
    assert value("customer-1", "gpt_4_tokens", time="2024-02-15T12:20:00Z") == {
        "hasAccess": True, "balance": 100, "usage": 0, "overage": 0}


# --- history ------------------------------------------------------------------------------------------

def test_history_windows(clock: dict[str, int]) -> None:
    feature()
    entitlement = entitle("customer-1", issueAfterReset=100)
    usage(("customer-1", "2024-01-15T13:10:00Z", 30, "gpt-4"), ("customer-1", "2024-01-15T15:20:00Z", 50, "gpt-4"),
          ("customer-1", "2024-01-15T18:45:00Z", 10, "gpt-4"), ("customer-1", "2024-01-15T19:00:00Z", 1, "gpt-3"))
    clock["ms"] = ms("2024-01-15T16:00:00Z")
    eid = entitlement["id"]

    def windows(**query: str) -> list[tuple[str, str, int, int]]:
        shown = ok(history("customer-1", eid, **query))["windowedHistory"]
        return [(w["period"]["from"], w["period"]["to"], w["usage"], w["balanceAtStart"]) for w in shown]
    hours = [(at(f"2024-01-15T{h}:00:00Z"), at(f"2024-01-15T{h + 1}:00:00Z"), u, b)
             for h, u, b in ((12, 0, 100), (13, 30, 100), (14, 0, 70), (15, 50, 70))]
    assert windows(windowSize="HOUR") == hours  # from lastReset to now
    assert windows(windowSize="HOUR", **{"from": NOW, "to": "2024-01-15T16:00:00Z"}) == hours
    assert windows(windowSize="HOUR", **{"from": "2024-01-15T12:00:30Z", "to": "2024-01-15T15:59:01Z"}) == hours
    assert windows(windowSize="MINUTE", **{"from": "2024-01-15T13:09:00Z", "to": "2024-01-15T13:12:00Z"}) == [
        (at("2024-01-15T13:09:00Z"), at("2024-01-15T13:10:00Z"), 0, 100),
        (at("2024-01-15T13:10:00Z"), at("2024-01-15T13:11:00Z"), 30, 100),
        (at("2024-01-15T13:11:00Z"), at("2024-01-15T13:12:00Z"), 0, 70)]
    assert windows(windowSize="HOUR", windowTimeZone="Asia/Kolkata",
                   **{"from": "2024-01-15T13:00:00Z", "to": "2024-01-15T15:00:00Z"}) == [
        (at("2024-01-15T13:00:00Z"), at("2024-01-15T13:30:00Z"), 30, 100),
        (at("2024-01-15T13:30:00Z"), at("2024-01-15T14:30:00Z"), 0, 70),
        (at("2024-01-15T14:30:00Z"), at("2024-01-15T15:00:00Z"), 0, 70)]

    clock["ms"] = ms("2024-01-17T00:00:00Z")
    assert windows(windowSize="DAY", windowTimeZone="Asia/Kolkata") == [
        (at(NOW), at("2024-01-15T18:30:00Z"), 80, 100),
        (at("2024-01-15T18:30:00Z"), at("2024-01-16T18:30:00Z"), 10, 20),
        (at("2024-01-16T18:30:00Z"), at("2024-01-17T00:00:00Z"), 0, 10)]
    assert windows(windowSize="DAY") == [(at(NOW), at("2024-01-16T00:00:00Z"), 90, 100),
                                         (at("2024-01-16T00:00:00Z"), at("2024-01-17T00:00:00Z"), 0, 10)]

    for query, status, field in (
            ({}, 400, "windowSize"), ({"windowSize": "WEEK"}, 400, "windowSize"),
            ({"windowSize": "DAY", "windowTimeZone": "Mars/Olympus_Mons"}, 400, "windowTimeZone"),
            ({"windowSize": "DAY", "windowTimeZone": "../etc/passwd"}, 400, "windowTimeZone"),
            ({"windowSize": "DAY", "from": "2024-01-15T11:59:00Z"}, 400, "from"),
            ({"windowSize": "DAY", "from": "2024-01-16T00:00:00Z", "to": "2024-01-15T13:00:00Z"}, 400, "from"),
            ({"windowSize": "DAY", "from": "yesterday"}, 400, "from"),
            ({"windowSize": "DAY", "colour": "red"}, 400, "colour")):
        refused(history("customer-1", eid, **query), status, field)
    refused(history("customer-1", "gpt_4_tokens", windowSize="DAY"), 404, "entitlementId")
    refused(history("customer-2", eid, windowSize="DAY"), 404, "entitlementId")


# --- namespace listings and customers ---------------------------------------------------------------------

def test_namespace_entitlement_listing(clock: dict[str, int]) -> None:
    gpt4 = feature()
    feature("sso", model=None)
    feature("payment-api-access", model=None)
    made = []
    for i, (subject, body) in enumerate([
            ("customer-1", METERED), ("customer-1", {"type": "boolean", "featureKey": "sso"}),
            ("customer-2", METERED), ("customer-2", {"type": "static", "featureKey": "payment-api-access",
                                                     "config": CONFIG})]):
        clock["ms"] = ms(NOW) + i * 1000
        made.append(entitle(subject, body)["id"])
    clock["ms"] = ms("2024-01-15T12:10:00Z")
    assert send("DELETE", f"/api/v1/subjects/customer-2/entitlements/{made[2]}").status == 204

    def listed(**query: str) -> list[str]:
        shown = ok(send("GET", "/api/v1/entitlements", query=query))
        return [e["id"] for e in (shown if isinstance(shown, list) else shown["items"])]
    assert listed() == made
    assert listed(excludeInactive="true") == [made[0], made[1], made[3]]
    assert listed(feature="gpt_4_tokens") == [made[0], made[2]]
    assert listed(feature=gpt4["id"], subject="customer-2") == [made[2]]
    assert listed(feature="sso,payment-api-access") == [made[1], made[3]]
    assert listed(subject="customer-1") == made[:2]
    assert listed(entitlementType="metered") == [made[0], made[2]]
    assert listed(entitlementType="static,boolean", order="DESC") == [made[3], made[1]]
    assert listed(limit="2", offset="1") == made[1:3]
    page = ok(send("GET", "/api/v1/entitlements", query={"page": "2", "pageSize": "3"}))
    assert (page["totalCount"], page["page"], page["pageSize"], [e["id"] for e in page["items"]]) == (
        4, 2, 3, [made[3]])
    assert listed(orderBy="updatedAt") == [made[0], made[1], made[3], made[2]]
    for query, field in (({"entitlementType": "credits"}, "entitlementType"), ({"pageSize": "1001"}, "pageSize"),
                         ({"orderBy": "id"}, "orderBy"), ({"excludeInactive": "1"}, "excludeInactive"),
                         ({"limit": "0"}, "limit"), ({"customer": "x"}, "customer")):
        refused(send("GET", "/api/v1/entitlements", query=query), 400, field)
    assert ok(send("GET", f"/api/v1/entitlements/{made[1]}"))["type"] == "boolean"
    for missing in ("01ARZ3NDEKTSV4RRFFQ69G5FAV", "sso"):
        refused(send("GET", f"/api/v1/entitlements/{missing}"), 404, "entitlementId")


def test_customer_aliases(clock: dict[str, int]) -> None:
    feature()
    feature("sso", model=None)
    feature("payment-api-access", model=None)
    entitle("acme", issueAfterReset=100)
    entitle("acme", {"type": "boolean", "featureKey": "sso"})
    static = entitle("acme", {"type": "static", "featureKey": "payment-api-access", "config": CONFIG})
    entitle("globex", {"type": "boolean", "featureKey": "sso"})
    usage(("acme", "2024-01-15T12:01:00Z", 25, "gpt-4"))
    clock["ms"] = ms("2024-01-15T12:05:00Z")

    def customer_value(customer: str, feature_key: str, **query: str) -> Any:
        return ok(send("GET", f"/api/v1/customers/{customer}/entitlements/{feature_key}/value", query=query or None))
    metered = {"hasAccess": True, "balance": 75, "usage": 25, "overage": 0}
    assert customer_value("acme", "gpt_4_tokens") == metered == value("acme", "gpt_4_tokens")
    assert customer_value("acme", "gpt_4_tokens", time="2024-01-15T12:00:30Z")["usage"] == 0
    assert customer_value("acme", "sso") == {"hasAccess": True}
    assert customer_value("acme", "payment-api-access") == {"hasAccess": True, "config": CONFIG}
    assert customer_value("globex", "gpt_4_tokens") == {"hasAccess": False}
    assert customer_value("initech", "sso") == {"hasAccess": False}
    assert customer_value("acme", "no_such_feature") == {"hasAccess": False}
    refused(send("GET", "/api/v1/customers/acme/entitlements/sso/value", query={"time": "noon"}), 400, "time")
    access = ok(send("GET", "/api/v1/customers/acme/access"))
    assert access == {"entitlements": {"gpt_4_tokens": metered, "sso": {"hasAccess": True},
                                       "payment-api-access": {"hasAccess": True, "config": CONFIG}}}
    assert ok(send("GET", "/api/v1/customers/initech/access")) == {"entitlements": {}}
    refused(send("GET", "/api/v1/customers/acme/access", query={"time": NOW}), 400, "time")
    assert send("DELETE", f"/api/v1/subjects/acme/entitlements/{static['id']}").status == 204
    assert set(ok(send("GET", "/api/v1/customers/acme/access"))["entitlements"]) == {"gpt_4_tokens", "sso"}
    assert customer_value("acme", "payment-api-access") == {"hasAccess": False}


# --- snapshots ----------------------------------------------------------------------------------------

def test_snapshots_give_the_values_a_fresh_computation_gives(aws: Any, clock: dict[str, int],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    feature()
    feature("gpt_4_copy", model="gpt-4")  # the same usage, a second entitlement never snapshotted
    body = {**METERED, "usagePeriod": {"interval": "DAY"}, "issueAfterReset": 100, "preserveOverageAtReset": True}
    first = entitle("customer-1", body)
    second = entitle("customer-1", body, featureKey="gpt_4_copy")
    for key in ("gpt_4_tokens", "gpt_4_copy"):
        grant("customer-1", key, 50, NOW, priority=2, maxRolloverAmount=50)
    usage(("customer-1", "2024-01-15T13:00:00Z", 120, "gpt-4"), ("customer-1", "2024-01-16T13:00:00Z", 150, "gpt-4"),
          ("customer-1", "2024-01-17T12:30:00Z", 40, "gpt-4"))

    def item(entitlement: dict[str, Any]) -> dict[str, Any]:
        found: dict[str, Any] = aws.get_item(TableName=os.environ["CATALOG_TABLE"], Key={
            "pk": {"S": "default#entitlement"}, "sk": {"S": f"id#{entitlement['id']}"}})["Item"]
        return found
    def numbers(entitlement: dict[str, Any], start: str) -> Any:
        """The history without grant ids (the two entitlements' grants differ only by them)."""
        shown = ok(history("customer-1", entitlement["id"], windowSize="HOUR", **{"from": start}))
        return shown["windowedHistory"], [(s["period"], s["usage"], s["overage"], s["balanceAtStart"],
                                           s["balanceAtEnd"]) for s in shown["burndownHistory"]]
    starts: list[int] = []

    class Reader(UsageReader):
        def query(self, namespace: str, meter: Any, query: Any, now_ms: int | None = None) -> Any:
            starts.append(query.from_ms)
            return super().query(namespace, meter, query, now_ms)
    monkeypatch.setattr(entitlements_service, "UsageReader", Reader)

    clock["ms"] = ms("2024-01-17T11:59:00Z")  # the Jan 16 boundary is not 24 h old yet
    assert value("customer-1", first["id"]) == {"hasAccess": False, "balance": 0, "usage": 150, "overage": 20}
    assert "balanceSnapshot" not in item(first)
    clock["ms"] = ms("2024-01-17T12:45:00Z")
    expected = {"hasAccess": True, "balance": 40, "usage": 40, "overage": 0}
    assert value("customer-1", first["id"]) == expected
    assert int(item(first)["snapshotAt"]["N"]) == ms("2024-01-16T12:00:00Z")
    assert "balanceSnapshot" in item(first) and "balanceSnapshot" not in item(second)

    usage(("customer-1", "2024-01-17T12:50:00Z", 5, "gpt-4"))
    clock["ms"] = ms("2024-01-17T13:00:00Z")
    starts.clear()
    expected = {"hasAccess": True, "balance": 35, "usage": 45, "overage": 0}
    assert value("customer-1", first["id"]) == expected  # from the snapshot
    assert value("customer-1", second["id"]) == expected  # from measureUsageFrom
    assert starts == [ms("2024-01-16T12:00:00Z"), ms(NOW)]
    for time in ("2024-01-16T12:30:00Z", "2024-01-15T20:00:00Z", "2024-01-17T12:00:00Z"):
        assert value("customer-1", first["id"], time=time) == value("customer-1", second["id"], time=time), time
    for start in ("2024-01-16T12:00:00Z", "2024-01-17T12:00:00Z"):  # from the snapshot on
        assert numbers(first, start) == numbers(second, start), start

    # a grant and a reset after the snapshot, then the same without it
    for key in ("gpt_4_tokens", "gpt_4_copy"):
        grant("customer-1", key, 7, "2024-01-17T12:00:00Z", recurrence={"interval": "DAY"})
    for entitlement in (first, second):
        assert reset("customer-1", entitlement["id"], {"retainAnchor": True, "preserveOverage": False}).status == 204
    clock["ms"] = ms("2024-01-19T13:00:00Z")
    assert value("customer-1", first["id"]) == value("customer-1", second["id"]) == {
        "hasAccess": True, "balance": 107, "usage": 0, "overage": 0}
    assert int(item(first)["snapshotAt"]["N"]) == int(item(second)["snapshotAt"]["N"]) == ms("2024-01-18T12:00:00Z")
    aws.update_item(TableName=os.environ["CATALOG_TABLE"], Key={
        "pk": {"S": "default#entitlement"}, "sk": {"S": f"id#{first['id']}"}},
        UpdateExpression="REMOVE balanceSnapshot, snapshotAt")
    starts.clear()
    assert value("customer-1", first["id"]) == {"hasAccess": True, "balance": 107, "usage": 0, "overage": 0}
    assert starts == [ms(NOW)]



def test_history_from_inside_a_segment_shows_that_part_only(clock: dict[str, int]) -> None:
    """The burn-down runs from before `from`; the first segment shown starts at `from`, with the balance,
    usage and grant usages from then on (as the windows say), not those of the whole segment."""
    feature()
    entitlement = entitle("customer-1", issueAfterReset=100)
    extra = grant("customer-1", "gpt_4_tokens", 50, NOW, priority=2)
    [default] = [g["id"] for g in ok(send("GET", "/api/v1/subjects/customer-1/entitlements/gpt_4_tokens/grants"))
                 if g["id"] != extra["id"]]
    usage(("customer-1", "2024-01-15T13:10:00Z", 90, "gpt-4"), ("customer-1", "2024-01-15T15:20:00Z", 50, "gpt-4"))
    clock["ms"] = ms("2024-01-15T16:00:00Z")
    shown = ok(history("customer-1", entitlement["id"], windowSize="HOUR", **{"from": "2024-01-15T14:00:00Z"}))
    assert [(w["usage"], w["balanceAtStart"]) for w in shown["windowedHistory"]] == [(0, 60), (50, 60)]
    assert shown["burndownHistory"] == [{
        "period": {"from": at("2024-01-15T14:00:00Z"), "to": at("2024-01-15T16:00:00Z")},
        "usage": 50, "overage": 0, "balanceAtStart": 60, "grantBalancesAtStart": {default: 10, extra["id"]: 50},
        "balanceAtEnd": 10, "grantBalancesAtEnd": {default: 0, extra["id"]: 10},
        "grantUsages": [{"grantId": default, "usage": 10}, {"grantId": extra["id"], "usage": 40}]}]
    whole = ok(history("customer-1", entitlement["id"], windowSize="HOUR"))["burndownHistory"]
    assert [(s["period"]["from"], s["usage"], s["balanceAtStart"], s["balanceAtEnd"]) for s in whole] == [
        (at(NOW), 140, 150, 10)]
    # a `from` on a segment's start, and one in a later segment
    grant("customer-1", "gpt_4_tokens", 5, "2024-01-15T15:00:00Z")
    later = ok(history("customer-1", entitlement["id"], windowSize="MINUTE",
                       **{"from": "2024-01-15T15:30:00Z", "to": "2024-01-15T15:32:00Z"}))["burndownHistory"]
    assert [(s["period"], s["usage"], s["balanceAtStart"]) for s in later] == [
        ({"from": at("2024-01-15T15:30:00Z"), "to": at("2024-01-15T15:32:00Z")}, 0, 15)]
    at_change = ok(history("customer-1", entitlement["id"], windowSize="HOUR",
                           **{"from": "2024-01-15T15:00:00Z"}))["burndownHistory"]
    assert [(s["period"]["from"], s["usage"], s["balanceAtStart"]) for s in at_change] == [
        (at("2024-01-15T15:00:00Z"), 50, 65)]


def test_times_beyond_what_periods_can_step_to_are_400(aws: Any, clock: dict[str, int]) -> None:
    """Calendar arithmetic stops at the year 9999: a burn-down never runs from before 1970 or to after
    the year 9000 (before, such a measureUsageFrom was stored and then failed every value and listing)."""
    feature()
    entitlement = entitle("customer-1", issueAfterReset=100)
    before = catalog(aws)
    for measure_from in ("9999-12-31T00:00:00Z", "0001-01-01T00:00:00Z", "1969-12-31T23:59:59Z"):
        refused(send("POST", "/api/v1/subjects/customer-2/entitlements",
                     {**METERED, "measureUsageFrom": measure_from}), 400, "measureUsageFrom")
    assert catalog(aws) == before
    value_path = f"/api/v1/subjects/customer-1/entitlements/{entitlement['id']}/value"
    for time in ("9999-12-31T23:59:59Z", "9000-01-01T00:00:00Z"):
        refused(send("GET", value_path, query={"time": time}), 400, "time")
        refused(send("GET", "/api/v1/customers/customer-1/entitlements/gpt_4_tokens/value", query={"time": time}),
                400, "time")
    refused(history("customer-1", entitlement["id"], windowSize="DAY", to="9999-12-31T00:00:00Z"), 400, "to")
    refused(history("customer-1", entitlement["id"], windowSize="DAY", **{"from": "9999-01-01T00:00:00Z",
                                                                        "to": "9999-12-28T00:00:00Z"}), 400, "from")
    assert value("customer-1", entitlement["id"], time="2500-01-01T00:00:00Z") == {
        "hasAccess": False, "balance": 0, "usage": 0, "overage": 0}  # the default grant expired in 2124
    early = entitle("customer-2", measureUsageFrom="1970-01-01T00:00:00Z", usagePeriod={"interval": "YEAR"})
    assert (early["measureUsageFrom"], early["currentUsagePeriod"]) == (
        "1970-01-01T00:00:00.000Z", {"from": at(NOW), "to": "2025-01-15T12:00:00.000Z"})
