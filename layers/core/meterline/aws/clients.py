"""One boto3 client per service and process, made on first use (never at import time)."""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()
_clients: dict[str, Any] = {}


def aws_client(service: str) -> Any:
    client = _clients.get(service)
    if client is None:
        with _lock:
            client = _clients.get(service)
            if client is None:
                import boto3
                from botocore.config import Config

                config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=2, read_timeout=10)
                client = _clients[service] = boto3.session.Session().client(service, config=config)
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
