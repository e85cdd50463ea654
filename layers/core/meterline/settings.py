"""Runtime settings, read from the environment once per process (the Lambda's or the local stack's)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cache

NAMESPACE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class Settings:
    default_namespace: str
    retention_days: int
    meters_file: str | None

    @classmethod
    def from_env(cls) -> Settings:
        namespace = os.environ.get("METERLINE_DEFAULT_NAMESPACE", "default")
        if not NAMESPACE_PATTERN.match(namespace):
            raise RuntimeError(f"METERLINE_DEFAULT_NAMESPACE={namespace!r} must match {NAMESPACE_PATTERN.pattern}")
        retention = int(os.environ.get("METERLINE_RETENTION_DAYS", "400"))
        if retention < 1:
            raise RuntimeError("METERLINE_RETENTION_DAYS must be at least 1")
        return cls(
            default_namespace=namespace,
            retention_days=retention,
            meters_file=os.environ.get("METERLINE_METERS_FILE") or None,
        )


@cache
def settings() -> Settings:
    return Settings.from_env()
