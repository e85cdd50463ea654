"""What the client's end-to-end tests ask a running `meterline dev` directly, over plain HTTP: meters, features
and entitlements to set up, and the usage and stored events to check the client's numbers against."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx


def call(base: str, method: str, path: str, body: Any = None, key: str | None = None,
         params: dict[str, Any] | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.request(method, f"{base}{path}", json=body, params=params, headers=headers, timeout=30)


def ensure_meter(base: str, meter: dict[str, Any], key: str | None = None) -> None:
    """Create the meter unless the stack has it (each xdist worker's stack is shared by its tests)."""
    created = call(base, "POST", "/api/v1/meters", meter, key)
    assert created.status_code in (201, 409), created.text


def entitle(base: str, subject: str, feature: str, meter_slug: str, allowance: int, key: str | None = None) -> None:
    """A feature on the meter and a monthly metered entitlement of `allowance` for the subject."""
    made = call(base, "POST", "/api/v1/features", {"key": feature, "name": feature, "meterSlug": meter_slug}, key)
    assert made.status_code == 201, made.text
    made = call(base, "POST", f"/api/v1/subjects/{subject}/entitlements",
                {"type": "metered", "featureKey": feature, "issueAfterReset": allowance,
                 "usagePeriod": {"interval": "MONTH"}}, key)
    assert made.status_code == 201, made.text


def usage(base: str, meter_slug: str, subject: str, key: str | None = None, **filters: str) -> float:
    """The subject's usage of the meter over the last day, read through `/query`."""
    now = datetime.now(UTC)
    params = {"subject": subject, "from": (now - timedelta(days=1)).isoformat(),
              "to": (now + timedelta(minutes=5)).isoformat(),
              **{f"filterGroupBy[{name}]": value for name, value in filters.items()}}
    answer = call(base, "GET", f"/api/v1/meters/{meter_slug}/query", key=key, params=params)
    assert answer.status_code == 200, answer.text
    return float(sum(row["value"] or 0 for row in answer.json()["data"]))


def settled_usage(base: str, meter_slug: str, subject: str, expected: float, key: str | None = None,
                  **filters: str) -> float:
    """The usage once it reached `expected` (or after 20 s), read again a moment later: a double count still on
    its way shows up there."""
    deadline = time.monotonic() + 20
    while (found := usage(base, meter_slug, subject, key, **filters)) < expected and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.3)
    return max(found, usage(base, meter_slug, subject, key, **filters))


def stored_ids(base: str, subject: str, key: str | None = None) -> list[str]:
    """The ids of the subject's stored events of the last day (each stored once per source and id)."""
    answer = call(base, "GET", "/api/v1/events", key=key, params={"subject": subject, "limit": 100})
    assert answer.status_code == 200, answer.text
    return sorted(stored["event"]["id"] for stored in answer.json())


def value(base: str, subject: str, feature: str, key: str | None = None) -> dict[str, Any]:
    answer = call(base, "GET", f"/api/v1/subjects/{subject}/entitlements/{feature}/value", key=key)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def wait_value(base: str, subject: str, feature: str, usage: float, key: str | None = None) -> dict[str, Any]:
    """The entitlement value once its usage reached `usage` (or after 20 s)."""
    deadline = time.monotonic() + 20
    while (found := value(base, subject, feature, key)).get("usage", 0) < usage and time.monotonic() < deadline:
        time.sleep(0.2)
    return found
