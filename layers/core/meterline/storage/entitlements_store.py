"""Entitlements and grants in the catalog table.

Layout:
- pk "{ns}#entitlement", sk "id#{id}": the entitlement (JSON), and its balance snapshot (`balanceSnapshot`,
  `snapshotAt`): the burn-down state just before a past period's reset, so a value starts there;
- pk "{ns}#subjectentitlement#{subjectKey}", sk "id#{id}": one per entitlement of the subject, so a
  subject's entitlements are one Query and one BatchGetItem, however many subjects the namespace has;
- pk "{ns}#entitlementkey", sk "{featureKey}#{subjectKey}": the id of the subject's active entitlement
  of the feature. Written in the transaction that creates the entitlement, conditioned on being absent,
  so a subject never holds two active entitlements of one feature, even under concurrent creates;
- pk "{ns}#grant", sk "id#{grantId}": each grant (JSON), for lookups by id and namespace listings;
- pk "{ns}#entgrants#{entitlementId}", sk "{endsAt, 16 digits}#{grantId}": the same grant, ordered by
  when it stops counting (expiry or void), so a value reads only the grants still active after its
  snapshot: the read does not grow with grants that ended in past periods.
"""

from __future__ import annotations

import builtins
import contextlib
from decimal import Decimal
from typing import Any

import orjson

from meterline.domain.burndown import Balances
from meterline.domain.entitlements import Entitlement, Grant
from meterline.storage.dynamo import TableAdapter
from meterline.storage.tables import CATALOG_TABLE


def _entitlement_key(namespace: str, entitlement_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"{namespace}#entitlement"}, "sk": {"S": f"id#{entitlement_id}"}}


def _subject_partition(namespace: str, subject_key: str) -> str:
    return f"{namespace}#subjectentitlement#{subject_key}"


def _active_key(namespace: str, feature_key: str, subject_key: str) -> dict[str, Any]:
    # feature keys have no '#', so the feature/subject split is unambiguous
    return {"pk": {"S": f"{namespace}#entitlementkey"}, "sk": {"S": f"{feature_key}#{subject_key}"}}


def _grant_key(namespace: str, grant_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"{namespace}#grant"}, "sk": {"S": f"id#{grant_id}"}}


def _grants_partition(namespace: str, entitlement_id: str) -> str:
    return f"{namespace}#entgrants#{entitlement_id}"


def _engine_grant_key(namespace: str, grant: Grant) -> dict[str, Any]:
    return {"pk": {"S": _grants_partition(namespace, grant.entitlement_id)},
            "sk": {"S": f"{grant.ends_at:016d}#{grant.id}"}}


def _json(model: Entitlement | Grant) -> dict[str, str]:
    return {"S": model.model_dump_json(exclude_none=True)}


def snapshot_json(state: Balances) -> str:
    return orjson.dumps({"at": state.at, "balances": {k: str(v) for k, v in state.balances.items()},
                         "overage": str(state.overage), "usage": str(state.usage),
                         "resetDue": state.reset_due}).decode()


def snapshot_of(text: str) -> Balances:
    raw = orjson.loads(text)
    return Balances(raw["at"], {k: Decimal(v) for k, v in raw["balances"].items()}, Decimal(raw["overage"]),
                    Decimal(raw["usage"]), raw["resetDue"])


def _with_snapshot(item: dict[str, Any]) -> tuple[Entitlement, Balances | None]:
    snapshot = snapshot_of(item["balanceSnapshot"]["S"]) if "balanceSnapshot" in item else None
    return Entitlement.model_validate_json(item["entitlement"]["S"]), snapshot


class EntitlementsStore(TableAdapter):
    spec = CATALOG_TABLE

    # --- entitlements ---------------------------------------------------------------------------------

    def _puts(self, namespace: str, entitlement: Entitlement, grants: builtins.list[Grant]) -> list[dict[str, Any]]:
        writes: list[dict[str, Any]] = [
            {"Put": {"TableName": self.table, "ConditionExpression": "attribute_not_exists(pk)",
                     "Item": {**_active_key(namespace, entitlement.feature_key, entitlement.subject_key),
                              "entitlementId": {"S": entitlement.id}}}},
            {"Put": {"TableName": self.table, "ConditionExpression": "attribute_not_exists(pk)",
                     "Item": {**_entitlement_key(namespace, entitlement.id), "entitlement": _json(entitlement),
                              "updatedAt": {"N": str(entitlement.updated_at)}}}},
            {"Put": {"TableName": self.table,
                     "Item": {"pk": {"S": _subject_partition(namespace, entitlement.subject_key)},
                              "sk": {"S": f"id#{entitlement.id}"}}}},
        ]
        for grant in grants:
            writes += self._grant_puts(namespace, grant)
        return writes

    def _grant_puts(self, namespace: str, grant: Grant) -> list[dict[str, Any]]:
        return [{"Put": {"TableName": self.table, "Item": {**_grant_key(namespace, grant.id), "grant": _json(grant)}}},
                {"Put": {"TableName": self.table, "Item": {**_engine_grant_key(namespace, grant),
                                                           "grant": _json(grant)}}}]

    def create(self, namespace: str, entitlement: Entitlement, grants: builtins.list[Grant]) -> str | None:
        """Store an entitlement (and its default grant) unless the subject has an active one of the
        feature; else that one's id."""
        try:
            self.client.transact_write_items(TransactItems=self._puts(namespace, entitlement, grants))
        except self.client.exceptions.TransactionCanceledException:
            return self.active_id(namespace, entitlement.feature_key, entitlement.subject_key) or "unknown"
        return None

    def replace(self, namespace: str, old: Entitlement, deleted: Entitlement, new: Entitlement,
                grants: builtins.list[Grant]) -> bool:
        """Soft-delete `old` (as `deleted`) and store `new` in its place, in one transaction; False if
        `old` changed meanwhile."""
        writes = self._puts(namespace, new, grants)
        writes[0] = {"Put": {"TableName": self.table, "ConditionExpression": "entitlementId = :old",
                             "ExpressionAttributeValues": {":old": {"S": old.id}},
                             "Item": writes[0]["Put"]["Item"]}}
        writes.append(self._update(namespace, old, deleted))
        try:
            self.client.transact_write_items(TransactItems=writes)
        except self.client.exceptions.TransactionCanceledException:
            return False
        return True

    def _update(self, namespace: str, old: Entitlement, new: Entitlement) -> dict[str, Any]:
        return {"Update": {
            "TableName": self.table, "Key": _entitlement_key(namespace, old.id),
            "UpdateExpression": "SET entitlement = :e, updatedAt = :u",
            "ConditionExpression": "updatedAt = :old",
            "ExpressionAttributeValues": {":e": _json(new), ":u": {"N": str(new.updated_at)},
                                          ":old": {"N": str(old.updated_at)}}}}

    def update(self, namespace: str, old: Entitlement, new: Entitlement) -> bool:
        """Replace `old` by `new` (a reset); False if it changed meanwhile. The snapshot stays."""
        try:
            self.client.transact_write_items(TransactItems=[self._update(namespace, old, new)])
        except self.client.exceptions.TransactionCanceledException:
            return False
        return True

    def delete(self, namespace: str, old: Entitlement, deleted: Entitlement) -> bool:
        """Soft-delete: store `deleted` (deletedAt set) and free the subject's feature; False if it changed."""
        try:
            self.client.transact_write_items(TransactItems=[
                self._update(namespace, old, deleted),
                {"Delete": {"TableName": self.table,
                            "Key": _active_key(namespace, old.feature_key, old.subject_key),
                            "ConditionExpression": "entitlementId = :id",
                            "ExpressionAttributeValues": {":id": {"S": old.id}}}},
            ])
        except self.client.exceptions.TransactionCanceledException:
            return False
        return True

    def active_id(self, namespace: str, feature_key: str, subject_key: str) -> str | None:
        item = self.client.get_item(TableName=self.table, Key=_active_key(namespace, feature_key, subject_key),
                                    ConsistentRead=True).get("Item")
        return item["entitlementId"]["S"] if item else None

    def get(self, namespace: str, entitlement_id: str) -> tuple[Entitlement, Balances | None] | None:
        """An entitlement and its snapshot."""
        item = self.client.get_item(TableName=self.table, Key=_entitlement_key(namespace, entitlement_id),
                                    ConsistentRead=True).get("Item")
        return None if item is None else _with_snapshot(item)

    def list(self, namespace: str) -> builtins.list[Entitlement]:
        return [Entitlement.model_validate_json(item["entitlement"]["S"])
                for item in self.partition_items(f"{namespace}#entitlement")]

    def of_subject(self, namespace: str, subject_key: str) -> builtins.list[tuple[Entitlement, Balances | None]]:
        """The subject's entitlements (ended ones included) with their snapshots, oldest first."""
        ids = [item["sk"]["S"].removeprefix("id#")
               for item in self.partition_items(_subject_partition(namespace, subject_key))]
        found = [_with_snapshot(item) for item in self.get_items([_entitlement_key(namespace, i) for i in ids],
                                                                  consistent=True)]
        return sorted(found, key=lambda pair: (pair[0].created_at, pair[0].id))

    def put_snapshot(self, namespace: str, entitlement_id: str, state: Balances) -> None:
        """Keep `state` as the entitlement's snapshot unless a later one is kept already."""
        with contextlib.suppress(self.client.exceptions.ConditionalCheckFailedException):
            self.client.update_item(
                TableName=self.table, Key=_entitlement_key(namespace, entitlement_id),
                UpdateExpression="SET balanceSnapshot = :s, snapshotAt = :at",
                ConditionExpression="attribute_exists(pk) AND (attribute_not_exists(snapshotAt) OR snapshotAt < :at)",
                ExpressionAttributeValues={":s": {"S": snapshot_json(state)}, ":at": {"N": str(state.at)}})

    # --- grants ---------------------------------------------------------------------------------------

    def add_grant(self, namespace: str, grant: Grant) -> None:
        self.client.transact_write_items(TransactItems=self._grant_puts(namespace, grant))

    def grant(self, namespace: str, grant_id: str) -> Grant | None:
        item = self.client.get_item(TableName=self.table, Key=_grant_key(namespace, grant_id),
                                    ConsistentRead=True).get("Item")
        return Grant.model_validate_json(item["grant"]["S"]) if item else None

    def list_grants(self, namespace: str) -> builtins.list[Grant]:
        return [Grant.model_validate_json(item["grant"]["S"]) for item in self.partition_items(f"{namespace}#grant")]

    def grants_of(self, namespace: str, entitlement_id: str, ending_after: int | None = None
                  ) -> builtins.list[Grant]:
        """An entitlement's grants (those still counting after `ending_after`, if given): one Query."""
        request: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True,
                                   "KeyConditionExpression": "pk = :pk",
                                   "ExpressionAttributeValues": {":pk": {"S": _grants_partition(namespace,
                                                                                                entitlement_id)}}}
        if ending_after is not None:
            request["KeyConditionExpression"] += " AND sk > :after"
            request["ExpressionAttributeValues"][":after"] = {"S": f"{ending_after:016d}#~"}
        return [Grant.model_validate_json(item["grant"]["S"]) for item in self.query_items(request)]

    def void_grant(self, namespace: str, grant: Grant, voided: Grant) -> bool:
        """Store `voided` in place of `grant` (both items); False if it was voided meanwhile."""
        writes: list[dict[str, Any]] = [
            {"Put": {"TableName": self.table, "ConditionExpression": "attribute_not_exists(voidedAt)",
                     "Item": {**_grant_key(namespace, grant.id), "grant": _json(voided),
                              "voidedAt": {"N": str(voided.voided_at)}}}},
            {"Put": {"TableName": self.table,
                     "Item": {**_engine_grant_key(namespace, voided), "grant": _json(voided)}}},
        ]
        if _engine_grant_key(namespace, grant) != _engine_grant_key(namespace, voided):  # it ends earlier now
            writes.append({"Delete": {"TableName": self.table, "Key": _engine_grant_key(namespace, grant)}})
        try:
            self.client.transact_write_items(TransactItems=writes)
        except self.client.exceptions.TransactionCanceledException:
            return False
        return True
