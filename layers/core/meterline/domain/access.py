"""Who may call what: API keys, their scopes, and the caller a request is made by.

A key is `om_` followed by 43 base64url characters (32 random bytes). Only its SHA-256 is stored; its
public id is the first 24 hex digits of that hash, so a key can be looked up, listed and revoked without
anyone keeping the key itself.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meterline.domain.portal import PortalToken

KEY_PREFIX = "om_"
_KEY = re.compile(r"^om_[A-Za-z0-9_-]{43,128}$")
KEY_ID_LENGTH = 24
_KEY_ID = re.compile(rf"^[0-9a-f]{{{KEY_ID_LENGTH}}}$")
MAX_KEY_NAME = 128
# lastUsedAt is written at most this often per key.
LAST_USED_RESOLUTION_MS = 60_000


class Scope(StrEnum):
    """What a key may do: `ingest` sends events, `read` reads everything, `admin` does everything."""

    INGEST = "ingest"
    READ = "read"
    ADMIN = "admin"
    PORTAL = "portal"  # a portal token: its subject's usage, on the portal route only


# The one write an ingest key may make.
INGEST_ROUTE = ("POST", "/api/v1/events")
# The only routes portal tokens are good for, and only they.
PORTAL_PREFIX = "/api/v1/portal/meters/"


def allows(scope: Scope, method: str, route: str) -> bool:
    """Whether `scope` covers a request of `method` to the route template `route`."""
    if route.startswith(PORTAL_PREFIX):
        return scope is Scope.PORTAL and method in ("GET", "HEAD")
    if scope is Scope.PORTAL:
        return False
    if scope is Scope.ADMIN:
        return True
    if scope is Scope.READ:
        return method in ("GET", "HEAD")
    return (method, route) == INGEST_ROUTE


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def looks_like_key(token: str) -> bool:
    return bool(_KEY.match(token))


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_of(hashed: str) -> str:
    return hashed[:KEY_ID_LENGTH]


def is_key_id(value: str) -> bool:
    return bool(_KEY_ID.match(value))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


@dataclass(frozen=True)
class ApiKey:
    """A stored key (never the key itself)."""

    key_id: str
    hashed: str
    namespace: str
    scope: Scope
    name: str
    created_ms: int
    last_used_ms: int | None = None
    revoked_ms: int | None = None

    @property
    def active(self) -> bool:
        return self.revoked_ms is None


@dataclass(frozen=True)
class Caller:
    """Who a request is made by: the namespace it acts in and what it may do there."""

    namespace: str
    scope: Scope
    key_id: str | None = None  # None: auth is off, or another authorizer vouched for the caller
    portal: PortalToken | None = None  # with Scope.PORTAL: the token's subject and meters
