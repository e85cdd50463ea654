"""POST /api/v1/meters/{idOrSlug}/query: bodies that are not a JSON query object are refused precisely."""

from __future__ import annotations

from typing import Any

import pytest

from functions.api import handler as api
from tests.integration.http import call

PATH = "/api/v1/meters/tokens_total/query"


@pytest.mark.parametrize(("raw", "content_type", "status", "field"), [
    (b"[]", "application/json", 400, "query"),
    (b'"from"', "application/json", 400, "query"),
    (b"{", "application/json", 400, None),
    (b'{"from": "2024-01-01T00:00:00Z"}', "text/plain", 415, "Content-Type"),
    (b'{"subject": ["' + b"x" * 70_000 + b'"]}', "application/json", 413, None),
])
def test_bad_query_bodies(aws: Any, raw: bytes, content_type: str, status: int, field: str | None) -> None:
    reply = call(api, "POST", PATH, raw_body=raw, content_type=content_type)
    assert reply.status == status and reply.content_type == "application/problem+json"
    assert [e["field"] for e in reply.json().get("errors", [])] == ([field] if field else [])


def test_a_query_object_is_answered(aws: Any) -> None:
    reply = call(api, "POST", PATH, body={"from": "2024-01-01T00:00:00Z", "to": "2024-01-02T00:00:00Z"},
                 content_type="application/json")
    assert reply.status == 200 and reply.json()["data"] == []
