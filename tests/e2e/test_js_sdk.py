"""OpenMeter's JS SDK (`@openmeter/sdk`, pinned in package.json) against `meterline dev`: ingestion (one
event and a batch with a duplicate), meters, a windowed usage query with millisecond dates, event listing,
problem+json errors, and (with a key) a portal token. The SDK accepts only `application/json` and
`application/problem+json` exactly, so any drift in our content types fails here."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import orjson

from tests.e2e.conftest import new_key
from tests.e2e.test_auth_http import call

SCRIPT = Path(__file__).parent / "js" / "openmeter_sdk.mjs"
SEED_004 = Path(__file__).parent / "js" / "seed_004.mjs"
REPO_ROOT = Path(__file__).resolve().parents[2]


def run_sdk(base: str, token: str | None = None) -> dict[str, Any]:
    done = subprocess.run(["node", str(SCRIPT), base, *([token] if token else [])], capture_output=True,
                          text=True, timeout=120, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
    return result


def test_openmeter_js_sdk_works(local_stack: str) -> None:
    out = run_sdk(local_stack)
    assert "tokens_total" in out["meters"] and out["meter"]["slug"] == "tokens_total"
    query = out["query"]
    assert (query["windowSize"], query["from"], query["to"]) == (
        "HOUR", "2024-03-01T00:00:00.000Z", "2024-03-02T00:00:00.000Z")
    assert sorted((row["groupBy"]["model"], row["value"], row["windowStart"]) for row in query["data"]) == [
        ("gpt3", 100, "2024-03-01T10:00:00.000Z"), ("gpt4", 42, "2024-03-01T10:00:00.000Z")]
    assert all(row["subject"] == out["subject"] for row in query["data"])
    assert out["events"] == sorted(f"{out['subject']}-{i}" for i in (1, 2, 3))  # the duplicate is stored once
    assert out["notFound"] == {"statusCode": 404, "type": "urn:meterline:problem:not-found"}
    assert out["invalid"] == {"statusCode": 400, "type": "urn:meterline:problem:invalid-events"}
    assert out["feature"] == {"key": f"js-feature-{out['feature']['key'].rsplit('-', 1)[1]}",
                              "meterSlug": "tokens_total", "byKey": True}
    assert out["feature"]["key"] in out["featureKeys"] and out["archived"] == {"statusCode": 404}
    assert out["subjects"] == {"upserted": "JS customer", "listed": True, "byKey": True}


def test_openmeter_js_sdk_with_an_api_key(secured: tuple[str, Path]) -> None:
    base, data_dir = secured
    token = new_key(data_dir, "js", "admin")

    meter = {"slug": "tokens_total", "eventType": "prompt", "aggregation": "SUM", "valueProperty": "$.tokens",
             "groupBy": {"model": "$.model"}}
    assert call(base, "POST", "/api/v1/meters", token, meter)[0] == 201
    out = run_sdk(base, token)
    assert out["meters"] == ["tokens_total"]
    assert sum(row["value"] for row in out["query"]["data"]) == 142
    assert out["portal"] == {"subject": out["subject"], "allowedMeterSlugs": ["tokens_total"], "hasToken": True}


def test_seed_004_walkthrough(local_stack: str) -> None:
    """Seed 004's guide verbatim (feature, monthly entitlement of 1M GPT-4 tokens, value), then usage,
    exhaustion, a grant paying back the overage, history, and a reset."""
    done = subprocess.run(["node", str(SEED_004), local_stack], capture_output=True, text=True, timeout=180,
                          cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    out = orjson.loads(done.stdout.splitlines()[-1])
    assert out["feature"] == {"key": "gpt_4_tokens", "meterSlug": "tokens_total",
                              "meterGroupByFilters": {"model": "gpt-4"}}
    assert out["entitlement"]["type"] == "metered" and out["entitlement"]["featureId"] is True
    assert out["entitlement"]["usagePeriod"] == "MONTH" and out["entitlement"]["issueAfterReset"] == 1_000_000
    assert 28 <= out["entitlement"]["periodDays"] <= 31
    assert out["initial"] == {"hasAccess": True, "balance": 1_000_000, "usage": 0, "overage": 0}
    assert out["afterUsage"] == {"hasAccess": True, "balance": 400_000, "usage": 600_000, "overage": 0}
    assert out["exhausted"] == {"hasAccess": False, "balance": 0, "usage": 1_100_000, "overage": 100_000}
    assert out["grant"] == {"amount": 250_000, "priority": 1, "entitlementId": True}
    assert out["afterGrant"] == {"hasAccess": True, "balance": 150_000, "usage": 1_100_000, "overage": 0}
    assert out["grants"] == [250_000, 1_000_000] and out["allGrants"] == 2
    assert out["listed"] == ["gpt_4_tokens"] and out["history"] == 1_100_000
    assert out["beforeReset"] == {"hasAccess": False, "balance": 0, "usage": 1_500, "overage": 500}
    assert out["afterReset"] == {"hasAccess": True, "balance": 1_000, "usage": 0, "overage": 0}
    assert out["conflict"] == {"statusCode": 409, "conflictingEntityId": True}
