"""In-memory stand-ins for the DynamoDB client, for benchmarks that exclude storage time."""

from __future__ import annotations

import threading
from typing import Any


class ConditionalCheckFailed(Exception):
    pass


class _Exceptions:
    ConditionalCheckFailedException = ConditionalCheckFailed


class InMemoryDynamoDB:
    """PutItem with `attribute_not_exists(pk)` semantics, nothing more."""

    exceptions = _Exceptions()

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def put_item(self, TableName: str, Item: dict[str, Any], ConditionExpression: str | None = None,
                 **_: Any) -> dict[str, Any]:
        key = Item["pk"]["S"]
        with self._lock:
            if ConditionExpression and key in self.items:
                raise ConditionalCheckFailed()
            self.items[key] = Item
        return {}
