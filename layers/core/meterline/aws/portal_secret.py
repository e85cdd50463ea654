"""The key portal tokens are signed with: one per stack, a Secrets Manager secret (its string is the
key), read once and kept for `CACHE_SECONDS` so a rotation reaches every function within minutes."""

from __future__ import annotations

import time
from typing import Any

from meterline.aws.clients import AwsAdapter
from meterline.settings import required_env

SECRET_ENV = "PORTAL_SECRET_ARN"
CACHE_SECONDS = 300.0


class PortalSecret(AwsAdapter):
    service = "secretsmanager"

    def __init__(self, client: Any = None) -> None:
        super().__init__(client)
        self._value: bytes | None = None
        self._read_at = 0.0

    def value(self) -> bytes:
        if self._value is None or time.monotonic() - self._read_at > CACHE_SECONDS:
            arn = required_env(SECRET_ENV, "the secret portal tokens are signed with")
            self._value = self.client.get_secret_value(SecretId=arn)["SecretString"].encode()
            self._read_at = time.monotonic()
        return self._value
