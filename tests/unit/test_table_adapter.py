"""What every table adapter shares: batched puts that resend what DynamoDB left unprocessed, and
concurrent calls whose results keep their order."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from meterline.storage import dynamo
from meterline.storage.dynamo import TableAdapter, concurrently
from meterline.storage.tables import USAGE_TABLE


class ThrottlingClient:
    """BatchWriteItem that leaves the last `leave` items of each call unprocessed, `times` times."""

    def __init__(self, leave: int, times: int) -> None:
        self.leave = leave
        self.times = times
        self.calls: list[list[str]] = []
        self.stored: list[str] = []

    def batch_write_item(self, RequestItems: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:  # noqa: N803
        [(table, requests)] = RequestItems.items()
        keys = [r["PutRequest"]["Item"]["pk"]["S"] for r in requests]
        self.calls.append(keys)
        cut = len(requests) - self.leave if self.times > 0 else len(requests)
        self.times -= 1
        self.stored.extend(keys[:cut])
        return {"UnprocessedItems": {table: requests[cut:]} if requests[cut:] else {}}


def items(n: int) -> list[dict[str, Any]]:
    return [{"pk": {"S": f"k{i}"}, "sk": {"S": "x"}} for i in range(n)]


class Adapter(TableAdapter):
    spec = USAGE_TABLE


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waits: list[float] = []
    monkeypatch.setattr(dynamo.time, "sleep", waits.append)  # the time module's: only in these tests
    return waits


def test_puts_go_25_per_call_in_order() -> None:
    client = ThrottlingClient(leave=0, times=0)
    assert Adapter(client, "t").put_batch(items(60)) == 3
    assert [len(keys) for keys in client.calls] == [25, 25, 10]
    assert client.stored == [f"k{i}" for i in range(60)]


def test_unprocessed_items_are_sent_again_until_they_land(no_backoff: list[float]) -> None:
    client = ThrottlingClient(leave=10, times=2)
    assert Adapter(client, "t").put_batch(items(30)) == 4  # 25 (10 left), 10 (10 left), 10, then 5
    assert no_backoff == [0.025, 0.05]  # a growing pause before each resend
    assert sorted(client.stored) == sorted(f"k{i}" for i in range(30))
    assert client.calls[1] == client.calls[0][15:]


def test_items_left_unprocessed_every_time_raise(no_backoff: list[float]) -> None:
    client = ThrottlingClient(leave=1, times=100)
    with pytest.raises(RuntimeError, match="unprocessed 8 times"):
        Adapter(client, "t").put_batch(items(3))
    assert "k2" not in client.stored


def test_nothing_to_put_makes_no_call() -> None:
    client = ThrottlingClient(leave=0, times=0)
    assert Adapter(client, "t").put_batch([]) == 0 and client.calls == []


def test_concurrent_calls_keep_the_order_of_their_arguments() -> None:
    def slow_square(n: int) -> int:
        time.sleep(0.001 * (20 - n))  # later arguments finish first
        return n * n

    assert concurrently(slow_square, range(20)) == [n * n for n in range(20)]


def test_a_failing_call_is_raised_after_the_others_finished() -> None:
    finished: list[int] = []
    lock = threading.Lock()

    def call(n: int) -> int:
        if n == 3:
            raise ValueError("call 3 failed")
        time.sleep(0.01)
        with lock:
            finished.append(n)
        return n

    with pytest.raises(ValueError, match="call 3 failed"):
        concurrently(call, range(8))
    assert sorted(finished) == [0, 1, 2, 4, 5, 6, 7]
