"""API keys and scopes (domain/access.py), and who a request is made by (http/auth.py) in each auth mode:
fail closed, never the default namespace once auth is on."""

from __future__ import annotations

from typing import Any

import pytest

from meterline import bootstrap
from meterline.domain.access import (
    Scope,
    allows,
    bearer_token,
    is_key_id,
    key_hash,
    key_id_of,
    looks_like_key,
    new_api_key,
)
from meterline.errors import Forbidden, Unauthenticated
from meterline.http.auth import caller_of


def test_keys_are_om_and_32_random_bytes_stored_as_a_hash() -> None:
    keys = {new_api_key() for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        assert key.startswith("om_") and len(key) == 3 + 43 and looks_like_key(key)
        hashed = key_hash(key)
        assert len(hashed) == 64 and key not in hashed
        assert is_key_id(key_id_of(hashed)) and len(key_id_of(hashed)) == 24
    assert not looks_like_key("om_short") and not looks_like_key("sk_" + "a" * 43)
    assert not looks_like_key("om_" + "a" * 42 + "!") and not is_key_id("g" * 24) and not is_key_id("a" * 23)


@pytest.mark.parametrize(("header", "token"), [
    ("Bearer om_abc", "om_abc"), ("bearer  om_abc ", "om_abc"), ("BEARER om_abc", "om_abc"),
    (None, None), ("", None), ("Basic dXNlcjpwYXNz", None), ("Bearer", None), ("Bearer   ", None),
])
def test_bearer_tokens(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_scopes_cover_exactly_their_routes() -> None:
    assert allows(Scope.INGEST, "POST", "/api/v1/events")
    for method, path in [("GET", "/api/v1/events"), ("POST", "/api/v1/meters"), ("GET", "/api/v1/meters"),
                         ("POST", "/api/v1/meters/m/query"), ("DELETE", "/api/v1/meters/m")]:
        assert not allows(Scope.INGEST, method, path)
    for path in ("/api/v1/events", "/api/v1/meters", "/api/v1/meters/m/query", "/api/v1/reports/r/runs"):
        assert allows(Scope.READ, "GET", path)
    for method, path in [("POST", "/api/v1/events"), ("POST", "/api/v1/meters"), ("PUT", "/api/v1/meters/m"),
                         ("DELETE", "/api/v1/reports/r"), ("POST", "/api/v1/meters/m/query")]:
        assert not allows(Scope.READ, method, path)
        assert allows(Scope.ADMIN, method, path)


def event(authorizer: dict[str, Any] | None = None) -> dict[str, Any]:
    context: dict[str, Any] = {"http": {"method": "GET", "path": "/api/v1/meters"}}
    if authorizer is not None:
        context["authorizer"] = authorizer
    return {"requestContext": context}


@pytest.fixture
def auth(monkeypatch: pytest.MonkeyPatch) -> Any:
    def set_mode(mode: str, **env: str) -> None:
        monkeypatch.setenv("METERLINE_AUTH", mode)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        bootstrap.reset()
    yield set_mode
    bootstrap.reset()


def test_without_auth_every_request_is_the_default_namespace_whatever_its_context(auth: Any) -> None:
    auth("none", METERLINE_DEFAULT_NAMESPACE="local")
    caller = caller_of(event({"lambda": {"namespace": "other", "scope": "read"}}))
    assert (caller.namespace, caller.scope) == ("local", Scope.ADMIN)


def test_api_key_mode_fails_closed(auth: Any) -> None:
    auth("api-key")
    caller = caller_of(event({"lambda": {"namespace": "acme", "scope": "read", "keyId": "ab" * 12}}))
    assert (caller.namespace, caller.scope, caller.key_id) == ("acme", Scope.READ, "ab" * 12)
    for missing in (None, {}, {"lambda": {}}, {"lambda": {"scope": "admin"}}, {"jwt": {"claims": {"namespace": "a"}}}):
        with pytest.raises(Unauthenticated, match="API key is missing, unknown or revoked"):
            caller_of(event(missing))
    with pytest.raises(Unauthenticated, match="no valid namespace"):
        caller_of(event({"lambda": {"namespace": "Not Valid", "scope": "admin"}}))
    with pytest.raises(Unauthenticated):  # a Lambda authorizer's context without a scope is not a key
        caller_of(event({"lambda": {"namespace": "acme"}}))
    with pytest.raises(Forbidden, match="no known scope"):
        caller_of(event({"lambda": {"namespace": "acme", "scope": "superuser"}}))


def test_another_lambda_authorizer_defaults_to_admin_in_its_namespace(auth: Any) -> None:
    auth("lambda")
    assert caller_of(event({"lambda": {"namespace": "acme"}})).scope is Scope.ADMIN
    assert caller_of(event({"lambda": {"namespace": "acme", "scope": "ingest"}})).scope is Scope.INGEST
    with pytest.raises(Unauthenticated, match="no valid namespace"):
        caller_of(event({"lambda": {"tenant": "acme"}}))


def test_jwt_mode_reads_the_namespace_and_scope_claims(auth: Any) -> None:
    auth("jwt", METERLINE_JWT_NAMESPACE_CLAIM="org.tenant", METERLINE_JWT_SCOPE_CLAIM="meterline_scope")
    claims = {"sub": "u1", "org": {"tenant": "acme"}, "meterline_scope": "read"}
    caller = caller_of(event({"jwt": {"claims": claims, "scopes": None}}))
    assert (caller.namespace, caller.scope) == ("acme", Scope.READ)
    with pytest.raises(Unauthenticated):
        caller_of(event({"jwt": {"claims": {"sub": "u1", "namespace": "acme"}}}))
    with pytest.raises(Forbidden):  # no scope claim at all: no scope
        caller_of(event({"jwt": {"claims": {"org": {"tenant": "acme"}}}}))


def test_jwt_mode_without_a_scope_claim_is_admin(auth: Any) -> None:
    auth("jwt")
    assert caller_of(event({"jwt": {"claims": {"namespace": "acme"}}})).scope is Scope.ADMIN


def test_an_unknown_auth_mode_is_a_configuration_error(auth: Any) -> None:
    from meterline.settings import settings

    auth("basic")
    with pytest.raises(RuntimeError, match="METERLINE_AUTH='basic' must be one of none, api-key, jwt, lambda"):
        settings()
