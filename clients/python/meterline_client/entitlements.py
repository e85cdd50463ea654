"""Entitlement values as `GET /api/v1/subjects/{subject}/entitlements/{feature}/value` answers them, and the
short-lived cache of access decisions a gateway asks for on every request."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class EntitlementValue:
    """A subject's access to a feature: `balance`, `usage` and `overage` for metered entitlements, `config`
    (a string of JSON) for static ones; only `has_access` for boolean ones and when there is no entitlement."""

    has_access: bool
    balance: float | None = None
    usage: float | None = None
    overage: float | None = None
    config: str | None = None

    @classmethod
    def from_api(cls, body: Mapping[str, Any]) -> EntitlementValue:
        if not isinstance(body.get("hasAccess"), bool):
            raise ValueError(f"an entitlement value without a boolean hasAccess: {dict(body)}")
        return cls(has_access=body["hasAccess"], balance=_number(body.get("balance")),
                   usage=_number(body.get("usage")), overage=_number(body.get("overage")),
                   config=body.get("config") if isinstance(body.get("config"), str) else None)


NO_ENTITLEMENT = EntitlementValue(has_access=False)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class AccessCache:
    """Access decisions per (subject, feature) for `ttl_seconds`, at most `max_entries` of them (the oldest go
    first). Denials are cached as well: a subject without access must not cost one lookup per request."""

    def __init__(self, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self._ttl = ttl_seconds
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], tuple[float, bool]] = {}

    def get(self, subject: str, feature_key: str) -> bool | None:
        with self._lock:
            entry = self._entries.get((subject, feature_key))
        if entry is None or entry[0] <= time.monotonic():
            return None
        return entry[1]

    def put(self, subject: str, feature_key: str, has_access: bool) -> None:
        if self._ttl <= 0:
            return
        with self._lock:
            self._entries.pop((subject, feature_key), None)  # re-inserted last: dicts keep insertion order
            while len(self._entries) >= self._max_entries:
                del self._entries[next(iter(self._entries))]
            self._entries[(subject, feature_key)] = (time.monotonic() + self._ttl, has_access)
