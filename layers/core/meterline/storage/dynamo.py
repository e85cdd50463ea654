"""The one place a DynamoDB client is made: lazily, once per process, never at import time."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

from meterline.storage.tables import TableSpec

_lock = threading.Lock()
_client: Any = None

# Enough connections for the ingest fan-out (see EventsStore.MAX_CONCURRENCY).
MAX_POOL_CONNECTIONS = 64


def dynamodb_client() -> Any:
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                import boto3  # imported on first use: keeps handler cold imports small
                from botocore.config import Config

                config = Config(
                    max_pool_connections=MAX_POOL_CONNECTIONS,
                    retries={"mode": "standard", "max_attempts": 5},
                    connect_timeout=2,
                    read_timeout=5,
                )
                _client = boto3.session.Session().client("dynamodb", config=config)
    return _client


def reset_client() -> None:
    """Forget the cached client (tests switch between moto contexts)."""
    global _client
    with _lock:
        _client = None


def table_name(spec: TableSpec) -> str:
    name = os.environ.get(spec.env_var)
    if not name:
        raise RuntimeError(f"environment variable {spec.env_var} (the {spec.logical_name} table) is not set")
    return name


class TableAdapter:
    """What every table adapter shares: an injectable client (the process-wide one by default) and the
    table name from the environment, both resolved on first use."""

    spec: TableSpec

    def __init__(self, client: Any = None, table: str | None = None) -> None:
        self._client = client
        self._table = table

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = dynamodb_client()
        return self._client

    @property
    def table(self) -> str:
        if self._table is None:
            self._table = table_name(self.spec)
        return self._table

    def query_items(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every item a Query returns, page after page (this table unless `request` names another)."""
        request = {"TableName": self.table, **request}
        while True:
            page = self.client.query(**request)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
