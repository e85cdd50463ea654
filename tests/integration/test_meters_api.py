"""The meters API through the real handler against moto: create, list, get by id and slug, update rules,
delete, and that every refused request leaves the catalog table exactly as it was.

Choice documented here: a create body that sets a read-only field (id, createdAt, updatedAt, backfill)
is refused with 400 naming the field, rather than silently ignored; so is a PUT body."""

from __future__ import annotations

import os
from typing import Any

import orjson
import pytest

from functions.api import handler as api
from meterline import bootstrap
from meterline.domain.meters import ULID_PATTERN
from meterline.services import meter_source
from meterline.services.meters import seed_meters, update_meter
from meterline.storage.meters_store import PENDING_BACKFILLS, MetersStore
from meterline_local.http_gateway import build_v2_event
from tests.conftest import lambda_context, scan_all
from tests.integration.http import Reply, call

CATALOG = os.environ["CATALOG_TABLE"]
NOW = "2024-01-01T00:00:00.000Z"
TOKENS = {
    "slug": "tokens_total",
    "description": "AI Token Usage",
    "eventType": "prompt",
    "aggregation": "SUM",
    "valueProperty": "$.tokens",
    "groupBy": {"model": "$.model", "type": "$.type"},
}


@pytest.fixture(autouse=True)
def example_meters() -> None:
    """These tests start from an empty catalog (overrides the seeding fixture of conftest.py)."""
    meter_source.invalidate()


def request(method: str, path: str, body: Any = None, *, content_type: str | None = "application/json",
            raw_body: bytes | None = None, query: dict[str, str] | None = None) -> Reply:
    return call(api, method, path, body=body, content_type=content_type, raw_body=raw_body, query=query)


def create(body: dict[str, Any]) -> dict[str, Any]:
    reply = request("POST", "/api/v1/meters", body)
    assert reply.status == 201, reply.body
    return reply.json()


def items(aws: Any) -> dict[str, dict[str, Any]]:
    """The catalog's meter items (not the markers of due backfills), by sort key."""
    return {item["sk"]["S"]: item for item in scan_all(aws, CATALOG) if item["pk"]["S"] != PENDING_BACKFILLS}


def pending_markers(aws: Any) -> set[str]:
    return {item["sk"]["S"] for item in scan_all(aws, CATALOG) if item["pk"]["S"] == PENDING_BACKFILLS}


def assert_problem(reply: Reply, status: int, *fields: str) -> dict[str, Any]:
    assert reply.status == status, reply.body
    assert reply.content_type == "application/problem+json"
    problem = reply.json()
    assert problem["status"] == status and problem["detail"]
    named = {e["field"] for e in problem.get("errors", [])}
    for field in fields:
        assert field in named, (field, problem)
    return problem


# --- create, get, list ------------------------------------------------------------------------------


def test_create_returns_201_with_the_stored_meter(aws) -> None:
    meter = create({**TOKENS, "eventFrom": "2024-01-01T01:00:00+01:00", "windowSize": "MINUTE",
                    "metadata": {"team": "ai"}})
    assert ULID_PATTERN.match(meter["id"]) and meter["id"] == meter["id"].upper()
    assert meter["createdAt"] == meter["updatedAt"] and meter["createdAt"].endswith("Z")
    assert meter == {
        **TOKENS,
        "id": meter["id"], "createdAt": meter["createdAt"], "updatedAt": meter["updatedAt"],
        "name": "tokens_total",  # defaults to the slug, as in OpenMeter
        "eventFrom": "2024-01-01T00:00:00.000Z",  # normalised to UTC with milliseconds
        "windowSize": "MINUTE",  # legacy, echoed
        "metadata": {"team": "ai"},
        "backfill": {"status": "pending"},  # a new meter sees history once its backfill completes
    }
    [item] = items(aws).values()
    assert pending_markers(aws) == {"default#tokens_total"}  # the backfill worker finds it there
    assert item["pk"]["S"] == "default#meter" and item["sk"]["S"] == "slug#tokens_total"
    assert item["id"]["S"] == meter["id"] and item["slug"]["S"] == "tokens_total" and item["version"]["N"] == "1"
    assert orjson.loads(item["meter"]["S"]) == meter


def test_get_by_id_and_by_slug(aws) -> None:
    meter = create(TOKENS)
    for key in (meter["id"], meter["id"].lower(), "tokens_total"):
        reply = request("GET", f"/api/v1/meters/{key}")
        assert reply.status == 200 and reply.json() == meter


def test_a_slug_of_26_digits_is_found_although_it_looks_like_a_ulid(aws) -> None:
    slug = "0" * 26
    meter = create({"slug": slug, "eventType": "x", "aggregation": "COUNT"})
    assert request("GET", f"/api/v1/meters/{slug}").json() == meter
    assert request("GET", f"/api/v1/meters/{meter['id']}").json() == meter


def test_list_orders_and_pages(aws) -> None:
    assert request("GET", "/api/v1/meters").json() == []
    for slug, name, aggregation in (("b_meter", "Alpha", "COUNT"), ("a_meter", "Zulu", "MAX"),
                                    ("c_meter", "Mike", "AVG")):
        body = {"slug": slug, "name": name, "eventType": "x", "aggregation": aggregation}
        if aggregation != "COUNT":
            body["valueProperty"] = "$.v"
        create(body)

    def slugs(**query: str) -> list[str]:
        reply = request("GET", "/api/v1/meters", query=query)
        assert reply.status == 200
        return [m["slug"] for m in reply.json()]

    assert slugs() == ["a_meter", "b_meter", "c_meter"]  # by slug (OpenMeter's "key") by default
    assert slugs(order="DESC") == ["c_meter", "b_meter", "a_meter"]
    assert slugs(orderBy="name") == ["b_meter", "c_meter", "a_meter"]
    assert slugs(orderBy="aggregation", order="DESC") == ["a_meter", "b_meter", "c_meter"]
    assert slugs(pageSize="2") == ["a_meter", "b_meter"]
    assert slugs(pageSize="2", page="2") == ["c_meter"]
    assert slugs(page="3", pageSize="2") == []
    assert slugs(includeDeleted="true") == ["a_meter", "b_meter", "c_meter"]


@pytest.mark.parametrize(
    ("query", "field"),
    [({"pageSize": "0"}, "pageSize"), ({"page": "x"}, "page"), ({"order": "UP"}, "order"),
     ({"orderBy": "slug"}, "orderBy"), ({"includeDeleted": "maybe"}, "includeDeleted"), ({"limit": "5"}, "limit")],
)
def test_bad_list_parameters_are_400(aws, query: dict[str, str], field: str) -> None:
    assert_problem(request("GET", "/api/v1/meters", query=query), 400, field)


def test_meters_are_per_namespace(aws, monkeypatch: pytest.MonkeyPatch) -> None:
    """With an authorizer that names the caller's namespace (here another Lambda authorizer's context)."""
    monkeypatch.setenv("METERLINE_AUTH", "lambda")
    bootstrap.reset()

    def in_namespace(namespace: str, method: str, path: str, body: Any = None) -> Reply:
        data = orjson.dumps(body) if body is not None else b""
        event = build_v2_event(method, path, "", [("content-type", "application/json")], data, None, {}, "127.0.0.1")
        event["requestContext"]["authorizer"] = {"lambda": {"namespace": namespace}}
        return Reply(api.handler(event, lambda_context()))

    theirs = in_namespace("tenant_b", "POST", "/api/v1/meters", TOKENS)
    assert theirs.status == 201
    assert in_namespace("default", "GET", "/api/v1/meters").json() == []
    assert_problem(in_namespace("default", "GET", f"/api/v1/meters/{theirs.json()['id']}"), 404, "idOrSlug")
    assert_problem(in_namespace("default", "DELETE", "/api/v1/meters/tokens_total"), 404)
    mine = in_namespace("default", "POST", "/api/v1/meters", TOKENS).json()  # the same slug is no conflict
    assert mine["id"] != theirs.json()["id"]
    assert [m["id"] for m in in_namespace("tenant_b", "GET", "/api/v1/meters").json()] == [theirs.json()["id"]]
    assert {item["pk"]["S"] for item in scan_all(aws, CATALOG)} == {"default#meter", "tenant_b#meter",
                                                                     PENDING_BACKFILLS}


# --- bad input: 400/409/413/415, nothing written -----------------------------------------------------------

BAD_CREATES = [
    ({**TOKENS, "slug": "Tokens-Total"}, "slug"),
    ({**TOKENS, "slug": "a" * 65}, "slug"),
    ({**TOKENS, "slug": "trailing_"}, "slug"),
    ({k: v for k, v in TOKENS.items() if k != "slug"}, "slug"),
    ({k: v for k, v in TOKENS.items() if k != "eventType"}, "eventType"),
    ({**TOKENS, "eventType": ""}, "eventType"),
    ({**TOKENS, "eventType": 5}, "eventType"),
    ({**TOKENS, "aggregation": "MEDIAN"}, "aggregation"),
    ({k: v for k, v in TOKENS.items() if k != "aggregation"}, "aggregation"),
    ({**TOKENS, "aggregation": "COUNT"}, "valueProperty"),  # COUNT takes no valueProperty
    ({k: v for k, v in TOKENS.items() if k != "valueProperty"}, "valueProperty"),
    ({**TOKENS, "valueProperty": "tokens"}, "valueProperty"),
    ({**TOKENS, "valueProperty": "$[?(@"}, "valueProperty"),
    ({**TOKENS, "groupBy": {"1model": "$.model"}}, "groupBy"),
    ({**TOKENS, "groupBy": {"model": "model"}}, "groupBy.model"),
    ({**TOKENS, "groupBy": {"model": "$.tokens"}}, "groupBy.model"),  # same as valueProperty
    ({**TOKENS, "groupBy": {"model": 1}}, "groupBy.model"),
    ({**TOKENS, "groupBy": ["$.model"]}, "groupBy"),
    ({**TOKENS, "eventFrom": "yesterday"}, "eventFrom"),
    ({**TOKENS, "windowSize": "WEEK"}, "windowSize"),
    ({**TOKENS, "metadata": {"team": 1}}, "metadata.team"),
    ({**TOKENS, "metadata": "team"}, "metadata"),
    ({**TOKENS, "name": ""}, "name"),
    ({**TOKENS, "description": ["x"]}, "description"),
    ({**TOKENS, "unit": "tokens"}, "unit"),  # unknown fields are refused
    ({**TOKENS, "event_type": "prompt"}, "event_type"),  # only OpenMeter's camelCase names
    ({**TOKENS, "id": "01HZZZZZZZZZZZZZZZZZZZZZZZ"}, "id"),  # read-only fields are refused, not ignored
    ({**TOKENS, "createdAt": NOW}, "createdAt"),
    ({**TOKENS, "updatedAt": NOW}, "updatedAt"),
    ({**TOKENS, "backfill": {"status": "completed"}}, "backfill"),
]


@pytest.mark.parametrize(("body", "field"), BAD_CREATES)
def test_invalid_create_is_400_naming_the_field_and_writes_nothing(aws, body: dict, field: str) -> None:
    assert_problem(request("POST", "/api/v1/meters", body), 400, field)
    assert items(aws) == {}


@pytest.mark.parametrize(
    ("raw_body", "content_type", "status"),
    [
        (b"{oops", "application/json", 400),
        (b"", "application/json", 400),
        (b"[]", "application/json", 400),
        (b"null", "application/json", 400),
        (b'"meter"', "application/json", 400),
        (orjson.dumps(TOKENS), "text/plain", 415),
        (orjson.dumps(TOKENS), None, 415),
        (orjson.dumps(TOKENS), "application/cloudevents+json", 415),
        (orjson.dumps({**TOKENS, "description": "x" * 70_000}), "application/json", 413),
    ],
)
def test_malformed_bodies_are_refused_and_write_nothing(aws, raw_body: bytes, content_type: str | None,
                                                         status: int) -> None:
    assert_problem(request("POST", "/api/v1/meters", raw_body=raw_body, content_type=content_type), status)
    assert items(aws) == {}


def test_content_type_with_charset_is_accepted(aws) -> None:
    reply = request("POST", "/api/v1/meters", raw_body=orjson.dumps(TOKENS),
                    content_type="application/json; charset=utf-8")
    assert reply.status == 201


def test_duplicate_slug_is_409_and_changes_nothing(aws) -> None:
    create(TOKENS)
    before = items(aws)
    problem = assert_problem(request("POST", "/api/v1/meters", {**TOKENS, "eventType": "other"}), 409, "slug")
    assert "tokens_total" in problem["detail"]
    assert items(aws) == before


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
@pytest.mark.parametrize("key", ["no_such_meter", "01HZZZZZZZZZZZZZZZZZZZZZZZ", "Not-A-Slug", "x" * 300])
def test_unknown_meter_is_404(aws, method: str, key: str) -> None:
    create(TOKENS)
    before = items(aws)
    body = {"name": "x"} if method == "PUT" else None
    assert_problem(request(method, f"/api/v1/meters/{key}", body), 404, "idOrSlug")
    assert items(aws) == before


# --- update -------------------------------------------------------------------------------------------------


def test_update_changes_name_description_metadata(aws) -> None:
    meter = create({**TOKENS, "metadata": {"a": "1"}})
    MetersStore().set_backfill("default", "tokens_total", {"status": "completed", "completedAt": NOW})
    reply = request("PUT", f"/api/v1/meters/{meter['id']}",
                    {"name": "Tokens", "description": "LLM tokens", "metadata": {"b": "2"}})
    assert reply.status == 200
    updated = reply.json()
    assert updated == {**meter, "name": "Tokens", "description": "LLM tokens", "metadata": {"b": "2"},
                       "updatedAt": updated["updatedAt"],
                       "backfill": {"status": "completed", "completedAt": NOW}}  # untouched
    assert updated["updatedAt"] >= meter["updatedAt"] and updated["createdAt"] == meter["createdAt"]
    assert request("GET", "/api/v1/meters/tokens_total").json() == updated
    [item] = items(aws).values()
    assert item["version"]["N"] == "3"  # create, backfill status, update


def test_update_replaces_name_description_and_metadata_and_keeps_group_by(aws) -> None:
    create({**TOKENS, "name": "Tokens", "metadata": {"a": "1"}})
    updated = request("PUT", "/api/v1/meters/tokens_total", {}).json()
    assert updated["name"] == "tokens_total"  # absent name: the slug, as OpenMeter does
    assert "description" not in updated and "metadata" not in updated
    assert updated["groupBy"] == TOKENS["groupBy"]  # absent groupBy: unchanged (keys cannot be removed)


def test_update_may_repeat_immutable_fields_unchanged(aws) -> None:
    meter = create({**TOKENS, "eventFrom": "2024-01-01T00:00:00Z", "windowSize": "HOUR"})
    body = {k: v for k, v in meter.items() if k not in ("id", "createdAt", "updatedAt", "backfill")}
    reply = request("PUT", "/api/v1/meters/tokens_total", {**body, "eventFrom": "2024-01-01T02:00:00+02:00",
                                                             "name": "Renamed"})
    assert reply.status == 200 and reply.json()["name"] == "Renamed"


def test_adding_group_by_keys_resets_the_backfill(aws) -> None:
    create(TOKENS)
    MetersStore().set_backfill("default", "tokens_total", {"status": "completed", "completedAt": NOW,
                                                           "eventsScanned": 42})
    reply = request("PUT", "/api/v1/meters/tokens_total",
                    {"groupBy": {**TOKENS["groupBy"], "region": "$.region"}})
    assert reply.status == 200
    assert reply.json()["groupBy"] == {"model": "$.model", "type": "$.type", "region": "$.region"}
    assert reply.json()["backfill"] == {"status": "pending"}


BAD_UPDATES = [
    ({"groupBy": {"model": "$.model"}}, "groupBy.type"),  # removing a key
    ({"groupBy": {}}, "groupBy.model"),
    ({"groupBy": {"model": "$.llm", "type": "$.type"}}, "groupBy.model"),  # changing a key's path
    ({"groupBy": {**TOKENS["groupBy"], "2x": "$.x"}}, "groupBy"),
    ({"groupBy": {**TOKENS["groupBy"], "tokens": "$.tokens"}}, "groupBy.tokens"),  # = valueProperty
    ({"groupBy": {**TOKENS["groupBy"], "region": "region"}}, "groupBy.region"),
    ({"eventType": "completion"}, "eventType"),
    ({"aggregation": "MAX"}, "aggregation"),
    ({"valueProperty": "$.count"}, "valueProperty"),
    ({"valueProperty": None}, "valueProperty"),
    ({"slug": "renamed"}, "slug"),
    ({"eventFrom": "2024-01-01T00:00:00Z"}, "eventFrom"),
    ({"windowSize": "DAY"}, "windowSize"),
    ({"id": "01HZZZZZZZZZZZZZZZZZZZZZZZ"}, "id"),
    ({"backfill": {"status": "completed"}}, "backfill"),
    ({"createdAt": NOW}, "createdAt"),
    ({"unit": "tokens"}, "unit"),
    ({"name": ""}, "name"),
    ({"name": 7}, "name"),
    ({"metadata": {"a": 1}}, "metadata.a"),
]


@pytest.mark.parametrize(("body", "field"), BAD_UPDATES)
def test_invalid_update_is_400_naming_the_field_and_changes_nothing(aws, body: dict, field: str) -> None:
    create(TOKENS)
    before = items(aws)
    assert_problem(request("PUT", "/api/v1/meters/tokens_total", body), 400, field)
    assert items(aws) == before


@pytest.mark.parametrize(
    ("raw_body", "content_type", "status"),
    [(b"{oops", "application/json", 400), (b"[]", "application/json", 400), (b"{}", "text/plain", 415),
     (b'{"description": "' + b"x" * 70_000 + b'"}', "application/json", 413)],
)
def test_malformed_update_bodies_change_nothing(aws, raw_body: bytes, content_type: str, status: int) -> None:
    create(TOKENS)
    before = items(aws)
    assert_problem(request("PUT", "/api/v1/meters/tokens_total", raw_body=raw_body, content_type=content_type),
                   status)
    assert items(aws) == before


def test_update_retries_when_the_meter_changed_between_read_and_write(aws) -> None:
    create(TOKENS)

    class RacingStore(MetersStore):
        """The backfill worker records progress right after the update read the meter."""

        raced = False

        def replace(self, namespace, meter, expected_version):  # type: ignore[no-untyped-def]
            if not self.raced:
                self.raced = True
                assert self.set_backfill(namespace, "tokens_total", {"status": "running", "startedAt": NOW})
            return super().replace(namespace, meter, expected_version)

    updated = update_meter(RacingStore(), "default", "tokens_total", {"name": "Tokens"}, 1_704_067_300_000)
    assert updated.name == "Tokens" and updated.backfill.status == "running"
    stored = request("GET", "/api/v1/meters/tokens_total").json()
    assert stored["name"] == "Tokens" and stored["backfill"] == {"status": "running", "startedAt": NOW}


# --- delete -------------------------------------------------------------------------------------------------


def test_delete_by_slug_and_by_id(aws) -> None:
    first = create(TOKENS)
    reply = request("DELETE", "/api/v1/meters/tokens_total")
    assert (reply.status, reply.body) == (204, b"")
    assert items(aws) == {}
    assert_problem(request("DELETE", "/api/v1/meters/tokens_total"), 404)
    assert_problem(request("GET", f"/api/v1/meters/{first['id']}"), 404)

    second = create(TOKENS)  # the slug is free again; the new meter is a new meter
    assert second["id"] != first["id"]
    assert request("DELETE", f"/api/v1/meters/{second['id']}").status == 204
    assert items(aws) == {}


# --- the store's backfill hook, seeding, and the meters in force ---------------------------------------------


def test_set_backfill_and_its_guards(aws) -> None:
    meter = create(TOKENS)
    store = MetersStore()
    updated = store.set_backfill("default", "tokens_total",
                                 {"status": "running", "startedAt": "2024-01-01T01:00:00+01:00", "eventsScanned": 0})
    assert updated is not None and updated.backfill.started_at == NOW
    other_id = "01HZZZZZZZZZZZZZZZZZZZZZZZ"
    assert store.set_backfill("default", "tokens_total", {"status": "completed"}, meter_id=other_id) is None
    assert store.set_backfill("default", "tokens_total", {"status": "completed"}, group_by=["model"]) is None
    assert store.set_backfill("default", "missing", {"status": "completed"}) is None
    done = store.set_backfill("default", "tokens_total", {"status": "completed", "eventsScanned": 10},
                              meter_id=meter["id"], group_by=["type", "model"])
    assert done is not None
    shown = request("GET", "/api/v1/meters/tokens_total").json()
    assert shown["backfill"] == {"status": "completed", "eventsScanned": 10}
    assert shown["updatedAt"] == meter["updatedAt"]  # progress is not a change of the meter
    for bad in ({"status": "done"}, {"status": "failed", "eventsScanned": -1}, {"status": "failed", "x": 1}):
        with pytest.raises(ValueError):
            store.set_backfill("default", "tokens_total", bad)


def test_seeding_creates_missing_meters_and_leaves_existing_ones(aws) -> None:
    from meterline.domain.meters import load_meters_file
    from tests.conftest import EXAMPLE_METERS

    create({**TOKENS, "name": "Mine", "groupBy": {}})
    declared = load_meters_file(EXAMPLE_METERS)
    created = seed_meters(MetersStore(), "default", declared, 1_704_067_200_000)
    assert len(created) == len(declared) - 1 and "tokens_total" not in created
    assert request("GET", "/api/v1/meters/tokens_total").json()["name"] == "Mine"
    assert seed_meters(MetersStore(), "default", declared, 1_704_067_200_000) == []
    assert len(request("GET", "/api/v1/meters").json()) == len(declared)


def test_meters_changed_through_the_api_apply_to_the_events_listing_at_once(aws) -> None:
    from functions.ingest import handler as ingest
    from functions.processor import handler as processor
    from tests.conftest import cloud_event, stream_records

    assert call(ingest, "POST", "/api/v1/events", body=[cloud_event(1)], content_type="application/json").status == 204
    processor.handler({"Records": stream_records(os.environ["EVENTS_TABLE"])}, lambda_context())
    window = {"from": "2024-01-01T00:00:00Z", "to": "2024-01-02T00:00:00Z"}

    def validation_error() -> str | None:
        [listed] = call(api, "GET", "/api/v1/events", query=window).json()
        return listed.get("validationError")

    assert validation_error() == "no meter found for event type prompt"
    create(TOKENS)
    assert validation_error() is None
    request("DELETE", "/api/v1/meters/tokens_total")
    assert validation_error() == "no meter found for event type prompt"
