"""Standard Webhooks signatures (https://www.standardwebhooks.com), so receivers can verify a usage
export with any Standard Webhooks library: HMAC-SHA256 over "<id>.<timestamp>.<body>"."""

from __future__ import annotations

import base64
import math
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"


def new_signing_secret() -> str:
    """A fresh secret in the Standard Webhooks form: "whsec_" + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def signature_headers(secret: str | Sequence[str], webhook_id: str, body: bytes, at: datetime) -> dict[str, str]:
    """The webhook-id, webhook-timestamp and webhook-signature headers for `body` sent at `at`. Several
    secrets (during a rotation) give several space-separated signatures; receivers accept any one."""
    # The library replaces (rather than converts) the time zone, so hand it UTC; a naive time is taken as UTC.
    at_utc = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    secrets_ = [secret] if isinstance(secret, str) else list(secret)
    signature = " ".join(Webhook(s).sign(msg_id=webhook_id, timestamp=at_utc, data=body.decode("utf-8"))
                         for s in secrets_)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(math.floor(at_utc.timestamp())),
        "webhook-signature": signature,
    }
