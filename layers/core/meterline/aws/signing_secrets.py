"""Report signing secrets at rest: encrypted with the stack's KMS key, bound (encryption context) to
the namespace and report id, so a ciphertext copied to another report does not decrypt. The plaintext
exists only in the create/rotate response and, briefly, in the sender's memory."""

from __future__ import annotations

from typing import Any

from meterline.aws.clients import AwsAdapter
from meterline.settings import required_env

KEY_ENV = "SIGNING_KEY_ID"
# The encryption context's keys; the CDK key grants require exactly these (infra/exports.py).
CONTEXT_KEYS = ("meterline:namespace", "meterline:report")


class SigningSecrets(AwsAdapter):
    service = "kms"

    def __init__(self, client: Any = None, key_id: str | None = None) -> None:
        super().__init__(client)
        self._key_id = key_id

    @staticmethod
    def _context(namespace: str, report_id: str) -> dict[str, str]:
        return dict(zip(CONTEXT_KEYS, (namespace, report_id), strict=True))

    def encrypt(self, namespace: str, report_id: str, secret: str) -> bytes:
        key_id = self._key_id or required_env(KEY_ENV, "the KMS key of signing secrets")
        return self.client.encrypt(KeyId=key_id, Plaintext=secret.encode(),
                                   EncryptionContext=self._context(namespace, report_id))["CiphertextBlob"]

    def decrypt(self, namespace: str, report_id: str, ciphertext: bytes) -> str:
        return self.client.decrypt(CiphertextBlob=ciphertext,
                                   EncryptionContext=self._context(namespace, report_id))["Plaintext"].decode()
