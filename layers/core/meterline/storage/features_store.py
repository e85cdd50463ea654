"""Features in the catalog table.

Layout: a feature at pk = "{namespace}#feature", sk = "id#{id}" (the feature as JSON, archived ones
included); the key of each active feature at pk = "{namespace}#featurekey", sk = key, naming its id.
A create writes both in one transaction, conditioned on the key being free, so two creates of one key
cannot both succeed; archiving sets archivedAt and frees the key, also together.
"""

from __future__ import annotations

import builtins
from typing import Any

import orjson

from meterline.domain.features import Feature
from meterline.storage.dynamo import TableAdapter
from meterline.storage.tables import CATALOG_TABLE


def _feature_key(namespace: str, feature_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"{namespace}#feature"}, "sk": {"S": f"id#{feature_id}"}}


def _active_key(namespace: str, key: str) -> dict[str, Any]:
    return {"pk": {"S": f"{namespace}#featurekey"}, "sk": {"S": key}}


def _feature(item: dict[str, Any]) -> Feature:
    return Feature.model_validate(orjson.loads(item["feature"]["S"]))


class FeaturesStore(TableAdapter):
    spec = CATALOG_TABLE

    def create(self, namespace: str, feature: Feature) -> str | None:
        """Store a feature whose key no active feature has; else the id of the one that has it."""
        assert feature.id is not None
        try:
            self.client.transact_write_items(TransactItems=[
                {"Put": {"TableName": self.table, "ConditionExpression": "attribute_not_exists(pk)",
                         "Item": {**_active_key(namespace, feature.key), "featureId": {"S": feature.id}}}},
                {"Put": {"TableName": self.table, "ConditionExpression": "attribute_not_exists(pk)",
                         "Item": {**_feature_key(namespace, feature.id),
                                  "feature": {"S": orjson.dumps(feature.to_api()).decode()}}}},
            ])
        except self.client.exceptions.TransactionCanceledException:
            holder = self.active_id(namespace, feature.key)
            return holder or "unknown"
        return None

    def active_id(self, namespace: str, key: str) -> str | None:
        item = self.client.get_item(TableName=self.table, Key=_active_key(namespace, key),
                                    ConsistentRead=True).get("Item")
        return item["featureId"]["S"] if item else None

    def get(self, namespace: str, feature_id: str) -> Feature | None:
        item = self.client.get_item(TableName=self.table, Key=_feature_key(namespace, feature_id),
                                    ConsistentRead=True).get("Item")
        return _feature(item) if item else None

    def list(self, namespace: str) -> builtins.list[Feature]:
        return [_feature(item) for item in self.partition_items(f"{namespace}#feature")]

    def archive(self, namespace: str, feature: Feature, archived: Feature) -> bool:
        """Replace the active `feature` by its `archived` form and free its key; False if it changed."""
        assert feature.id is not None
        try:
            self.client.transact_write_items(TransactItems=[
                {"Delete": {"TableName": self.table, "Key": _active_key(namespace, feature.key),
                            "ConditionExpression": "featureId = :id",
                            "ExpressionAttributeValues": {":id": {"S": feature.id}}}},
                {"Put": {"TableName": self.table, "ConditionExpression": "attribute_exists(pk)",
                         "Item": {**_feature_key(namespace, feature.id),
                                  "feature": {"S": orjson.dumps(archived.to_api()).decode()}}}},
            ])
        except self.client.exceptions.TransactionCanceledException:
            return False
        return True
