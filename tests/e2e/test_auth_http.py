"""`meterline dev --auth` over HTTP, with keys made by `meterline keys create` while it runs: the
gateway's 401 without a key, the handlers' 401 for an unknown or revoked key and 403 for a scope that
does not cover the route, two namespaces that cannot see each other, and OpenMeter's SDK with a key."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.e2e.conftest import DevProcess, keys, new_key, wait_for

JSON = "application/json"
DAY = {"from": "2026-01-15T00:00:00Z", "to": "2026-01-16T00:00:00Z"}


def call(base: str, method: str, path: str, key: str | None = None, body: Any = None,
         query: str = "") -> tuple[int, str, Any]:
    headers = {"content-type": JSON}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    url = f"{base}{path}" + (f"?{query}" if query else "")
    data = orjson.dumps(body) if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return response.status, response.headers.get("content-type", ""), orjson.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, error.headers.get("content-type", ""), orjson.loads(raw) if raw else None


def test_the_stack_says_it_requires_keys_and_refuses_in_memory_auth(secured: tuple[str, Path]) -> None:
    refused = subprocess.run([sys.executable, "-m", "meterline_local.cli", "dev", "--auth", "--in-memory"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--auth needs a data directory" in refused.stderr


def test_requests_without_a_valid_key_are_401(secured: tuple[str, Path]) -> None:
    base, data_dir = secured
    assert call(base, "GET", "/api/v1/meters") == (401, JSON, {"message": "Unauthorized"})  # the gateway's own
    status, content_type, problem = call(base, "GET", "/api/v1/meters", "om_" + "q" * 43)
    assert (status, content_type) == (401, "application/problem+json")
    assert problem["type"] == "urn:meterline:problem:unauthenticated"
    unused = new_key(data_dir, "acme", "admin")
    listed = keys(data_dir, "list", "--namespace", "acme")
    key_id = next(line.split()[0] for line in listed.stdout.splitlines()[1:])
    assert keys(data_dir, "revoke", key_id).returncode == 0
    assert call(base, "GET", "/api/v1/meters", unused)[0] == 401  # never cached: refused at once


def test_scopes_and_namespaces(secured: tuple[str, Path]) -> None:
    base, data_dir = secured
    admin_a, admin_b = new_key(data_dir, "tenant-a", "admin"), new_key(data_dir, "tenant-b", "admin")
    ingest_a, read_a = new_key(data_dir, "tenant-a", "ingest"), new_key(data_dir, "tenant-a", "read")
    meter = {"slug": "calls", "eventType": "api-call", "aggregation": "COUNT"}

    status, content_type, problem = call(base, "POST", "/api/v1/meters", ingest_a, meter)
    assert (status, content_type) == (403, "application/problem+json")
    assert problem["type"] == "urn:meterline:problem:forbidden"
    assert call(base, "POST", "/api/v1/meters", read_a, meter)[0] == 403
    assert call(base, "GET", "/api/v1/meters", read_a)[2] == []  # nothing was created
    for admin in (admin_a, admin_b):  # the same slug in each namespace
        assert call(base, "POST", "/api/v1/meters", admin, meter)[0] == 201
    events = [{"specversion": "1.0", "type": "api-call", "id": f"call-{i}", "source": "e2e", "subject": "customer-1",
               "time": "2026-01-15T08:00:00Z"} for i in range(3)]
    assert call(base, "POST", "/api/v1/events", ingest_a, events)[0] == 204
    assert call(base, "POST", "/api/v1/events", admin_b, events[:1])[0] == 204  # same ids, other namespace
    assert call(base, "GET", "/api/v1/events", ingest_a)[0] == 403

    def total(key: str) -> float:
        status, _, result = call(base, "GET", "/api/v1/meters/calls/query", key,
                                 query=f"from={DAY['from']}&to={DAY['to']}")
        return sum(row["value"] for row in result["data"]) if status == 200 else -1

    assert wait_for(lambda: (total(read_a), total(admin_b)) == (3, 1), 60, "both namespaces counted")
    report = {"slug": "daily", "meterIdOrSlug": "calls", "schedule": {"interval": "1d", "startAt": DAY["from"]},
              "endpoint": {"url": "http://127.0.0.1:9/usage"}}
    assert call(base, "POST", "/api/v1/reports", admin_b, report)[0] == 201
    assert call(base, "GET", "/api/v1/reports", read_a)[2] == []
    assert [r["slug"] for r in call(base, "GET", "/api/v1/reports", admin_b)[2]] == ["daily"]
    assert call(base, "GET", "/api/v1/reports/daily", admin_a)[0] == 404


def test_openmeter_python_sdk_with_an_api_key(secured: tuple[str, Path]) -> None:
    from corehttp.exceptions import HttpResponseError
    from openmeter import Client

    base, data_dir = secured
    key = new_key(data_dir, "sdk", "admin")
    client = Client(endpoint=base, token=key)
    client.meters.create({"slug": "sdk_calls", "eventType": "sdk-call", "aggregation": "COUNT"})
    assert [m.slug for m in client.meters.list()] == ["sdk_calls"]
    with pytest.raises(HttpResponseError) as refused:
        Client(endpoint=base, token="om_" + "n" * 43).meters.list()
    assert refused.value.status_code == 401


def test_portal_tokens(secured: tuple[str, Path]) -> None:
    base, data_dir = secured
    admin, ingest_key = new_key(data_dir, "portal-ns", "admin"), new_key(data_dir, "portal-ns", "ingest")
    meter = {"slug": "portal_calls", "eventType": "portal-call", "aggregation": "COUNT"}
    assert call(base, "POST", "/api/v1/meters", admin, meter)[0] == 201
    events = [{"specversion": "1.0", "type": "portal-call", "id": f"p-{i}", "source": "e2e", "subject": subject,
               "time": "2026-01-15T08:00:00Z"} for i, subject in enumerate(["alice", "alice", "bob"])]
    assert call(base, "POST", "/api/v1/events", ingest_key, events)[0] == 204
    status, content_type, made = call(base, "POST", "/api/v1/portal/tokens", admin,
                                      {"subject": "alice", "allowedMeterSlugs": ["portal_calls"]})
    assert (status, content_type) == (200, JSON) and made["subject"] == "alice"
    assert call(base, "POST", "/api/v1/portal/tokens", ingest_key, {"subject": "alice"})[0] == 403

    def alice_usage() -> Any:
        status, _, result = call(base, "GET", "/api/v1/portal/meters/portal_calls/query", made["token"],
                                 query=f"from={DAY['from']}&to={DAY['to']}&subject=bob")
        return result["data"] if status == 200 and result["data"] else None

    assert [(r["subject"], r["value"]) for r in wait_for(alice_usage, 60, "alice's usage")] == [("alice", 2)]
    assert call(base, "GET", "/api/v1/meters", made["token"])[0] == 401
    assert call(base, "GET", "/api/v1/portal/meters/portal_calls/query", admin)[0] == 401


def test_an_exposed_open_stack_warns_and_refuses_loopback_webhooks() -> None:
    stack = DevProcess("--in-memory", "--host", "0.0.0.0").wait_started()
    try:
        assert any("without authentication" in line and "--auth" in line for line in stack.lines)
        assert any("open: no authentication" in line for line in stack.lines)
        report = {"slug": "loop", "meterIdOrSlug": "tokens_total",
                  "schedule": {"interval": "1h", "startAt": "2024-01-01T00:00:00Z"},
                  "endpoint": {"url": "http://127.0.0.1:9/usage"}}
        status, _, problem = call(stack.url, "POST", "/api/v1/reports", None, report)
        assert status == 400 and "endpoint.url" in [e["field"] for e in problem["errors"]]
    finally:
        assert stack.stop() == 0
