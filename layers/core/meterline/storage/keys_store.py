"""API keys in the catalog table (only their hashes).

Layout: the key itself at pk = "$apikey#{keyId}", sk = "key" (hash, namespace, scope, name, createdAt,
lastUsedAt, revokedAt): one GetItem authenticates a request. A pointer per key at
pk = "{namespace}#apikey", sk = keyId lists a namespace's keys. `$` cannot start a namespace, so these
partitions never meet a namespace's own.
"""

from __future__ import annotations

import contextlib
from typing import Any

from meterline.domain.access import LAST_USED_RESOLUTION_MS, ApiKey, Scope
from meterline.storage.dynamo import TableAdapter, concurrently
from meterline.storage.tables import CATALOG_TABLE


def _key(key_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"$apikey#{key_id}"}, "sk": {"S": "key"}}


def _listing_key(namespace: str, key_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"{namespace}#apikey"}, "sk": {"S": key_id}}


def _number(item: dict[str, Any], name: str) -> int | None:
    return int(item[name]["N"]) if name in item else None


def _api_key(item: dict[str, Any]) -> ApiKey:
    return ApiKey(
        key_id=item["pk"]["S"].removeprefix("$apikey#"),
        hashed=item["hash"]["S"],
        namespace=item["namespace"]["S"],
        scope=Scope(item["scope"]["S"]),
        name=item["name"]["S"],
        created_ms=int(item["createdAt"]["N"]),
        last_used_ms=_number(item, "lastUsedAt"),
        revoked_ms=_number(item, "revokedAt"),
    )


class KeysStore(TableAdapter):
    spec = CATALOG_TABLE

    def create(self, key: ApiKey) -> None:
        """Store a new key and its listing entry together."""
        item = {
            **_key(key.key_id),
            "hash": {"S": key.hashed},
            "namespace": {"S": key.namespace},
            "scope": {"S": key.scope.value},
            "name": {"S": key.name},
            "createdAt": {"N": str(key.created_ms)},
        }
        self.client.transact_write_items(TransactItems=[
            {"Put": {"TableName": self.table, "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Put": {"TableName": self.table, "Item": _listing_key(key.namespace, key.key_id)}},
        ])

    def get(self, key_id: str) -> ApiKey | None:
        item = self.client.get_item(TableName=self.table, Key=_key(key_id), ConsistentRead=True).get("Item")
        return _api_key(item) if item else None

    def list(self, namespace: str) -> list[ApiKey]:
        ids = [item["sk"]["S"] for item in self.partition_items(f"{namespace}#apikey")]
        return [key for key in concurrently(self.get, ids) if key is not None]

    def revoke(self, key_id: str, now_ms: int) -> bool:
        """Mark a key revoked; False if there is no such key or it was revoked already."""
        try:
            self.client.update_item(
                TableName=self.table, Key=_key(key_id), UpdateExpression="SET revokedAt = :now",
                ConditionExpression="attribute_exists(pk) AND attribute_not_exists(revokedAt)",
                ExpressionAttributeValues={":now": {"N": str(now_ms)}},
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def touch(self, key_id: str, now_ms: int) -> None:
        """Record a use, unless one was recorded within the last minute (at most one write a minute)."""
        # A failed condition means a use within the minute is recorded already.
        with contextlib.suppress(self.client.exceptions.ConditionalCheckFailedException):
            self.client.update_item(
                TableName=self.table, Key=_key(key_id), UpdateExpression="SET lastUsedAt = :now",
                ConditionExpression="attribute_exists(pk) AND (attribute_not_exists(lastUsedAt) OR lastUsedAt < :due)",
                ExpressionAttributeValues={":now": {"N": str(now_ms)},
                                           ":due": {"N": str(now_ms - LAST_USED_RESOLUTION_MS)}},
            )
