"""End to end over HTTP against `meterline dev`: the seeded example meters, the meters API, bad input,
and OpenMeter's own Python SDK (`client.meters.create/get/list/update/delete`)."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.conftest import cloud_event
from tests.e2e.test_local_stack_http import request, wait_listed

pytestmark = pytest.mark.e2e


def unique_slug(stem: str) -> str:
    return f"{stem}_{uuid.uuid4().hex[:8]}"


def post_meter(base: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    status, _, raw = request(f"{base}/api/v1/meters", "POST", json.dumps(body).encode(), "application/json")
    return status, json.loads(raw)


def test_the_example_meters_are_seeded(local_stack: str) -> None:
    status, _, body = request(f"{local_stack}/api/v1/meters")
    assert status == 200
    meters = {m["slug"]: m for m in json.loads(body)}
    assert {"tokens_total", "api_requests_total", "unique_sessions_total", "translate_tokens_total"} <= set(meters)
    tokens = meters["tokens_total"]
    assert tokens["eventType"] == "prompt" and tokens["aggregation"] == "SUM" and tokens["valueProperty"] == "$.tokens"
    assert tokens["groupBy"] == {"model": "$.model", "type": "$.type"} and tokens["description"] == "AI Token Usage"
    assert len(tokens["id"]) == 26 and tokens["createdAt"].endswith("Z") and "status" in tokens["backfill"]


def test_meter_lifecycle_over_http(local_stack: str) -> None:
    slug = unique_slug("gpu")
    body = {"slug": slug, "eventType": "gpu", "aggregation": "MAX", "valueProperty": "$.seconds",
            "groupBy": {"host": "$.host"}}
    status, meter = post_meter(local_stack, body)
    assert status == 201 and meter["slug"] == slug and meter["backfill"] == {"status": "pending"}
    assert post_meter(local_stack, body)[0] == 409

    for key in (slug, meter["id"]):
        status, _, raw = request(f"{local_stack}/api/v1/meters/{key}")
        assert status == 200 and json.loads(raw)["id"] == meter["id"]

    put = json.dumps({"name": "GPU", "groupBy": {"host": "$.host", "zone": "$.zone"}}).encode()
    status, _, raw = request(f"{local_stack}/api/v1/meters/{slug}", "PUT", put, "application/json")
    assert status == 200 and json.loads(raw)["groupBy"] == {"host": "$.host", "zone": "$.zone"}
    bad = json.dumps({"aggregation": "SUM"}).encode()
    status, headers, raw = request(f"{local_stack}/api/v1/meters/{slug}", "PUT", bad, "application/json")
    assert status == 400 and headers["content-type"] == "application/problem+json"
    assert json.loads(raw)["errors"][0]["field"] == "aggregation"

    status, _, raw = request(f"{local_stack}/api/v1/meters/{meter['id']}", "DELETE")
    assert (status, raw) == (204, b"")
    assert request(f"{local_stack}/api/v1/meters/{slug}")[0] == 404
    assert request(f"{local_stack}/api/v1/meters/{slug}", "DELETE")[0] == 404


@pytest.mark.parametrize(
    ("body", "content_type", "status", "field"),
    [
        (b"{oops", "application/json", 400, None),
        (json.dumps({"slug": "Bad Slug", "eventType": "x", "aggregation": "COUNT"}).encode(), "application/json",
         400, "slug"),
        (json.dumps({"slug": "a", "eventType": "x", "aggregation": "SUM"}).encode(), "application/json", 400,
         "valueProperty"),
        (json.dumps({"slug": "a", "eventType": "x", "aggregation": "COUNT", "id": "x"}).encode(), "application/json",
         400, "id"),
        (b'{"slug": "a"}', "text/plain", 415, "Content-Type"),
        (b'{"description": "' + b"x" * 70_000 + b'"}', "application/json", 413, None),
    ],
)
def test_bad_meters_over_http(local_stack: str, body: bytes, content_type: str, status: int,
                              field: str | None) -> None:
    got, headers, raw = request(f"{local_stack}/api/v1/meters", "POST", body, content_type)
    assert got == status and headers["content-type"] == "application/problem+json"
    if field:
        assert field in {e["field"] for e in json.loads(raw)["errors"]}


def test_a_new_meter_applies_to_the_events_listing(local_stack: str) -> None:
    event_type = unique_slug("evt")
    event = cloud_event(uuid.uuid4().hex, type=event_type, data={"n": "7"})
    window = {"from": "2024-01-01T00:00:00Z", "to": "2024-01-02T00:00:00Z", "id": event["id"]}
    status, _, _ = request(f"{local_stack}/api/v1/events", "POST", json.dumps(event).encode(), "application/json")
    assert status == 204
    [listed] = wait_listed(local_stack, {event["id"]}, **window)
    assert listed["validationError"] == f"no meter found for event type {event_type}"

    assert post_meter(local_stack, {"slug": event_type, "eventType": event_type, "aggregation": "SUM",
                                    "valueProperty": "$.n"})[0] == 201
    deadline = time.monotonic() + 5  # meters apply within the local stack's cache TTL (1 s)
    while True:
        [listed] = wait_listed(local_stack, {event["id"]}, **window)
        if "validationError" not in listed or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert "validationError" not in listed
    assert request(f"{local_stack}/api/v1/meters/{event_type}", "DELETE")[0] == 204


def test_openmeter_python_sdk_manages_meters(local_stack: str) -> None:
    from corehttp.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
    from openmeter import Client
    from openmeter.models import MeterCreate

    client = Client(endpoint=local_stack)
    slug = unique_slug("sdk_tokens")
    created = client.meters.create(MeterCreate(
        slug=slug, name="SDK tokens", description="tokens via the SDK", aggregation="SUM", event_type="prompt",
        value_property="$.tokens", group_by={"model": "$.model"}, event_from=datetime(2024, 1, 1, tzinfo=UTC),
        metadata={"team": "ai"},
    ))
    assert created.slug == slug and created.name == "SDK tokens" and created.aggregation == "SUM"
    assert created.event_type == "prompt" and created.value_property == "$.tokens"
    assert created.group_by == {"model": "$.model"} and created.event_from == datetime(2024, 1, 1, tzinfo=UTC)
    assert isinstance(created.created_at, datetime) and created.created_at.tzinfo is not None
    assert created.updated_at == created.created_at and len(created.id) == 26

    assert client.meters.get(slug).id == created.id
    assert client.meters.get(created.id).slug == slug
    listed = client.meters.list()
    assert slug in {m.slug for m in listed} and "tokens_total" in {m.slug for m in listed}
    assert [m.slug for m in client.meters.list(order_by="createdAt", order="DESC")][0] == slug

    with pytest.raises(ResourceExistsError):  # 409
        client.meters.create({"slug": slug, "aggregation": "COUNT", "eventType": "prompt"})
    with pytest.raises(HttpResponseError) as caught:  # 400
        client.meters.create({"slug": unique_slug("bad"), "aggregation": "SUM", "eventType": "prompt"})
    assert caught.value.status_code == 400

    updated = client.meters.update(slug, {"name": "Renamed", "groupBy": {"model": "$.model", "type": "$.type"}})
    assert updated.name == "Renamed" and updated.group_by == {"model": "$.model", "type": "$.type"}
    assert updated.updated_at >= created.updated_at and updated.created_at == created.created_at

    assert client.meters.delete(created.id) is None
    with pytest.raises(ResourceNotFoundError):
        client.meters.get(slug)
