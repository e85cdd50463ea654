"""Portal tokens (domain/portal.py): OpenMeter's claims, HS256 only, expiry against the given clock, and
the request's rules."""

from __future__ import annotations

import base64

import jwt
import orjson
import pytest

from meterline.domain import portal
from meterline.domain.validation import validated
from meterline.errors import InvalidInput

SECRET = b"s" * 48
NOW = 1_800_000_000_000


def request(**body: object) -> portal.PortalTokenRequest:
    return validated(portal.PortalTokenRequest, body, what="a portal token request", root="request",
                     context={"now_ms": NOW})


def test_a_token_carries_openmeters_claims_and_verifies() -> None:
    token, signed = portal.issue(request(subject="customer-1", allowedMeterSlugs=["tokens_total"]), "acme", NOW,
                                 SECRET)
    claims = jwt.decode(signed, SECRET, algorithms=["HS256"], options={"verify_exp": False, "verify_iat": False})
    assert claims == {"iss": "openmeter", "sub": "customer-1", "iat": NOW // 1000, "exp": NOW // 1000 + 3600,
                      "Namespace": "acme", "Id": token.id, "AllowedMeterSlugs": ["tokens_total"]}
    assert portal.verify(signed, SECRET, NOW + 1) == token
    assert token.allows("tokens_total") and not token.allows("other")
    assert token.to_api(signed) == {"id": token.id, "subject": "customer-1", "expiresAt": "2027-01-15T09:00:00.000Z",
                                    "allowedMeterSlugs": ["tokens_total"], "token": signed}
    everything, _ = portal.issue(request(subject="c"), "acme", NOW, SECRET)
    assert everything.allowed_meter_slugs == () and everything.allows("anything")


def test_only_our_unexpired_hs256_tokens_verify() -> None:
    token, signed = portal.issue(request(subject="c", expiresAt="2027-01-15T08:10:00Z"), "acme", NOW, SECRET)
    assert token.expires_ms == NOW + 600_000
    assert portal.verify(signed, SECRET, token.expires_ms - 1) is not None
    assert portal.verify(signed, SECRET, token.expires_ms) is None  # expired
    assert portal.verify(signed, b"another secret" * 4, NOW) is None
    header, payload, signature = signed.split(".")
    claims = orjson.loads(base64.urlsafe_b64decode(payload + "=="))
    forged = base64.urlsafe_b64encode(orjson.dumps({**claims, "sub": "customer-2"})).decode().rstrip("=")
    assert portal.verify(f"{header}.{forged}.{signature}", SECRET, NOW) is None
    unsigned = jwt.encode(claims, key="", algorithm="none")
    assert portal.verify(unsigned, SECRET, NOW) is None
    for changes in ({"iss": "someone"}, {"Namespace": 5}, {"sub": ""}):
        assert portal.verify(jwt.encode({**claims, **changes}, SECRET, algorithm="HS256"), SECRET, NOW) is None
    without_exp = {k: v for k, v in claims.items() if k != "exp"}
    assert portal.verify(jwt.encode(without_exp, SECRET, algorithm="HS256"), SECRET, NOW) is None
    assert portal.verify("not a token", SECRET, NOW) is None


@pytest.mark.parametrize(("body", "field"), [
    ({}, "subject"),
    ({"subject": ""}, "subject"),
    ({"subject": "c" * 257}, "subject"),
    ({"subject": "c", "allowedMeterSlugs": []}, "allowedMeterSlugs"),
    ({"subject": "c", "allowedMeterSlugs": ["Not A Slug"]}, "allowedMeterSlugs"),
    ({"subject": "c", "expiresAt": "2027-01-15T07:59:59Z"}, "expiresAt"),  # in the past
    ({"subject": "c", "expiresAt": "2027-02-20T00:00:00Z"}, "expiresAt"),  # beyond 30 days
    ({"subject": "c", "expiresAt": "soon"}, "expiresAt"),
    ({"subject": "c", "extra": 1}, "extra"),
])
def test_bad_token_requests(body: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        request(**body)
    assert field in [e.field for e in caught.value.errors]
