"""Meter definitions from YAML and the reasons an event cannot be counted."""

from __future__ import annotations

import pytest

from meterline.domain.meters import MeterCatalog, load_meters_file, parse_meters, parse_number
from meterline.errors import InvalidInput
from tests.conftest import EXAMPLE_METERS


def test_example_config_loads_every_example_meter() -> None:
    meters = load_meters_file(EXAMPLE_METERS)
    slugs = {m.slug for m in meters}
    assert len(meters) == len(slugs) == 13
    assert {"tokens_total", "api_requests_total", "unique_sessions_total", "translate_tokens_total"} <= slugs
    catalog = MeterCatalog(meters)
    assert [c.meter.slug for c in catalog.for_event_type("request")] == [
        "api_requests_total", "api_request_duration_seconds", "api_request_ingress_bytes"]


@pytest.mark.parametrize(
    ("meter", "message"),
    [
        ({"slug": "Bad-Slug", "eventType": "x", "aggregation": "COUNT"}, "slug"),
        ({"slug": "a", "eventType": "x", "aggregation": "COUNT", "valueProperty": "$.v"}, "absent for COUNT"),
        ({"slug": "a", "eventType": "x", "aggregation": "SUM"}, "required for SUM"),
        ({"slug": "a", "eventType": "x", "aggregation": "SUM", "valueProperty": "v"}, "must start with $"),
        ({"slug": "a", "eventType": "x", "aggregation": "MEDIAN", "valueProperty": "$.v"}, "aggregation"),
        ({"slug": "a", "eventType": "x", "aggregation": "COUNT", "groupBy": {"1x": "$.a"}}, "key '1x'"),
        ({"slug": "a", "eventType": "x", "aggregation": "COUNT", "groupBy": {"k": "a"}}, "JSONPath"),
        ({"slug": "a", "eventType": "x", "aggregation": "SUM", "valueProperty": "$.v", "groupBy": {"k": "$.v"}},
         "differ from valueProperty"),
        ({"slug": "a", "aggregation": "COUNT"}, "eventType"),
    ],
)
def test_invalid_meters_are_refused_with_the_field(meter: dict, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_meters({"meters": [meter]})
    assert message in caught.value.detail
    assert caught.value.errors[0].index == 0


def test_duplicate_slugs_are_refused() -> None:
    meter = {"slug": "a", "eventType": "x", "aggregation": "COUNT"}
    with pytest.raises(InvalidInput, match="duplicate slug a"):
        parse_meters({"meters": [meter, meter]})


@pytest.mark.parametrize(
    ("raw", "value"),
    [(1, 1.0), (2.5, 2.5), ("123456", 123456.0), (" 7 ", 7.0), ("1e3", 1000.0), ("-0.5", -0.5),
     (True, None), (None, None), ("NaN", None), ("inf", None), ("1_000", None), ("12abc", None),
     (float("nan"), None), ([1], None), ({"a": 1}, None), ("", None)],
)
def test_parse_number(raw: object, value: float | None) -> None:
    assert parse_number(raw) == value


def test_validation_error_explains_why_an_event_is_not_counted() -> None:
    catalog = MeterCatalog(load_meters_file(EXAMPLE_METERS))
    assert catalog.validation_error("unknown", {}) == "no meter found for event type unknown"
    assert catalog.validation_error("prompt", {"tokens": "12", "model": "m"}) is None
    assert catalog.validation_error("prompt", {"tokens": "many"}) == (
        "meter tokens_total: valueProperty $.tokens is not a number: 'many'")
    assert catalog.validation_error("prompt", {}) == "meter tokens_total: valueProperty $.tokens is missing or null"
    assert catalog.validation_error("request", {"duration_seconds": 1}) == (
        "meter api_request_ingress_bytes: valueProperty $.ingress_bytes is missing or null")
    assert catalog.validation_error("login", {"session_id": 5}) is None
    assert "must be a scalar" in catalog.validation_error("login", {"session_id": {"a": 1}})


def test_general_jsonpath_is_supported() -> None:
    [meter] = parse_meters({"meters": [{"slug": "a", "eventType": "x", "aggregation": "SUM",
                                        "valueProperty": "$['usage']['tokens']"}]})
    catalog = MeterCatalog([meter])
    assert catalog.validation_error("x", {"usage": {"tokens": 3}}) is None
    assert catalog.validation_error("x", {"usage": {}}) is not None


# --- meters as managed resources: definitions, read-only fields, update rules ---------------------------------

from collections.abc import Iterable  # noqa: E402
from typing import Any  # noqa: E402

from meterline.domain.meters import (  # noqa: E402
    READ_ONLY_FIELDS,
    BackfillState,
    BackfillStatus,
    Meter,
    is_slug,
    is_ulid,
    meter_definition,
    new_meter,
    updated_meter,
)

ULID = "01HV5J8Z4V6K3M2N1P0Q9R8S7T"
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00.000Z
TOKENS = {"slug": "tokens_total", "eventType": "prompt", "aggregation": "SUM", "valueProperty": "$.tokens",
          "groupBy": {"model": "$.model", "type": "$.type"}}


def refused(raw: Any) -> dict[str, str]:
    """{field: reason} of an invalid definition."""
    with pytest.raises(InvalidInput) as caught:
        meter_definition(raw)
    return {e.field: e.reason for e in caught.value.errors}


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"slug": "Tokens"}, "slug", "must match ^[a-z0-9]+(?:_[a-z0-9]+)*$"),
        ({"slug": "a__b"}, "slug", "must match"),
        ({"slug": "_a"}, "slug", "must match"),
        ({"slug": "a" * 65}, "slug", "at most 64 characters"),
        ({"slug": None}, "slug", "must be a string"),
        ({"name": ""}, "name", "must not be empty"),
        ({"description": ""}, "description", "must not be empty"),
        ({"eventType": ""}, "eventType", "must not be empty"),
        ({"aggregation": "median"}, "aggregation", "'SUM', 'COUNT', 'UNIQUE_COUNT', 'AVG', 'MIN', 'MAX' or 'LATEST'"),
        ({"aggregation": "COUNT"}, "valueProperty", "must be absent for COUNT"),
        ({"valueProperty": None}, "valueProperty", "is required for SUM"),
        ({"valueProperty": ""}, "valueProperty", "is required for SUM"),
        ({"valueProperty": "tokens"}, "valueProperty", "must start with $"),
        ({"valueProperty": "$[?(@"}, "valueProperty", "simple member paths"),
        ({"groupBy": {"1model": "$.model"}}, "groupBy", "key '1model' must match"),
        ({"groupBy": {"mo-del": "$.model"}}, "groupBy", "key 'mo-del' must match"),
        ({"groupBy": {"model": "model"}}, "groupBy.model", "must be a JSONPath starting with $"),
        ({"groupBy": {"model": "$[?(@"}}, "groupBy.model", "simple member paths"),
        ({"groupBy": {"model": "$.tokens"}}, "groupBy.model", "must differ from valueProperty"),
        ({"groupBy": {"model": 3}}, "groupBy.model", "must be a string"),
        ({"groupBy": "model"}, "groupBy", "must be a JSON object"),
        ({"eventFrom": "2024-01-01"}, "eventFrom", "RFC 3339"),
        ({"eventFrom": 1704067200}, "eventFrom", "RFC 3339"),
        ({"windowSize": "MONTH"}, "windowSize", "'MINUTE', 'HOUR' or 'DAY'"),
        ({"metadata": {"k": 1}}, "metadata.k", "must be a string"),
        ({"metadata": ["k"]}, "metadata", "must be a JSON object"),
        ({"unit": "tokens"}, "unit", "is not a field of a meter"),
        ({"value_property": "$.tokens"}, "value_property", "is not a field of a meter"),
        ({"id": ULID}, "id", "is read-only"),
        ({"createdAt": "2024-01-01T00:00:00Z"}, "createdAt", "is read-only"),
        ({"updatedAt": "2024-01-01T00:00:00Z"}, "updatedAt", "is read-only"),
        ({"backfill": {"status": "pending"}}, "backfill", "is read-only"),
    ],
)
def test_each_invalid_field_is_named_with_its_reason(change: dict, field: str, reason: str) -> None:
    errors = refused({**TOKENS, **change})
    assert field in errors, errors
    assert reason in errors[field]


@pytest.mark.parametrize("missing", ["slug", "eventType", "aggregation"])
def test_required_fields(missing: str) -> None:
    assert refused({k: v for k, v in TOKENS.items() if k != missing}) == {missing: "is required"}


@pytest.mark.parametrize("raw", [[TOKENS], "meter", None, 3])
def test_a_definition_must_be_an_object(raw: Any) -> None:
    assert refused(raw) == {"meter": "must be a JSON object"}


def test_every_offending_field_is_reported_at_once() -> None:
    errors = refused({"slug": "Bad", "eventType": "", "aggregation": "COUNT", "valueProperty": "$.v", "id": ULID})
    assert set(errors) == {"slug", "eventType", "valueProperty", "id"}


@pytest.mark.parametrize("aggregation", ["SUM", "UNIQUE_COUNT", "AVG", "MIN", "MAX", "LATEST"])
def test_every_aggregation_but_count_needs_a_value_property(aggregation: str) -> None:
    meter = meter_definition({**TOKENS, "aggregation": aggregation})
    assert meter.aggregation == aggregation and meter.value_property == "$.tokens"
    assert "valueProperty" in refused({**TOKENS, "aggregation": aggregation, "valueProperty": None})


def test_count_takes_no_value_property_and_group_by_may_use_any_path() -> None:
    meter = meter_definition({"slug": "requests", "eventType": "request", "aggregation": "COUNT",
                              "groupBy": {"path": "$.path", "_x9": "$['a b']"}})
    assert meter.value_property is None and meter.to_api()["groupBy"] == {"path": "$.path", "_x9": "$['a b']"}


def test_a_valid_definition_is_echoed_in_openmeter_field_names() -> None:
    meter = meter_definition({**TOKENS, "name": "Tokens", "description": "AI tokens", "windowSize": "HOUR",
                              "eventFrom": "2024-01-01T05:30:00.123456+05:30", "metadata": {"team": "ai"}})
    assert meter.to_api() == {**TOKENS, "name": "Tokens", "description": "AI tokens", "windowSize": "HOUR",
                              "eventFrom": "2024-01-01T00:00:00.123Z", "metadata": {"team": "ai"}}


def test_new_meter_sets_the_read_only_fields() -> None:
    meter = new_meter(meter_definition(TOKENS), ULID, T0)
    assert meter.to_api() == {**TOKENS, "id": ULID, "name": "tokens_total", "createdAt": "2024-01-01T00:00:00.000Z",
                              "updatedAt": "2024-01-01T00:00:00.000Z", "backfill": {"status": "pending"}}
    assert new_meter(meter_definition({**TOKENS, "name": "Tokens"}), ULID, T0).name == "Tokens"
    assert Meter.model_validate(meter.to_api()) == meter  # what is stored reads back the same


def stored(**change: Any) -> Meter:
    meter = new_meter(meter_definition({**TOKENS, **change}), ULID, T0)
    return meter.model_copy(update={"backfill": BackfillStatus(status=BackfillState.COMPLETED)})


def test_update_replaces_the_mutable_fields() -> None:
    current = stored(name="Tokens", description="old", metadata={"a": "1"})
    after = updated_meter(current, {"name": "LLM tokens", "metadata": {"b": "2"}}, T0 + 1000)
    assert after.name == "LLM tokens" and after.description is None and after.metadata == {"b": "2"}
    assert after.updated_at == "2024-01-01T00:00:01.000Z" and after.created_at == current.created_at
    assert after.id == ULID and after.group_by == current.group_by and after.backfill == current.backfill
    assert updated_meter(current, {}, T0).name == "tokens_total"  # absent name: the slug
    assert updated_meter(current, {"name": None, "groupBy": None}, T0).group_by == current.group_by


def test_adding_group_by_keys_resets_the_backfill_to_pending() -> None:
    current = stored()
    after = updated_meter(current, {"groupBy": {**TOKENS["groupBy"], "region": "$.region"}}, T0)
    assert list(after.group_by) == ["model", "type", "region"]
    assert after.backfill == BackfillStatus(status=BackfillState.PENDING)
    assert updated_meter(current, {"groupBy": dict(TOKENS["groupBy"])}, T0).backfill == current.backfill


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"groupBy": {"model": "$.model"}}, "groupBy.type", "cannot be removed"),
        ({"groupBy": {"model": "$.m", "type": "$.type"}}, "groupBy.model", "cannot be changed"),
        ({"groupBy": {**TOKENS["groupBy"], "x-y": "$.x"}}, "groupBy", "must match"),
        ({"groupBy": {**TOKENS["groupBy"], "t": "$.tokens"}}, "groupBy.t", "must differ from valueProperty"),
        ({"groupBy": ["model"]}, "groupBy", "must be a JSON object"),
        ({"slug": "other"}, "slug", "cannot be changed"),
        ({"eventType": "completion"}, "eventType", "cannot be changed"),
        ({"aggregation": "AVG"}, "aggregation", "cannot be changed"),
        ({"valueProperty": "$.t"}, "valueProperty", "cannot be changed"),
        ({"eventFrom": "2024-01-01T00:00:00Z"}, "eventFrom", "cannot be changed"),
        ({"windowSize": "MINUTE"}, "windowSize", "cannot be changed"),
        ({"id": ULID}, "id", "is read-only"),
        ({"backfill": None}, "backfill", "is read-only"),
        ({"updatedAt": "2024-01-01T00:00:00.000Z"}, "updatedAt", "is read-only"),
        ({"deletedAt": None}, "deletedAt", "is not a field of a meter"),
        ({"name": ""}, "name", "must not be empty"),
        ({"metadata": {"k": False}}, "metadata.k", "must be a string"),
    ],
)
def test_update_refuses_what_it_may_not_change(body: dict, field: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        updated_meter(stored(), body, T0)
    errors = {e.field: e.reason for e in caught.value.errors}
    assert field in errors and reason in errors[field], errors


@pytest.mark.parametrize("body", [[], "x", None])
def test_an_update_must_be_an_object(body: Any) -> None:
    with pytest.raises(InvalidInput):
        updated_meter(stored(), body, T0)


def test_update_accepts_unchanged_immutable_fields() -> None:
    current = stored(eventFrom="2024-01-01T00:00:00Z")
    body = {k: v for k, v in current.to_api().items() if k not in READ_ONLY_FIELDS}
    after = updated_meter(current, {**body, "eventFrom": "2023-12-31T19:00:00-05:00", "description": "d"}, T0)
    assert after.description == "d"


def test_backfill_status_validation() -> None:
    status = BackfillStatus.model_validate({"status": "failed", "startedAt": "2024-01-01T00:00:00Z",
                                            "completedAt": "2024-01-01T00:00:01Z", "eventsScanned": 5,
                                            "error": "throttled"})
    assert status.model_dump(by_alias=True, exclude_none=True) == {
        "status": "failed", "startedAt": "2024-01-01T00:00:00.000Z", "completedAt": "2024-01-01T00:00:01.000Z",
        "eventsScanned": 5, "error": "throttled"}
    for bad in ({"status": "done"}, {"status": "running", "eventsScanned": -1}, {"status": "running", "x": 1},
                {"status": "running", "startedAt": "now"}, {}):
        with pytest.raises(ValueError):
            BackfillStatus.model_validate(bad)


def test_yaml_meters_may_not_set_read_only_fields() -> None:
    with pytest.raises(InvalidInput, match="meter 1: id is read-only"):
        parse_meters({"meters": [TOKENS, {**TOKENS, "slug": "b", "id": ULID}]})


def test_ids_and_slugs() -> None:
    assert is_ulid(ULID) and is_ulid(ULID.lower()) and is_ulid("0" * 26)
    assert not is_ulid("8" + ULID[1:]) and not is_ulid(ULID[:-1]) and not is_ulid(ULID[:-1] + "U")
    assert is_slug("tokens_total") and is_slug("0" * 26) and not is_slug("Tokens") and not is_slug("a" * 65)


# --- the HTTP-independent parts of the meters service ------------------------------------------------------

from meterline.domain.validation import validated  # noqa: E402
from meterline.services.meters import ListMetersQuery  # noqa: E402


def list_query(params: dict[str, str]) -> ListMetersQuery:
    return validated(ListMetersQuery, params, what="the query", root="query")


def test_list_query_orders_and_pages() -> None:
    meters = [new_meter(meter_definition({**TOKENS, "slug": slug, "name": name}), ULID, T0 + i)
              for i, (slug, name) in enumerate([("b", "x"), ("c", "z"), ("a", "y")])]
    assert [m.slug for m in list_query({}).apply(meters)] == ["a", "b", "c"]
    assert [m.slug for m in list_query({"orderBy": "name", "order": "desc"}).apply(meters)] == [
        "c", "a", "b"]
    assert [m.slug for m in list_query({"orderBy": "createdAt"}).apply(meters)] == ["b", "c", "a"]
    assert [m.slug for m in list_query({"pageSize": "2", "page": "2"}).apply(meters)] == ["c"]
    with pytest.raises(InvalidInput) as caught:
        list_query({"pageSize": "1001", "orderBy": "slug", "order": "sideways", "q": "x"})
    assert {e.field for e in caught.value.errors} == {"pageSize", "orderBy", "order", "q"}


# --- meter_source: the meters in force, cached per namespace ---------------------------------------------------

from meterline.services import meter_source  # noqa: E402


class CountingStore:
    """A fake MetersStore: the meters of each namespace, and how often they were read."""

    def __init__(self, meters: dict[str, Iterable[Meter]]) -> None:
        self.by_namespace = {ns: list(ms) for ns, ms in meters.items()}
        self.reads: list[str] = []

    def meters(self, namespace: str) -> list[Meter]:
        self.reads.append(namespace)
        return self.by_namespace.get(namespace, [])


@pytest.fixture
def fresh_cache(monkeypatch: pytest.MonkeyPatch):
    meter_source.invalidate()
    yield monkeypatch
    meter_source.invalidate()


def test_meter_catalog_is_cached_per_namespace_for_the_ttl(fresh_cache: pytest.MonkeyPatch) -> None:
    store = CountingStore({"a": [meter_definition(TOKENS)], "b": []})
    clock = [100.0]
    fresh_cache.setattr(meter_source.time, "monotonic", lambda: clock[0])
    fresh_cache.delenv("METERLINE_METER_CACHE_SECONDS", raising=False)

    first = meter_source.meter_catalog("a", store)  # type: ignore[arg-type]
    assert [c.meter.slug for c in first.for_event_type("prompt")] == ["tokens_total"]
    assert meter_source.meter_catalog("a", store) is first  # type: ignore[arg-type]
    assert meter_source.meter_catalog("b", store).for_event_type("prompt") == ()  # type: ignore[arg-type]
    assert store.reads == ["a", "b"]

    clock[0] += 29.9
    assert meter_source.meter_catalog("a", store) is first  # type: ignore[arg-type]
    clock[0] += 0.2  # past the default TTL of 30 s
    store.by_namespace["a"] = []
    assert meter_source.meter_catalog("a", store).for_event_type("prompt") == ()  # type: ignore[arg-type]
    assert store.reads == ["a", "b", "a"]


def test_meter_catalog_ttl_from_the_environment_and_invalidation(fresh_cache: pytest.MonkeyPatch) -> None:
    store = CountingStore({"a": []})
    clock = [0.0]
    fresh_cache.setattr(meter_source.time, "monotonic", lambda: clock[0])
    fresh_cache.setenv("METERLINE_METER_CACHE_SECONDS", "1")
    meter_source.meter_catalog("a", store)  # type: ignore[arg-type]
    clock[0] = 0.9
    meter_source.meter_catalog("a", store)  # type: ignore[arg-type]
    clock[0] = 1.1
    meter_source.meter_catalog("a", store)  # type: ignore[arg-type]
    assert store.reads == ["a", "a"]
    meter_source.invalidate("a")
    meter_source.meter_catalog("a", store)  # type: ignore[arg-type]
    assert store.reads == ["a", "a", "a"]


def test_a_read_overtaken_by_a_change_is_not_cached(fresh_cache: pytest.MonkeyPatch) -> None:
    class SlowStore(CountingStore):
        def meters(self, namespace: str) -> list[Meter]:
            result = super().meters(namespace)
            meter_source.invalidate(namespace)  # a meter changed while this read was under way
            return result

    store = SlowStore({"a": []})
    meter_source.meter_catalog("a", store)  # type: ignore[arg-type]
    meter_source.meter_catalog("a", store)  # type: ignore[arg-type]
    assert store.reads == ["a", "a"]
