"""Subjects in the catalog table: pk = "{namespace}#subject", sk = "key#{key}", the subject as JSON
(OpenMeter's shape). A namespace's subjects share one partition: listing them is one Query."""

from __future__ import annotations

import builtins
from typing import Any

import orjson

from meterline.storage.dynamo import TableAdapter
from meterline.storage.tables import CATALOG_TABLE


def _key(namespace: str, key: str) -> dict[str, Any]:
    return {"pk": {"S": f"{namespace}#subject"}, "sk": {"S": f"key#{key}"}}


class SubjectsStore(TableAdapter):
    spec = CATALOG_TABLE

    def get(self, namespace: str, key: str) -> dict[str, Any] | None:
        item = self.client.get_item(TableName=self.table, Key=_key(namespace, key), ConsistentRead=True).get("Item")
        return orjson.loads(item["subject"]["S"]) if item else None

    def put(self, namespace: str, records: builtins.list[dict[str, Any]]) -> None:
        self.put_batch([{**_key(namespace, record["key"]), "subject": {"S": orjson.dumps(record).decode()}}
                        for record in records])

    def list(self, namespace: str) -> builtins.list[dict[str, Any]]:
        return [orjson.loads(item["subject"]["S"]) for item in self.partition_items(f"{namespace}#subject")]

    def delete(self, namespace: str, key: str) -> bool:
        try:
            self.client.delete_item(TableName=self.table, Key=_key(namespace, key),
                                    ConditionExpression="attribute_exists(pk)")
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True
