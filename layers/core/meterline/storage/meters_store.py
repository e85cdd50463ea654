"""Meters in the catalog table: one item per (namespace, slug).

Layout: pk = "{namespace}#meter", sk = "slug#{slug}"; the item holds the meter as JSON (`meter`, in the
API's shape), its `id` and `slug`, and a `version` that every replace increments and is conditioned
on (optimistic concurrency). A namespace's meters share one partition, so listing them is one Query;
there are few per namespace, which is also why a lookup by id lists them rather than keeping an index.

Meters whose backfill is due also have a marker at pk = "backfill#pending", sk = "{namespace}#{slug}",
written before the meter (so a meter never waits without one; a marker whose meter is not due is
dropped by the worker), and deleted when the backfill completes or the meter goes. The backfill worker
reads that one small partition every minute instead of scanning the catalog.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from meterline.domain.meters import BackfillState, BackfillStatus, Meter, is_slug, is_ulid
from meterline.storage.dynamo import TableAdapter
from meterline.storage.tables import CATALOG_TABLE

_BACKFILL_ATTEMPTS = 10
PENDING_BACKFILLS = "backfill#pending"
DUE = (BackfillState.PENDING, BackfillState.RUNNING)


def meters_partition(namespace: str) -> str:
    return f"{namespace}#meter"


def meter_key(namespace: str, slug: str) -> dict[str, Any]:
    return {"pk": {"S": meters_partition(namespace)}, "sk": {"S": f"slug#{slug}"}}


@dataclass(frozen=True)
class StoredMeter:
    meter: Meter
    version: int


def _pending_key(namespace: str, slug: str) -> dict[str, Any]:
    return {"pk": {"S": PENDING_BACKFILLS}, "sk": {"S": f"{namespace}#{slug}"}}


def _due(meter: Meter) -> bool:
    return meter.backfill is not None and meter.backfill.status in DUE


def _stored_meter(item: dict[str, Any]) -> StoredMeter:
    return StoredMeter(Meter.model_validate(orjson.loads(item["meter"]["S"])), int(item["version"]["N"]))


class MetersStore(TableAdapter):
    """Create, read, replace and delete the meters of a namespace. Writes are conditional: create only
    if the slug is new, replace and delete only the meter (id) and version the caller read."""

    spec = CATALOG_TABLE

    def _item(self, namespace: str, meter: Meter, version: int) -> dict[str, Any]:
        if meter.id is None:
            raise ValueError("a stored meter needs an id")
        return {
            **meter_key(namespace, meter.slug),
            "id": {"S": meter.id},
            "slug": {"S": meter.slug},
            "version": {"N": str(version)},
            "meter": {"S": orjson.dumps(meter.to_api()).decode()},
        }

    def create(self, namespace: str, meter: Meter) -> bool:
        """Store a new meter; False (and nothing written) if the namespace already has its slug."""
        if _due(meter):
            self._mark_pending(namespace, meter.slug)
        try:
            self.client.put_item(TableName=self.table, Item=self._item(namespace, meter, 1),
                                 ConditionExpression="attribute_not_exists(pk)")
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def get(self, namespace: str, slug: str) -> StoredMeter | None:
        item = self.client.get_item(TableName=self.table, Key=meter_key(namespace, slug),
                                    ConsistentRead=True).get("Item")
        return _stored_meter(item) if item else None

    def list(self, namespace: str) -> list[StoredMeter]:
        """Every meter of the namespace, by slug."""
        return [_stored_meter(item) for item in self.query_items({
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :slug)",
            "ExpressionAttributeValues": {":pk": {"S": meters_partition(namespace)}, ":slug": {"S": "slug#"}},
            "ConsistentRead": True,
        })]

    def meters(self, namespace: str) -> builtins.list[Meter]:
        return [stored.meter for stored in self.list(namespace)]

    def find(self, namespace: str, id_or_slug: str) -> StoredMeter | None:
        """A meter by id (a ULID) or slug. A ULID is looked up as an id first, then as a slug (a slug of
        26 digits is also a well-formed ULID)."""
        if is_ulid(id_or_slug):
            wanted = id_or_slug.upper()
            for stored in self.list(namespace):
                if stored.meter.id == wanted:
                    return stored
        return self.get(namespace, id_or_slug) if is_slug(id_or_slug) else None

    def replace(self, namespace: str, meter: Meter, expected_version: int) -> bool:
        """Write a changed meter if the stored one is still the same meter (id) at `expected_version`;
        False (and nothing written) if it was changed, deleted or re-created meanwhile."""
        if _due(meter):
            self._mark_pending(namespace, meter.slug)
        try:
            self.client.put_item(
                TableName=self.table,
                Item=self._item(namespace, meter, expected_version + 1),
                ConditionExpression="attribute_exists(pk) AND id = :id AND version = :version",
                ExpressionAttributeValues={":id": {"S": meter.id}, ":version": {"N": str(expected_version)}},
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def delete(self, namespace: str, slug: str, meter_id: str | None = None) -> bool:
        """Delete a meter (only if its id is `meter_id`, when given); False if there was none."""
        condition = "attribute_exists(pk)"
        values: dict[str, Any] = {}
        if meter_id is not None:
            condition += " AND id = :id"
            values[":id"] = {"S": meter_id}
        try:
            self.client.delete_item(TableName=self.table, Key=meter_key(namespace, slug),
                                    ConditionExpression=condition, **({"ExpressionAttributeValues": values}
                                                                      if values else {}))
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        self.drop_pending(namespace, slug)
        return True

    def set_backfill(self, namespace: str, slug: str, status: Mapping[str, Any] | BackfillStatus, *,
                     meter_id: str | None = None, group_by: Collection[str] | None = None) -> Meter | None:
        """Record a meter's backfill progress, e.g. {"status": "running", "startedAt": ...,
        "eventsScanned": 1200}. For the backfill worker; does not change `updatedAt`.

        Guards, so that a stale worker cannot overwrite the status of a newer backfill: with `meter_id`,
        only if the meter is still that meter (not deleted and re-created under the slug); with
        `group_by`, only if the meter's groupBy keys are still exactly those (adding keys resets the
        backfill to pending and calls for a new one). Returns the updated meter, or None if the meter is
        gone or a guard failed. Raises ValueError for an invalid status."""
        backfill = status if isinstance(status, BackfillStatus) else BackfillStatus.model_validate(status)
        for _ in range(_BACKFILL_ATTEMPTS):
            stored = self.get(namespace, slug)
            if stored is None or meter_id is not None and stored.meter.id != meter_id:
                return None
            if group_by is not None and set(stored.meter.group_by) != set(group_by):
                return None
            meter = stored.meter.model_copy(update={"backfill": backfill})
            if self.replace(namespace, meter, stored.version):
                if not _due(meter):
                    self.drop_pending(namespace, slug)
                return meter
        raise RuntimeError(f"meter {slug}: the backfill status kept changing concurrently")

    # --- backfills ---------------------------------------------------------------------------------
    # A backfill's resume point lives beside the meters: pk "backfill", sk "{ns}#{counter set}".

    def _mark_pending(self, namespace: str, slug: str) -> None:
        self.client.put_item(TableName=self.table, Item=_pending_key(namespace, slug))

    def drop_pending(self, namespace: str, slug: str) -> None:
        self.client.delete_item(TableName=self.table, Key=_pending_key(namespace, slug))

    def pending_backfills(self) -> builtins.list[tuple[str, StoredMeter]]:
        """The meters of every namespace whose backfill is due (one Query of the markers, one read per
        marker); markers of meters that are gone or not due are dropped."""
        due = []
        for item in self.partition_items(PENDING_BACKFILLS):
            namespace, slug = item["sk"]["S"].rsplit("#", 1)
            stored = self.get(namespace, slug)
            if stored is not None and _due(stored.meter):
                due.append((namespace, stored))
            else:
                self.drop_pending(namespace, slug)
        return due

    def backfill_cursor(self, namespace: str, counter_set: str) -> tuple[dict[str, Any] | None, int]:
        """(scan position, pages done) of a backfill in progress; (None, 0) if it has not started."""
        item = self.client.get_item(TableName=self.table, ConsistentRead=True, Key={
            "pk": {"S": "backfill"}, "sk": {"S": f"{namespace}#{counter_set}"}}).get("Item")
        if not item:
            return None, 0
        cursor = orjson.loads(item["cursor"]["S"]) if "cursor" in item else None
        return cursor, int(item["pages"]["N"])

    def save_backfill_cursor(self, namespace: str, counter_set: str, cursor: dict[str, Any] | None,
                             pages: int) -> None:
        item: dict[str, Any] = {"pk": {"S": "backfill"}, "sk": {"S": f"{namespace}#{counter_set}"},
                                "pages": {"N": str(pages)}}
        if cursor is not None:
            item["cursor"] = {"S": orjson.dumps(cursor).decode()}
        self.client.put_item(TableName=self.table, Item=item)

    def delete_backfill_cursor(self, namespace: str, counter_set: str) -> None:
        self.client.delete_item(TableName=self.table, Key={
            "pk": {"S": "backfill"}, "sk": {"S": f"{namespace}#{counter_set}"}})
