"""The Python client (`meterline_client.Meterline`) against `meterline dev`: usage counted exactly once however
often the same events are sent, entitlement values and access, events the server refuses, and API keys of
each scope on `meterline dev --auth`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from meterline_client import EntitlementValue, EventsRejectedError, Meterline, MeterlineAPIError
from tests.client.stack import ensure_meter, entitle, settled_usage, stored_ids, wait_value
from tests.e2e.conftest import new_key

pytestmark = pytest.mark.e2e


def prompt(subject: str, tokens: int, event_id: str | None = None, **fields: object) -> dict[str, object]:
    """An event of the example `tokens_total` meter."""
    event = {"type": "prompt", "subject": subject, "data": {"tokens": tokens, "model": "gpt-4", "type": "input"},
             **fields}
    return {**event, "id": event_id} if event_id else event


@pytest.fixture
def client(local_stack: str) -> Iterator[Meterline]:
    with Meterline(local_stack, source="e2e-client", exit_flush_seconds=None) as meterline:
        yield meterline


def test_events_sent_again_are_counted_once(local_stack: str, client: Meterline) -> None:
    subject = f"client-{uuid.uuid4().hex[:8]}"
    sent = [prompt(subject, 10, "a"), prompt(subject, 20, "b"), prompt(subject, 30, "c")]
    client.ingest(sent)
    client.flush()
    client.ingest(sent)  # a retry by the application itself
    client.ingest([prompt(subject, 1), prompt(subject, 2)])  # random ids: two events
    client.flush()
    assert settled_usage(local_stack, "tokens_total", subject, 63) == 63
    assert len(stored_ids(local_stack, subject)) == 5


def test_entitlement_values_and_cached_access(local_stack: str, client: Meterline) -> None:
    subject, feature = f"client-{uuid.uuid4().hex[:8]}", f"client_tokens_{uuid.uuid4().hex[:8]}"
    entitle(local_stack, subject, feature, "tokens_total", allowance=100)
    assert client.value(subject, feature) == EntitlementValue(True, balance=100, usage=0, overage=0)
    assert client.has_access(subject, feature) is True

    client.ingest([prompt(subject, 60), prompt(subject, 50)])
    client.flush()
    wait_value(local_stack, subject, feature, usage=110)
    assert client.value(subject, feature) == EntitlementValue(False, balance=0, usage=110, overage=10)
    assert client.has_access(subject, feature) is True  # cached for 5 s
    assert client.value(subject, "no_such_feature") == EntitlementValue(False)

    fresh = Meterline(local_stack, cache_seconds=0, exit_flush_seconds=None)
    assert fresh.has_access(subject, feature) is False
    fresh.close()


def test_events_the_server_refuses_are_raised_and_the_rest_delivered(local_stack: str, client: Meterline) -> None:
    subject = f"client-{uuid.uuid4().hex[:8]}"
    far_future = datetime.now(UTC) + timedelta(days=2)
    client.ingest([prompt(subject, 5, "ok-1"), prompt(subject, 7, "late", time=far_future),
                   prompt(subject, 9, "ok-2")])
    with pytest.raises(EventsRejectedError) as rejected:
        client.flush()
    assert rejected.value.status == 400 and "time" in str(rejected.value)
    assert [event["id"] for event in rejected.value.events] == ["late"]
    assert settled_usage(local_stack, "tokens_total", subject, 14) == 14
    assert stored_ids(local_stack, subject) == ["ok-1", "ok-2"]


def test_api_keys_of_each_scope(secured: tuple[str, Path]) -> None:
    base, data_dir = secured
    namespace = f"client-{uuid.uuid4().hex[:6]}"
    admin, ingest = new_key(data_dir, namespace, "admin"), new_key(data_dir, namespace, "ingest")
    ensure_meter(base, {"slug": "tokens_total", "eventType": "prompt", "aggregation": "SUM",
                        "valueProperty": "$.tokens", "groupBy": {"model": "$.model", "type": "$.type"}}, admin)
    entitle(base, "customer-1", "tokens", "tokens_total", allowance=10, key=admin)

    with Meterline(base, api_key=ingest, exit_flush_seconds=None) as ingesting:
        ingesting.ingest(prompt("customer-1", 4, "k-1"))
        ingesting.flush()
        with pytest.raises(MeterlineAPIError) as forbidden:
            ingesting.value("customer-1", "tokens")  # an ingest key reads nothing
        assert forbidden.value.status == 403 and forbidden.value.problem is not None

    anonymous = Meterline(base, exit_flush_seconds=None)
    anonymous.ingest(prompt("customer-1", 1, "k-2"))
    with pytest.raises(EventsRejectedError, match="401") as refused:
        anonymous.flush()
    assert [event["id"] for event in refused.value.events] == ["k-2"]
    anonymous.close()

    with Meterline(base, api_key=admin, exit_flush_seconds=None) as administering:
        assert wait_value(base, "customer-1", "tokens", usage=4, key=admin)["usage"] == 4
        assert administering.value("customer-1", "tokens") == EntitlementValue(True, balance=6, usage=4, overage=0)
    assert settled_usage(base, "tokens_total", "customer-1", 4, key=admin) == 4  # nothing refused was counted
