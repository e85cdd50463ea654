"""API keys end to end inside one process: keys made by the service, resolved by the real authorizer
handler, and the HTTP handlers answering 401/403 or serving the key's namespace only; plus the local
gateway's side of the authorizer and `meterline keys` against a stack's outputs (moto)."""

from __future__ import annotations

import os
from typing import Any

import orjson
import pytest

from functions.api import handler as api
from functions.authorizer import handler as authorizer
from functions.ingest import handler as ingest
from functions.processor import handler as processor
from meterline import bootstrap
from meterline.domain.access import Scope, key_hash, key_id_of
from meterline.services import keys
from meterline.storage.keys_store import KeysStore
from meterline_local.http_gateway import LocalAuthorizer, build_v2_event
from tests.conftest import cloud_event, lambda_context, scan_all, stream_records
from tests.integration.http import Reply

NOW = 1_800_000_000_000
JSON = "application/json"
METER = {"slug": "calls", "eventType": "api-call", "aggregation": "COUNT"}


@pytest.fixture
def api_keys(aws: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("METERLINE_AUTH", "api-key")
    bootstrap.reset()
    yield KeysStore()
    bootstrap.reset()


def send(module: Any, method: str, path: str, key: str | None, body: Any = None,
         query: str = "") -> Reply:
    """A request as API Gateway hands it to the route: after the real authorizer ran on its header."""
    headers = [("content-type", JSON)] + ([("authorization", f"Bearer {key}")] if key else [])
    event = build_v2_event(method, path, query, headers, orjson.dumps(body) if body is not None else b"", None, {},
                           "127.0.0.1")
    if key is not None:
        answer = authorizer.handler({**event, "type": "REQUEST", "identitySource": [f"Bearer {key}"]},
                                    lambda_context("authorizer"))
        assert answer["isAuthorized"] is True
        event["requestContext"]["authorizer"] = {"lambda": answer["context"]}
    return Reply(module.handler(event, lambda_context()))


def problem(reply: Reply, status: int) -> str:
    assert reply.status == status, reply.body
    assert reply.content_type == "application/problem+json"
    detail: str = reply.json()["detail"]
    return detail


def test_keys_are_stored_as_hashes_listed_and_revoked(api_keys: KeysStore, aws: Any) -> None:
    made = keys.create_key(api_keys, "acme", "read", "dashboards", NOW)
    assert made.key.startswith("om_") and made.stored.key_id == key_id_of(key_hash(made.key))
    catalog = scan_all(aws, os.environ["CATALOG_TABLE"])
    assert made.key not in orjson.dumps(catalog).decode()  # only the hash is stored
    assert {item["pk"]["S"] for item in catalog} >= {f"$apikey#{made.stored.key_id}", "acme#apikey"}

    caller = keys.authenticate(api_keys, made.key, NOW + 1)
    assert caller is not None and (caller.namespace, caller.scope, caller.key_id) == (
        "acme", Scope.READ, made.stored.key_id)
    [listed] = keys.list_keys(api_keys, "acme")
    assert (listed.name, listed.last_used_ms, listed.revoked_ms) == ("dashboards", NOW + 1, None)
    keys.authenticate(api_keys, made.key, NOW + 30_000)  # within the minute: not written again
    assert api_keys.get(made.stored.key_id).last_used_ms == NOW + 1  # type: ignore[union-attr]
    keys.authenticate(api_keys, made.key, NOW + 61_001)
    assert api_keys.get(made.stored.key_id).last_used_ms == NOW + 61_001  # type: ignore[union-attr]
    assert keys.list_keys(api_keys, "other") == []

    revoked = keys.revoke_key(api_keys, made.stored.key_id, NOW + 70_000)
    assert revoked.revoked_ms == NOW + 70_000
    assert keys.authenticate(api_keys, made.key, NOW + 70_001) is None
    with pytest.raises(keys.KeyRequestError, match="revoked already"):
        keys.revoke_key(api_keys, made.stored.key_id, NOW)
    with pytest.raises(keys.KeyRequestError, match="does not exist"):
        keys.revoke_key(api_keys, "0" * 24, NOW)


def test_only_an_active_key_with_the_exact_hash_authenticates(api_keys: KeysStore) -> None:
    made = keys.create_key(api_keys, "acme", "admin", None, NOW)
    assert made.stored.name == "admin key"
    tampered = made.key[:-1] + ("A" if made.key[-1] != "A" else "B")
    for token in (None, "", "om_short", tampered, "Bearer " + made.key, made.key.upper()):
        assert keys.authenticate(api_keys, token, NOW) is None


@pytest.mark.parametrize(("namespace", "scope", "name", "message"), [
    ("Acme Corp", "admin", None, "namespace"), ("acme", "owner", None, "scope"), ("acme", "read", "x" * 129, "name"),
    ("acme", "read", "   ", "name"),
])
def test_bad_key_requests_are_refused(api_keys: KeysStore, aws: Any, namespace: str, scope: str, name: str | None,
                                      message: str) -> None:
    before = scan_all(aws, os.environ["CATALOG_TABLE"])
    with pytest.raises(keys.KeyRequestError, match=message):
        keys.create_key(api_keys, namespace, scope, name, NOW)
    assert scan_all(aws, os.environ["CATALOG_TABLE"]) == before


def test_the_authorizer_names_the_caller_or_no_one(api_keys: KeysStore) -> None:
    made = keys.create_key(api_keys, "acme", "ingest", None, NOW)
    context = lambda_context("authorizer")
    assert authorizer.handler({"headers": {"authorization": f"Bearer {made.key}"}}, context) == {
        "isAuthorized": True,
        "context": {"namespace": "acme", "scope": "ingest", "keyId": made.stored.key_id}}
    for headers in ({}, {"authorization": "Bearer om_" + "x" * 43}, {"authorization": made.key}):
        assert authorizer.handler({"headers": headers}, context) == {"isAuthorized": True, "context": {}}


def test_handlers_answer_401_and_403_and_serve_only_the_keys_namespace(api_keys: KeysStore, aws: Any) -> None:
    admin_a = keys.create_key(api_keys, "tenant-a", "admin", None, NOW).key
    admin_b = keys.create_key(api_keys, "tenant-b", "admin", None, NOW).key
    ingest_a = keys.create_key(api_keys, "tenant-a", "ingest", None, NOW).key
    read_a = keys.create_key(api_keys, "tenant-a", "read", None, NOW).key

    assert "API key is missing" in problem(send(api, "GET", "/api/v1/meters", None), 401)
    assert "API key is missing" in problem(send(api, "GET", "/api/v1/meters", "om_" + "z" * 43), 401)
    assert "ingest scope" in problem(send(api, "POST", "/api/v1/meters", ingest_a, METER), 403)
    assert "ingest scope" in problem(send(api, "GET", "/api/v1/meters", ingest_a), 403)
    assert "read scope" in problem(send(api, "POST", "/api/v1/meters", read_a, METER), 403)
    meters_before = [i for i in scan_all(aws, os.environ["CATALOG_TABLE"]) if i["pk"]["S"].endswith("#meter")]
    assert all(not i["pk"]["S"].startswith("tenant-") for i in meters_before)  # refused requests wrote nothing

    for admin in (admin_a, admin_b):  # the same slug in both namespaces
        assert send(api, "POST", "/api/v1/meters", admin, METER).status == 201
    events = [cloud_event(i, type="api-call", subject="customer-1", time="2026-01-15T08:00:00Z") for i in range(3)]
    assert send(ingest, "POST", "/api/v1/events", ingest_a, events).status == 204
    assert send(ingest, "POST", "/api/v1/events", admin_b, events[:1]).status == 204  # same ids, other tenant
    assert processor.handler({"Records": stream_records(os.environ["EVENTS_TABLE"])},
                             lambda_context()) == {"batchItemFailures": []}

    def total(key: str) -> float:
        reply = send(api, "GET", "/api/v1/meters/calls/query", key,
                     query="from=2026-01-15T00:00:00Z&to=2026-01-16T00:00:00Z")
        assert reply.status == 200, reply.body
        return sum(row["value"] for row in reply.json()["data"])

    assert (total(read_a), total(admin_b)) == (3, 1)
    listed = send(api, "GET", "/api/v1/events", read_a, query="from=2026-01-15T00:00:00Z&to=2026-01-16T00:00:00Z")
    assert sorted(e["event"]["id"] for e in listed.json()) == sorted(e["id"] for e in events)
    assert [m["slug"] for m in send(api, "GET", "/api/v1/meters", admin_b).json()] == ["calls"]
    assert send(api, "DELETE", "/api/v1/meters/calls", admin_b).status == 204
    assert send(api, "GET", "/api/v1/meters/calls", read_a).status == 200  # tenant-a's is untouched
    problem(send(api, "GET", "/api/v1/meters/calls", admin_b), 404)


def test_the_local_gateway_runs_the_authorizer_as_api_gateway_does() -> None:
    calls: list[dict[str, Any]] = []

    def invoke(event: dict[str, Any]) -> Any:
        calls.append(event)
        good = event["identitySource"] == ["Bearer good"]
        return {"isAuthorized": event["identitySource"] != ["Bearer denied"],
                "context": {"namespace": "acme", "scope": "read"} if good else {}}

    gateway = LocalAuthorizer(invoke, cache_s=60)

    def request(authorization: str | None) -> dict[str, Any]:
        headers = [("authorization", authorization)] if authorization else []
        return build_v2_event("GET", "/api/v1/meters", "", headers, b"", None, {}, "127.0.0.1")

    assert gateway.authorize(request(None)) == (401, {"content-type": "application/json"},
                                                b'{"message":"Unauthorized"}')
    assert calls == []  # no identity source: the authorizer is not called
    assert gateway.authorize(request("Bearer denied"))[0] == 403  # type: ignore[index]
    event = request("Bearer good")
    assert gateway.authorize(event) is None
    assert event["requestContext"]["authorizer"] == {"lambda": {"namespace": "acme", "scope": "read"}}
    assert calls[-1]["type"] == "REQUEST" and calls[-1]["routeArn"].endswith("GET/api/v1/meters")
    again = request("Bearer good")
    assert gateway.authorize(again) is None and len(calls) == 2  # cached per header value
    assert again["requestContext"]["authorizer"] == {"lambda": {"namespace": "acme", "scope": "read"}}


def test_keys_command_against_a_deployed_stack(api_keys: KeysStore, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`--stack`: the table comes from the stack's CatalogTableName output (CloudFormation stubbed:
    moto's CloudFormation needs more packages than this project installs)."""
    import boto3
    from botocore.stub import Stubber

    from meterline_local.cli import main

    cloudformation = boto3.client("cloudformation", region_name="us-east-1")
    stubs = Stubber(cloudformation)
    outputs = [{"OutputKey": "ApiUrl", "OutputValue": "https://x.execute-api.us-east-1.amazonaws.com/"},
               {"OutputKey": "CatalogTableName", "OutputValue": os.environ["CATALOG_TABLE"]}]
    described = {"Stacks": [{"StackName": "Meterline-prod", "CreationTime": "2026-01-01T00:00:00Z",
                             "StackStatus": "CREATE_COMPLETE", "Outputs": outputs}]}
    for _ in range(3):
        stubs.add_response("describe_stacks", described, {"StackName": "Meterline-prod"})
    stubs.add_client_error("describe_stacks", "ValidationError", "Stack with id Nope does not exist")
    stubs.activate()
    real_client = boto3.client
    monkeypatch.setattr(boto3, "client", lambda service, *args, **kwargs: cloudformation
                        if service == "cloudformation" else real_client(service, *args, **kwargs))

    assert main(["keys", "create", "--namespace", "acme", "--scope", "ingest", "--name", "edge", "--stack",
                 "Meterline-prod"]) == 0
    key = capsys.readouterr().out.splitlines()[-1]
    caller = keys.authenticate(api_keys, key, NOW)
    assert caller is not None and (caller.namespace, caller.scope) == ("acme", Scope.INGEST)
    assert main(["keys", "list", "--namespace", "acme", "--stack", "Meterline-prod"]) == 0
    listing = capsys.readouterr().out
    assert str(caller.key_id) in listing and "edge" in listing and key not in listing
    assert main(["keys", "revoke", str(caller.key_id), "--stack", "Meterline-prod"]) == 0
    assert keys.authenticate(api_keys, key, NOW) is None
    assert main(["keys", "list", "--namespace", "acme", "--stack", "Nope"]) == 2
    assert "cannot read stack Nope" in capsys.readouterr().err
