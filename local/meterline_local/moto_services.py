"""The AWS services the local stack keeps in moto, in process: SQS, KMS and EventBridge Scheduler.

DynamoDB is not among them (it is DynamoDB Local, a server); its requests pass through moto's hook
untouched and never wait for the lock below.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from pathlib import Path
from typing import Any

_AWS_HOSTS = ".amazonaws.com"


def serialize_moto_requests() -> None:
    """moto's in-process backends do not lock. Serve one moto request at a time, so a conditional write
    (moto's DynamoDB, in tests) is atomic and concurrent queue calls see consistent state. Requests to
    any other endpoint (DynamoDB Local) skip the lock."""
    from moto.core.botocore_stubber import BotocoreStubber

    if getattr(BotocoreStubber.process_request, "_meterline_locked", False):
        return
    original = BotocoreStubber.process_request
    lock = threading.RLock()

    def locked(self: Any, request: Any) -> Any:
        if _AWS_HOSTS not in request.url:
            return original(self, request)
        with lock:
            return original(self, request)

    locked._meterline_locked = True  # type: ignore[attr-defined]
    BotocoreStubber.process_request = locked  # type: ignore[method-assign]


def durable_kms_key(key_arn: str, saved: Path | None) -> str:
    """Make a moto KMS key survive restarts: the first start saves its id and key material in `saved`
    (mode 0600, in the data directory); later starts give the new moto key that id and material again,
    so report signing secrets encrypted before a restart still decrypt. Returns the key's ARN.

    moto has no API for key material or ids (no ImportKeyMaterial), hence its backend is set directly;
    this exists only in the local stack, never in AWS."""
    if saved is None:
        return key_arn
    from moto.kms.models import kms_backends

    region, account, key_id = key_arn.split(":")[3], key_arn.split(":")[4], key_arn.rsplit("/", 1)[1]
    backend = kms_backends[account][region]
    key = backend.keys[key_id]
    if not saved.exists():
        saved.write_text(json.dumps({"keyId": key.id, "material": base64.b64encode(key.key_material).decode()}))
        os.chmod(saved, 0o600)
        return key_arn
    state = json.loads(saved.read_text())
    del backend.keys[key.id]
    key.id = state["keyId"]
    key.arn = key_arn.rsplit("/", 1)[0] + "/" + key.id
    key.key_material = base64.b64decode(state["material"])
    backend.keys[key.id] = key
    return key.arn


def portal_secret(saved: Path | None) -> str:
    """The portal token signing secret, in moto's Secrets Manager: the one kept in `saved` (mode 0600,
    in the data directory; made on first start) so tokens stay valid across restarts, or a new one per
    start in memory. Returns the secret's ARN."""
    import secrets

    import boto3

    if saved is not None and saved.exists():
        value = saved.read_text().strip()
    else:
        value = secrets.token_urlsafe(48)
        if saved is not None:
            saved.write_text(value)
            os.chmod(saved, 0o600)
    client = boto3.client("secretsmanager", region_name="us-east-1")
    arn: str = client.create_secret(Name="meterline-local-portal-token-secret", SecretString=value)["ARN"]
    return arn
