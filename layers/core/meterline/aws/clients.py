"""The one place boto3 clients are made: one per service and process, on first use (never at import
time, which keeps handler cold imports small)."""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()
_clients: dict[str, Any] = {}

# DynamoDB gets a pool for the calls one request runs concurrently (storage.dynamo.MAX_CONCURRENT_CALLS)
# and a shorter read timeout than the others.
_CONFIG: dict[str, dict[str, Any]] = {
    "dynamodb": {"max_pool_connections": 64, "read_timeout": 5},
}


def aws_client(service: str) -> Any:
    client = _clients.get(service)
    if client is None:
        with _lock:
            client = _clients.get(service)
            if client is None:
                import boto3
                from botocore.config import Config

                options = {"retries": {"mode": "standard", "max_attempts": 5}, "connect_timeout": 2,
                           "read_timeout": 10, **_CONFIG.get(service, {})}
                client = _clients[service] = boto3.session.Session().client(service, config=Config(**options))
    return client


def reset_clients() -> None:
    """Forget cached clients (tests switch between moto contexts)."""
    with _lock:
        _clients.clear()


class AwsAdapter:
    """What the adapters share: an injectable client, else the process-wide one for `service`, made on
    first use."""

    service: str

    def __init__(self, client: Any = None) -> None:
        self._client = client

    @property
    def client(self) -> Any:
        # The process-wide client is looked up on each use, not kept: reset_clients() reaches every adapter.
        return self._client if self._client is not None else aws_client(self.service)
