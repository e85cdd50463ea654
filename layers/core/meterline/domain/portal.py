"""Portal tokens: what a product may hand its own customer's browser so it can read that customer's
usage of some meters, and nothing else.

A token is an HS256 JWT with OpenMeter's claims: `iss` "openmeter", `sub` (the subject), `iat`, `exp`,
and `Namespace`, `Id`, `AllowedMeterSlugs` (an empty list: every meter). It is accepted only by
`GET /api/v1/portal/meters/{meterSlug}/query`, which answers the token's subject only.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from meterline.domain.events import SubjectKey
from meterline.domain.meters import is_slug
from meterline.domain.timeutil import DAY_MS, HOUR_MS, format_ms
from meterline.domain.validation import EpochMs, QueryParameters

ISSUER = "openmeter"
ALGORITHM = "HS256"
DEFAULT_LIFETIME_MS = HOUR_MS
MAX_LIFETIME_MS = 30 * DAY_MS


class PortalTokenRequest(QueryParameters):
    """The body of POST /api/v1/portal/tokens. `expiresAt` must lie in the next 30 days (the
    validation context's `now_ms`); it defaults to an hour from now."""

    subject: SubjectKey
    allowed_meter_slugs: list[str] | None = Field(None, alias="allowedMeterSlugs", min_length=1)
    expires_at_ms: EpochMs | None = Field(None, alias="expiresAt")

    @field_validator("allowed_meter_slugs")
    @classmethod
    def _slugs(cls, slugs: list[str] | None) -> list[str] | None:
        if slugs is not None:
            bad = [slug for slug in slugs if not is_slug(slug)]
            if bad:
                raise ValueError(f"{bad[0]!r} is not a meter slug")
            slugs = list(dict.fromkeys(slugs))
        return slugs

    @field_validator("expires_at_ms")
    @classmethod
    def _expiry(cls, value: int | None, info: ValidationInfo) -> int | None:
        now = (info.context or {}).get("now_ms")
        if value is not None and now is not None and not now < value <= now + MAX_LIFETIME_MS:
            raise ValueError("must be in the future and at most 30 days from now")
        return value


@dataclass(frozen=True)
class PortalToken:
    id: str
    namespace: str
    subject: str
    allowed_meter_slugs: tuple[str, ...]  # empty: every meter
    issued_ms: int
    expires_ms: int

    def allows(self, meter_slug: str) -> bool:
        return not self.allowed_meter_slugs or meter_slug in self.allowed_meter_slugs

    def to_api(self, token: str | None = None) -> dict[str, Any]:
        shown: dict[str, Any] = {"id": self.id, "subject": self.subject, "expiresAt": format_ms(self.expires_ms),
                                 "allowedMeterSlugs": list(self.allowed_meter_slugs)}
        if token is not None:
            shown["token"] = token
        return shown


def issue(request: PortalTokenRequest, namespace: str, now_ms: int, secret: bytes) -> tuple[PortalToken, str]:
    """A new token for the request, and its signed form (shown once)."""
    import jwt

    token = PortalToken(
        id=str(uuid.uuid4()), namespace=namespace, subject=request.subject,
        allowed_meter_slugs=tuple(request.allowed_meter_slugs or ()), issued_ms=now_ms,
        expires_ms=request.expires_at_ms or now_ms + DEFAULT_LIFETIME_MS,
    )
    claims = {"iss": ISSUER, "sub": token.subject, "iat": now_ms // 1000, "exp": token.expires_ms // 1000,
              "Namespace": namespace, "Id": token.id, "AllowedMeterSlugs": list(token.allowed_meter_slugs)}
    return token, jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify(signed: str, secret: bytes, now_ms: int) -> PortalToken | None:
    """The token, if `signed` is one of ours (HS256, our issuer, a subject and namespace) and not expired."""
    import jwt

    try:
        claims = jwt.decode(signed, secret, algorithms=[ALGORITHM], issuer=ISSUER,
                            options={"require": ["exp", "iat", "sub", "iss"], "verify_exp": False,
                                     "verify_iat": False})  # checked against now_ms below
    except jwt.PyJWTError:
        return None
    namespace, token_id, slugs = claims.get("Namespace"), claims.get("Id"), claims.get("AllowedMeterSlugs") or []
    if not isinstance(namespace, str) or not isinstance(token_id, str) or not isinstance(slugs, list):
        return None
    if not isinstance(claims["sub"], str) or not claims["sub"] or claims["exp"] * 1000 <= now_ms:
        return None
    return PortalToken(id=token_id, namespace=namespace, subject=claims["sub"],
                       allowed_meter_slugs=tuple(str(s) for s in slugs), issued_ms=int(claims["iat"]) * 1000,
                       expires_ms=int(claims["exp"]) * 1000)
