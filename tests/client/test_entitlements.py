"""`Meterline.value` and `has_access` against a fake API: the answer's fields, no entitlement as no access, errors,
and the per-(subject, feature) cache."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest

from meterline_client import EntitlementValue, Meterline, MeterlineAPIError, MeterlineUnavailableError
from tests.client.fake_meterline import FakeMeterlineAPI, problem


def test_values_of_each_entitlement_type(api: FakeMeterlineAPI, meterline: Meterline) -> None:
    api.values[("customer-1", "gpt_tokens")] = {"hasAccess": True, "balance": 40, "usage": 60.5, "overage": 0}
    api.values[("customer-1", "seats")] = {"hasAccess": True, "config": '{"seats": 3}'}
    api.values[("customer-1", "beta")] = {"hasAccess": False}

    assert meterline.value("customer-1", "gpt_tokens") == EntitlementValue(True, 40.0, 60.5, 0.0, None)
    assert meterline.value("customer-1", "seats") == EntitlementValue(True, config='{"seats": 3}')
    assert meterline.value("customer-1", "beta") == EntitlementValue(False)
    assert meterline.value("customer-1", "no_such_feature") == EntitlementValue(False)  # the API's 404


def test_value_at_a_time_and_path_escaping(api: FakeMeterlineAPI, meterline: Meterline) -> None:
    api.values[("org/team a", "f")] = {"hasAccess": True}
    assert meterline.value("org/team a", "f", at=datetime(2024, 5, 1, 12, tzinfo=UTC)).has_access
    request = api.value_requests[-1]
    assert request.url.raw_path.decode().startswith("/api/v1/subjects/org%2Fteam%20a/entitlements/f/value")
    assert request.url.params["time"] == "2024-05-01T12:00:00.000Z"


def test_errors_are_raised(api: FakeMeterlineAPI, meterline: Meterline) -> None:
    api.scripted_values.append(problem(403, "the key's scope does not cover this route"))
    with pytest.raises(MeterlineAPIError, match="scope") as refused:
        meterline.value("s", "f")
    assert refused.value.status == 403 and len(api.value_requests) == 1  # a 4xx is not retried

    api.scripted_values.append(httpx.Response(404, json={"message": "Not Found"}))  # a gateway's: a wrong URL
    with pytest.raises(MeterlineAPIError, match="404"):
        meterline.value("s", "f")

    api.value_requests.clear()
    api.scripted_values.extend([problem(503, "storage unavailable")] * 2)
    with pytest.raises(MeterlineAPIError, match="storage unavailable"):
        meterline.value("s", "f")
    assert len(api.value_requests) == 2  # retried once

    api.scripted_values.extend([problem(503, "storage unavailable"), httpx.Response(200, json={"hasAccess": True})])
    assert meterline.value("s", "f").has_access  # the retry answered

    api.scripted_values.extend([httpx.ConnectError("connection refused")] * 2)
    with pytest.raises(MeterlineUnavailableError, match="ConnectError"):
        meterline.has_access("s", "f")


def test_has_access_is_cached_per_subject_and_feature(api: FakeMeterlineAPI,
                                                      make_client: Callable[..., Meterline]) -> None:
    meterline = make_client(cache_seconds=0.3)
    api.values[("a", "f")] = {"hasAccess": True, "balance": 1}
    api.values[("b", "f")] = {"hasAccess": False, "balance": 0}

    assert [meterline.has_access("a", "f") for _ in range(3)] == [True, True, True]
    assert [meterline.has_access("b", "f") for _ in range(3)] == [False, False, False]  # denials too
    assert meterline.has_access("a", "other") is False
    assert len(api.value_requests) == 3  # one per (subject, feature)

    api.values[("a", "f")] = {"hasAccess": False, "balance": 0}
    assert meterline.has_access("a", "f") is True  # still the cached answer
    time.sleep(0.35)
    assert meterline.has_access("a", "f") is False
    assert len(api.value_requests) == 4


def test_a_cache_of_zero_seconds_asks_every_time(api: FakeMeterlineAPI,
                                                 make_client: Callable[..., Meterline]) -> None:
    meterline = make_client(cache_seconds=0)
    api.values[("a", "f")] = {"hasAccess": True}
    for _ in range(3):
        meterline.has_access("a", "f")
    assert len(api.value_requests) == 3
