"""Entitlements over HTTP against `meterline dev`, through OpenMeter's Python SDK (openmeter==1.0.0b236):
it reaches entitlement values only through its customer calls, which Meterline serves with the customer
key taken as the subject key. The entitlement and its usage are set up over plain HTTP."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from openmeter import Client

from tests.e2e.test_local_stack_http import request

JSON = "application/json"


def post(base: str, path: str, body: Any) -> dict[str, Any]:
    status, _, reply = request(f"{base}{path}", "POST", json.dumps(body).encode(), JSON)
    assert status in (201, 204), reply
    return json.loads(reply) if reply else {}


def test_python_sdk_reads_customer_values(local_stack: str) -> None:
    customer, feature = f"py-{uuid.uuid4().hex[:8]}", f"py_tokens_{uuid.uuid4().hex[:6]}"
    post(local_stack, "/api/v1/features", {"key": feature, "name": "Python tokens", "meterSlug": "tokens_total"})
    post(local_stack, "/api/v1/features", {"key": f"{feature}_beta", "name": "Beta access"})
    post(local_stack, f"/api/v1/subjects/{customer}/entitlements",
         {"type": "metered", "featureKey": feature, "issueAfterReset": 100, "usagePeriod": {"interval": "MONTH"}})
    post(local_stack, f"/api/v1/subjects/{customer}/entitlements",
         {"type": "static", "featureKey": f"{feature}_beta", "config": '{"seats": 3}'})
    now = datetime.now(UTC)
    post(local_stack, "/api/v1/events", [{
        "specversion": "1.0", "id": f"{customer}-1", "source": "py-sdk", "type": "prompt", "subject": customer,
        "time": now.isoformat(), "data": {"tokens": 60, "model": "gpt4", "type": "input"}}])
    client = Client(endpoint=local_stack)

    deadline = time.monotonic() + 30
    while (value := client.customer_entitlement.get_customer_entitlement_value(customer, feature)).usage != 60:
        assert time.monotonic() < deadline, value
        time.sleep(0.25)
    assert (value.has_access, value.balance, value.usage, value.overage) == (True, 40, 60, 0)
    before = client.customer_entitlement.get_customer_entitlement_value(customer, feature,
                                                                        time=now - timedelta(minutes=5))
    assert before.has_access is False  # the entitlement did not exist yet
    missing = client.customer_entitlement.get_customer_entitlement_value(customer, "no_such_feature")
    assert missing.has_access is False and missing.balance is None

    access = client.customer.get_customer_access(customer)
    assert set(access.entitlements) == {feature, f"{feature}_beta"}
    assert access.entitlements[feature].balance == 40
    assert access.entitlements[f"{feature}_beta"].config == '{"seats": 3}'
