"""Portal tokens through the real API handler: made by an admin (with meter slugs checked), accepted on
the portal query route only, where the subject is always the token's, in open and in API-key mode."""

from __future__ import annotations

import os
from typing import Any

import orjson
import pytest

from functions.api import handler as api
from functions.ingest import handler as ingest
from functions.processor import handler as processor
from meterline import bootstrap
from meterline.services import keys
from meterline.storage.keys_store import KeysStore
from meterline.storage.meters_store import MetersStore
from meterline_local.http_gateway import build_v2_event
from tests.conftest import cloud_event, lambda_context, stream_records
from tests.integration.http import Reply

JSON = "application/json"
DAY = "from=2024-01-01T00:00:00Z&to=2024-01-02T00:00:00Z"


@pytest.fixture
def portal_aws(aws: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    import boto3

    arn = boto3.client("secretsmanager", region_name="us-east-1").create_secret(
        Name="portal", SecretString="portal-secret-" + "x" * 40)["ARN"]
    monkeypatch.setenv("PORTAL_SECRET_ARN", arn)
    MetersStore().set_backfill("default", "tokens_total", {"status": "completed"})
    bootstrap.reset()
    events = [cloud_event(i, subject=subject, time="2024-01-01T10:00:00Z", data={"tokens": tokens, "model": "gpt4",
                                                                                   "type": "input"})
              for i, (subject, tokens) in enumerate([("customer-1", 10), ("customer-1", 5), ("customer-2", 100)])]
    reply = Reply(ingest.handler(build_v2_event("POST", "/api/v1/events", "", [("content-type", JSON)],
                                                orjson.dumps(events), None, {}, "127.0.0.1"), lambda_context()))
    assert reply.status == 204
    assert processor.handler({"Records": stream_records(os.environ["EVENTS_TABLE"])},
                             lambda_context()) == {"batchItemFailures": []}
    yield aws
    bootstrap.reset()


def send(method: str, path: str, *, bearer: str | None = None, body: Any = None, query: str = "",
         authorizer: dict[str, Any] | None = None, accept: str | None = None) -> Reply:
    headers = [("content-type", JSON)]
    if bearer is not None:
        headers.append(("authorization", f"Bearer {bearer}"))
    if accept is not None:
        headers.append(("accept", accept))
    event = build_v2_event(method, path, query, headers, orjson.dumps(body) if body is not None else b"", None, {},
                           "127.0.0.1")
    if authorizer is not None:
        event["requestContext"]["authorizer"] = {"lambda": authorizer}
    return Reply(api.handler(event, lambda_context()))


def token(body: dict[str, Any], authorizer: dict[str, Any] | None = None) -> dict[str, Any]:
    reply = send("POST", "/api/v1/portal/tokens", body=body, authorizer=authorizer)
    assert reply.status == 200, reply.body
    made: dict[str, Any] = reply.json()
    return made


def test_a_portal_token_reads_its_subjects_usage_only(portal_aws: Any) -> None:
    made = token({"subject": "customer-1", "allowedMeterSlugs": ["tokens_total"]})
    assert set(made) == {"id", "subject", "expiresAt", "allowedMeterSlugs", "token"}
    path = "/api/v1/portal/meters/tokens_total/query"
    reply = send("GET", path, bearer=made["token"], query=DAY)
    assert reply.status == 200, reply.body
    assert [(r["subject"], r["value"]) for r in reply.json()["data"]] == [("customer-1", 15)]
    # asking for another subject changes nothing: the token's subject is forced
    forced = send("GET", path, bearer=made["token"], query=f"{DAY}&subject=customer-2&windowSize=HOUR")
    assert [(r["subject"], r["value"]) for r in forced.json()["data"]] == [("customer-1", 15)]
    csv = send("GET", path, bearer=made["token"], query=DAY, accept="text/csv")
    assert csv.status == 200 and csv.body.decode().splitlines()[1].endswith(",customer-1,15")

    for bearer in (None, "om_" + "k" * 43, made["token"][:-2] + "xx"):
        reply = send("GET", path, bearer=bearer, query=DAY)
        assert reply.status == 401 and reply.content_type == "application/problem+json"
    other = send("GET", "/api/v1/portal/meters/api_requests_total/query", bearer=made["token"], query=DAY)
    assert other.status == 401 and "not good for meter" in other.json()["detail"]


def test_portal_tokens_are_for_the_portal_route_only(portal_aws: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METERLINE_AUTH", "api-key")
    bootstrap.reset()
    admin = keys.create_key(KeysStore(), "default", "admin", None, 1)
    context = {"namespace": "default", "scope": "admin", "keyId": admin.stored.key_id}
    made = token({"subject": "customer-2"}, authorizer=context)
    # the API-key authorizer lets a non-key bearer through without a namespace
    assert send("GET", "/api/v1/meters", bearer=made["token"], authorizer={}).status == 401
    # an admin key is no portal token
    assert send("GET", "/api/v1/portal/meters/tokens_total/query", bearer="om_" + "a" * 43, authorizer=context,
                query=DAY).status == 401
    reply = send("GET", "/api/v1/portal/meters/tokens_total/query", bearer=made["token"], authorizer={}, query=DAY)
    assert [(r["subject"], r["value"]) for r in reply.json()["data"]] == [("customer-2", 100)]
    read_only = {**context, "scope": "read"}
    assert send("POST", "/api/v1/portal/tokens", body={"subject": "c"}, authorizer=read_only).status == 403


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"subject": "c", "allowedMeterSlugs": ["no_such_meter"]}, 404, "allowedMeterSlugs"),
    ({"subject": "c", "allowedMeterSlugs": []}, 400, "allowedMeterSlugs"),
    ({"allowedMeterSlugs": ["tokens_total"]}, 400, "subject"),
    ({"subject": "c", "expiresAt": "2000-01-01T00:00:00Z"}, 400, "expiresAt"),
])
def test_bad_token_requests_are_refused(portal_aws: Any, body: dict[str, Any], status: int, field: str) -> None:
    reply = send("POST", "/api/v1/portal/tokens", body=body)
    assert reply.status == status and field in [e["field"] for e in reply.json()["errors"]]
