"""Features through the real handler: create with OpenMeter's rules (key pattern with dashes, not a ULID,
meter SUM or COUNT, filters on the meter's groupBy keys), 409 naming the active feature with the key,
get by id or key, archive (404 after, key free again, hidden from lists unless includeArchived), and
the dual-mode list. Every refusal writes nothing."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

from functions.entitlements import handler as entitlements
from tests.conftest import scan_all
from tests.integration.http import Reply, call

JSON = "application/json"
TOKENS = {"key": "gpt-tokens", "name": "GPT tokens", "meterSlug": "tokens_total",
          "meterGroupByFilters": {"model": "gpt4"}, "metadata": {"tier": "pro"}}


def send(method: str, path: str, body: Any = None, query: dict[str, str] | None = None) -> Reply:
    return call(entitlements, method, path, body=body, content_type=JSON, query=query)


def create(body: dict[str, Any]) -> dict[str, Any]:
    reply = send("POST", "/api/v1/features", body)
    assert reply.status == 201, reply.body
    created: dict[str, Any] = reply.json()
    return created


def test_create_get_archive_and_reuse_a_key(aws: Any) -> None:
    feature = create(TOKENS)
    assert {k: feature[k] for k in TOKENS} == TOKENS and len(feature["id"]) == 26
    assert feature["createdAt"] == feature["updatedAt"] and "archivedAt" not in feature
    assert send("GET", f"/api/v1/features/{feature['id']}").json() == feature
    assert send("GET", "/api/v1/features/gpt-tokens").json() == feature

    taken = send("POST", "/api/v1/features", {**TOKENS, "name": "again"})
    assert taken.status == 409 and taken.json()["extensions"] == {"conflictingEntityId": feature["id"]}

    assert send("DELETE", "/api/v1/features/gpt-tokens").status == 204
    for path in (f"/api/v1/features/{feature['id']}", "/api/v1/features/gpt-tokens"):
        assert send("GET", path).status == 404
    assert send("DELETE", "/api/v1/features/gpt-tokens").status == 404
    assert send("GET", "/api/v1/features").json() == []
    [archived] = send("GET", "/api/v1/features", query={"includeArchived": "true"}).json()
    assert archived["id"] == feature["id"] and "archivedAt" in archived
    again = create(TOKENS)  # the key is free again
    assert again["id"] != feature["id"]


def test_static_features_need_no_meter(aws: Any) -> None:
    feature = create({"key": "payment-api-access", "name": "Payment API"})
    assert "meterSlug" not in feature


def test_one_key_one_active_feature_under_concurrent_creates(aws: Any) -> None:
    statuses: list[int] = []
    barrier = threading.Barrier(6)

    def attempt() -> None:
        barrier.wait()
        statuses.append(send("POST", "/api/v1/features", {"key": "race", "name": "race"}).status)

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201] + [409] * 5
    assert len(send("GET", "/api/v1/features").json()) == 1


def test_lists_filter_order_and_page(aws: Any) -> None:
    for key in ("b-feature", "a-feature", "c-feature"):
        create({"key": key, "name": key.upper(), **({"meterSlug": "tokens_total"} if key != "c-feature" else {})})
    keys = lambda reply: [f["key"] for f in (reply.json() if isinstance(reply.json(), list)  # noqa: E731
                                              else reply.json()["items"])]
    assert keys(send("GET", "/api/v1/features")) == ["b-feature", "a-feature", "c-feature"]  # createdAt
    assert keys(send("GET", "/api/v1/features", query={"orderBy": "key", "order": "DESC"})) == [
        "c-feature", "b-feature", "a-feature"]
    assert keys(send("GET", "/api/v1/features", query={"meterSlug": "tokens_total", "orderBy": "key"})) == [
        "a-feature", "b-feature"]
    assert keys(send("GET", "/api/v1/features", query={"limit": "1", "offset": "1", "orderBy": "key"})) == [
        "b-feature"]
    page = send("GET", "/api/v1/features", query={"page": "2", "pageSize": "2", "orderBy": "key"}).json()
    assert (page["totalCount"], page["page"], page["pageSize"], [f["key"] for f in page["items"]]) == (
        3, 2, 2, ["c-feature"])


@pytest.mark.parametrize(("body", "status", "field"), [
    ({**TOKENS, "key": "GPT"}, 400, "key"),
    ({**TOKENS, "key": "gpt_"}, 400, "key"),
    ({**TOKENS, "key": "01ARZ3NDEKTSV4RRFFQ69G5FAV"}, 400, "key"),
    ({**TOKENS, "key": "k" * 65}, 400, "key"),
    ({k: v for k, v in TOKENS.items() if k != "name"}, 400, "name"),
    ({**TOKENS, "id": "01ARZ3NDEKTSV4RRFFQ69G5FAV"}, 400, "id"),
    ({**TOKENS, "colour": "red"}, 400, "colour"),
    ({**TOKENS, "meterSlug": "no_such_meter"}, 404, "meterSlug"),
    ({**TOKENS, "meterSlug": "unique_sessions_total", "meterGroupByFilters": None}, 400, "meterSlug"),
    ({**TOKENS, "meterGroupByFilters": {"colour": "red"}}, 400, "meterGroupByFilters.colour"),
    ({"key": "static", "name": "s", "meterGroupByFilters": {"model": "gpt4"}}, 400, "meterGroupByFilters"),
    ({**TOKENS, "metadata": {"tier": 1}}, 400, "metadata.tier"),
])
def test_bad_features_are_refused_and_write_nothing(aws: Any, body: dict[str, Any], status: int,
                                                    field: str) -> None:
    before = scan_all(aws, os.environ["CATALOG_TABLE"])
    reply = send("POST", "/api/v1/features", body)
    assert reply.status == status, reply.body
    assert reply.content_type == "application/problem+json"
    assert field in [e["field"] for e in reply.json()["errors"]]
    assert scan_all(aws, os.environ["CATALOG_TABLE"]) == before


@pytest.mark.parametrize(("query", "field"), [
    ({"pageSize": "1001"}, "pageSize"), ({"page": "0"}, "page"), ({"order": "UP"}, "order"),
    ({"orderBy": "slug"}, "orderBy"), ({"includeArchived": "maybe"}, "includeArchived"), ({"limit": "0"}, "limit"),
    ({"bogus": "1"}, "bogus"),
])
def test_bad_list_parameters_are_400(aws: Any, query: dict[str, str], field: str) -> None:
    reply = send("GET", "/api/v1/features", query=query)
    assert reply.status == 400 and field in [e["field"] for e in reply.json()["errors"]]
