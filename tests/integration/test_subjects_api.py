"""Subjects through the real handler: upsert (a JSON array, 200, ids and createdAt kept), list, get by
key or id, delete (204, usage untouched), and every refusal writes nothing."""

from __future__ import annotations

import os
from typing import Any

import pytest

from functions.entitlements import handler as entitlements
from tests.conftest import scan_all
from tests.integration.http import Reply, call

JSON = "application/json"


def send(method: str, path: str, body: Any = None, query: dict[str, str] | None = None) -> Reply:
    return call(entitlements, method, path, body=body, content_type=JSON, query=query)


def test_upsert_list_get_delete(aws: Any) -> None:
    reply = send("POST", "/api/v1/subjects", [
        {"key": "customer-1", "displayName": "ACME", "metadata": {"tier": "pro"},
         "currentPeriodStart": "2024-01-01T00:00:00Z", "currentPeriodEnd": "2024-02-01T00:00:00Z",
         "stripeCustomerId": "cus_1"},
        {"key": "customer-2"}])
    assert reply.status == 200, reply.body
    first, second = reply.json()
    assert (first["key"], first["displayName"], first["metadata"], first["stripeCustomerId"]) == (
        "customer-1", "ACME", {"tier": "pro"}, "cus_1")
    assert (first["currentPeriodStart"], first["currentPeriodEnd"]) == ("2024-01-01T00:00:00.000Z",
                                                                        "2024-02-01T00:00:00.000Z")
    assert set(second) == {"id", "key", "createdAt", "updatedAt"} and len(second["id"]) == 26

    again = send("POST", "/api/v1/subjects", [{"key": "customer-1", "displayName": "ACME Corp"}]).json()[0]
    assert (again["id"], again["createdAt"], again["displayName"]) == (first["id"], first["createdAt"], "ACME Corp")
    assert "metadata" not in again  # an upsert replaces

    assert [s["key"] for s in send("GET", "/api/v1/subjects").json()] == ["customer-1", "customer-2"]
    assert send("GET", "/api/v1/subjects/customer-1").json() == again
    assert send("GET", f"/api/v1/subjects/{first['id']}").json() == again
    assert send("DELETE", f"/api/v1/subjects/{second['id']}").status == 204
    assert send("GET", "/api/v1/subjects/customer-2").status == 404
    assert send("DELETE", "/api/v1/subjects/customer-2").status == 404
    assert [s["key"] for s in send("GET", "/api/v1/subjects").json()] == ["customer-1"]


@pytest.mark.parametrize(("body", "field"), [
    ({"key": "customer-1"}, "subjects"),
    ([], "subjects"),
    ([{"key": ""}], "key"),
    ([{"key": "c" * 257}], "key"),
    ([{"displayName": "no key"}], "key"),
    ([{"key": "a"}, {"key": "a"}], "key"),
    ([{"key": "a", "colour": "red"}], "colour"),
    ([{"key": "a", "currentPeriodStart": "soon"}], "currentPeriodStart"),
    ([{"key": "a", "id": "01ARZ3NDEKTSV4RRFFQ69G5FAV"}], "id"),
    ([{"key": f"k{i}"} for i in range(101)], "subjects"),
])
def test_bad_upserts_are_400_and_write_nothing(aws: Any, body: Any, field: str) -> None:
    before = scan_all(aws, os.environ["CATALOG_TABLE"])
    reply = send("POST", "/api/v1/subjects", body)
    assert reply.status == 400 and reply.content_type == "application/problem+json"
    assert field in [e["field"] for e in reply.json()["errors"]], reply.body
    assert scan_all(aws, os.environ["CATALOG_TABLE"]) == before


def test_a_bad_upsert_names_the_index_of_the_subject(aws: Any) -> None:
    reply = send("POST", "/api/v1/subjects", [{"key": "ok"}, {"key": 5}])
    assert [(e.get("index"), e["field"]) for e in reply.json()["errors"]] == [(1, "key")]
    assert send("GET", "/api/v1/subjects", query={"page": "1"}).status == 400
