from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta, timezone

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from meterline.webhooks import new_signing_secret, signature_headers

BODY = b'{"subject":"customer-1","usage":[{"meter":"tokens","value":1234.5}],"note":"caf\xc3\xa9"}'


def test_new_secret_is_whsec_and_32_random_bytes() -> None:
    secret = new_signing_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    assert new_signing_secret() != secret


def test_headers_verify_with_the_standard_webhooks_library() -> None:
    secret = new_signing_secret()
    headers = signature_headers(secret, "msg_2kT5", BODY, datetime.now(UTC))
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-id"] == "msg_2kT5"
    assert Webhook(secret).verify(BODY, headers)["subject"] == "customer-1"


def test_signature_is_hmac_sha256_of_id_timestamp_body() -> None:
    key = bytes(range(32))
    at = datetime(2024, 1, 1, 12, 0, 0, 900_000, tzinfo=UTC)
    headers = signature_headers("whsec_" + base64.b64encode(key).decode(), "msg_1", BODY, at)
    assert headers["webhook-timestamp"] == "1704110400"  # whole seconds, rounded down
    expected = hmac.new(key, b"msg_1.1704110400." + BODY, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(expected).decode()


def test_time_zone_of_at_does_not_change_the_timestamp() -> None:
    secret = new_signing_secret()
    utc = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    in_tokyo = utc.astimezone(timezone(timedelta(hours=9)))
    naive_utc = utc.replace(tzinfo=None)
    assert signature_headers(secret, "m", BODY, in_tokyo) == signature_headers(secret, "m", BODY, utc)
    assert signature_headers(secret, "m", BODY, naive_utc) == signature_headers(secret, "m", BODY, utc)


def test_verification_fails_for_another_body_or_secret() -> None:
    secret = new_signing_secret()
    headers = signature_headers(secret, "msg_1", BODY, datetime.now(UTC))
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"1234.5", b"9999.9"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_signing_secret()).verify(BODY, headers)
