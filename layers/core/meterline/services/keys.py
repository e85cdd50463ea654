"""API keys: made, listed and revoked by an operator (`meterline keys`), checked by the authorizer.

There is no HTTP route that makes keys: whoever can write the catalog table (AWS credentials for the
stack, or the local data directory) is the one who hands them out.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from meterline.domain.access import (
    LAST_USED_RESOLUTION_MS,
    MAX_KEY_NAME,
    ApiKey,
    Caller,
    Scope,
    is_key_id,
    key_hash,
    key_id_of,
    looks_like_key,
    new_api_key,
)
from meterline.domain.timeutil import format_ms
from meterline.settings import NAMESPACE_RULE, is_namespace
from meterline.storage.keys_store import KeysStore


class KeyRequestError(ValueError):
    """A key request an operator must fix (an invalid namespace, scope, name or key id)."""


@dataclass(frozen=True)
class NewKey:
    key: str  # shown once, never stored
    stored: ApiKey


def create_key(store: KeysStore, namespace: str, scope: str, name: str | None, now_ms: int) -> NewKey:
    if not is_namespace(namespace):
        raise KeyRequestError(f"namespace {namespace!r} must match {NAMESPACE_RULE}")
    try:
        parsed = Scope(scope)
    except ValueError:
        raise KeyRequestError(f"scope {scope!r} must be one of {', '.join(s.value for s in Scope)}") from None
    label = (name or f"{parsed.value} key").strip()
    if not label or len(label) > MAX_KEY_NAME:
        raise KeyRequestError(f"name must be 1 to {MAX_KEY_NAME} characters")
    key = new_api_key()
    hashed = key_hash(key)
    stored = ApiKey(key_id=key_id_of(hashed), hashed=hashed, namespace=namespace, scope=parsed, name=label,
                    created_ms=now_ms)
    store.create(stored)
    return NewKey(key, stored)


def list_keys(store: KeysStore, namespace: str) -> list[ApiKey]:
    if not is_namespace(namespace):
        raise KeyRequestError(f"namespace {namespace!r} must match {NAMESPACE_RULE}")
    return sorted(store.list(namespace), key=lambda k: (k.created_ms, k.key_id))


def revoke_key(store: KeysStore, key_id: str, now_ms: int) -> ApiKey:
    if not is_key_id(key_id):
        raise KeyRequestError(f"{key_id!r} is not a key id (24 hex digits, as `meterline keys list` shows them)")
    if not store.revoke(key_id, now_ms):
        existing = store.get(key_id)
        raise KeyRequestError(f"key {key_id} does not exist" if existing is None
                              else f"key {key_id} is revoked already")
    revoked = store.get(key_id)
    assert revoked is not None
    return revoked


def authenticate(store: KeysStore, token: str | None, now_ms: int) -> Caller | None:
    """The caller an API key stands for; None for anything but an active key. Records the use (at most
    once a minute per key)."""
    if token is None or not looks_like_key(token):
        return None
    hashed = key_hash(token)
    stored = store.get(key_id_of(hashed))
    if stored is None or not stored.active or not hmac.compare_digest(stored.hashed, hashed):
        return None
    if stored.last_used_ms is None or stored.last_used_ms < now_ms - LAST_USED_RESOLUTION_MS:
        store.touch(stored.key_id, now_ms)
    return Caller(stored.namespace, stored.scope, stored.key_id)


def key_summary(key: ApiKey) -> dict[str, str | None]:
    """A key as `meterline keys list` shows it."""
    return {
        "id": key.key_id,
        "namespace": key.namespace,
        "scope": key.scope.value,
        "name": key.name,
        "createdAt": format_ms(key.created_ms),
        "lastUsedAt": format_ms(key.last_used_ms) if key.last_used_ms is not None else None,
        "revokedAt": format_ms(key.revoked_ms) if key.revoked_ms is not None else None,
    }
