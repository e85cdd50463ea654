"""The usage table: everything derived from the events: the event index, counting rows, manifests,
quarter-hour and day slots, and the compactor's state."""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from meterline.domain.event_index import EventRef, IndexPage
from meterline.storage.dynamo import TableAdapter
from meterline.storage.tables import USAGE_TABLE

_INDEX = "evidx"


def index_partition(namespace: str, day: str) -> str:
    return f"{namespace}#{_INDEX}#{day}"


# --- counting ---------------------------------------------------------------------------------
# Raw rows (the minute resolution, and what every coarser counter is recomputed from):
#   pk "{ns}#raw#{counter set}#{minute ms}#{bucket}"  sk "{batch id}"   rows: JSON list of Row lists
# Manifests (what the compactor must look at):
#   pk "manifest#{quarter ms}" (on-time batches, by event quarter)    sk "{batch id}"  parts: JSON
#   pk "late#{minute ms}"      (late batches, by processing minute)   sk "{batch id}"  parts: JSON
#   pk "daywork#{day ms}"      (namespaces with quarters to roll into days)  sk namespace
# Slots, one item per subject and slot, one attribute per counter set ("c" + counter set id):
#   quarter-hours: pk "{ns}#q#{day ms}"    sk "{subject}#{quarter index 00-95}"
#   days:          pk "{ns}#d#{month ms}"  sk "{subject}#{day of month 01-31}"
# Compaction state:  pk "compaction"  sk "state"

RAW = "raw"
COMPACTION_KEY = {"pk": {"S": "compaction"}, "sk": {"S": "state"}}


def pack(value: Any) -> bytes:
    """Pages (event references, rows, manifests) are stored as zlib-compressed JSON: they are written
    once per batch and billed by size, and compress about 3:1."""
    return zlib.compress(orjson.dumps(value), 1)


def unpack(blob: bytes) -> Any:
    return orjson.loads(zlib.decompress(blob))


def raw_partition(namespace: str, counter_set: str, minute_ms: int, bucket: int) -> str:
    return f"{namespace}#{RAW}#{counter_set}#{minute_ms}#{bucket}"


def slot_partition(namespace: str, level: str, period_ms: int) -> str:
    """level "q": quarter slots of the UTC day starting at period_ms; "d": day slots of the month."""
    return f"{namespace}#{level}#{period_ms}"


def slot_key(subject: str, index: int) -> str:
    return f"{subject}#{index:02d}"


class UsageStore(TableAdapter):
    spec = USAGE_TABLE

    def __init__(self, client: Any = None, table: str | None = None, retention_days: int = 400) -> None:
        super().__init__(client, table)
        self._retention_s = retention_days * 86_400

    def put_index_pages(self, pages: Sequence[IndexPage], now_ms: int) -> None:
        """Write index pages. A page's key is derived from its batch, so a redelivered batch
        overwrites its own pages instead of adding new ones."""
        expires = str(now_ms // 1000 + self._retention_s)
        for page in pages:
            self.client.put_item(
                TableName=self.table,
                Item={
                    "pk": {"S": index_partition(page.namespace, page.day)},
                    "sk": {"S": f"{page.hour:02d}#{page.page_id}"},
                    "refs": {"B": pack([ref.as_row() for ref in page.refs])},
                    "expiresAt": {"N": expires},
                },
            )

    def iter_index_hours(self, namespace: str, day: str, max_hour: int, min_hour: int
                         ) -> Iterator[tuple[int, list[EventRef]]]:
        """Yield (hour, refs of all pages of that hour) for one day, newest hour first."""
        current_hour: int | None = None
        refs: list[EventRef] = []
        request: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :lo AND :hi",
            "ExpressionAttributeValues": {
                ":pk": {"S": index_partition(namespace, day)},
                ":lo": {"S": f"{min_hour:02d}#"},
                ":hi": {"S": f"{max_hour:02d}#\U0010ffff"},
            },
            "ScanIndexForward": False,
        }
        while True:
            response = self.client.query(**request)
            for item in response.get("Items", []):
                hour = int(item["sk"]["S"][:2])
                if current_hour is not None and hour != current_hour:
                    yield current_hour, refs
                    refs = []
                current_hour = hour
                refs.extend(EventRef.from_row(row) for row in unpack(item["refs"]["B"]))
            last = response.get("LastEvaluatedKey")
            if not last:
                break
            request["ExclusiveStartKey"] = last
        if current_hour is not None:
            yield current_hour, refs

    # --- counting ---


    def put_raw_pages(self, pages: dict[str, list[list[Any]]], batch_id: str, now_ms: int) -> int:
        expires = str(now_ms // 1000 + self._retention_s)
        for partition, rows in pages.items():
            self.client.put_item(
                TableName=self.table,
                Item={"pk": {"S": partition}, "sk": {"S": batch_id},
                      "rows": {"B": pack(rows)}, "expiresAt": {"N": expires}},
            )
        return len(pages)

    def read_raw(self, partition: str, consistent: bool = True) -> list[list[Any]]:
        rows: list[list[Any]] = []
        for item in self._query_all(partition, consistent):
            rows.extend(unpack(item["rows"]["B"]))
        return rows

    def put_manifest(self, key: str, batch_id: str, parts: list[list[Any]], now_ms: int) -> None:
        self.client.put_item(
            TableName=self.table,
            Item={"pk": {"S": key}, "sk": {"S": batch_id}, "parts": {"B": pack(parts)},
                  # manifests are work items: a month is far beyond any compaction delay
                  "expiresAt": {"N": str(now_ms // 1000 + 31 * 86_400)}},
        )

    def read_manifests(self, key: str) -> list[list[Any]]:
        parts: list[list[Any]] = []
        for item in self._query_all(key, True):
            parts.extend(unpack(item["parts"]["B"]))
        return parts

    def put_slots(self, partition: str, key: str, states: dict[str, str]) -> None:
        """Overwrite the states of some counter sets in one slot item (idempotent)."""
        names = {f"#c{i}": f"c{counter_set}" for i, counter_set in enumerate(states)}
        values = {f":v{i}": {"S": state} for i, state in enumerate(states.values())}
        self.client.update_item(
            TableName=self.table,
            Key={"pk": {"S": partition}, "sk": {"S": key}},
            UpdateExpression="SET " + ", ".join(f"#c{i} = :v{i}" for i in range(len(states))),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def read_slots(self, partition: str, counter_set: str, subject: str | None = None,
                   first: int | None = None, last: int | None = None) -> list[tuple[str, int, str]]:
        """(subject, slot index, state JSON) of one counter set in a slot partition: one subject's slots
        first..last, or every subject's."""
        request: dict[str, Any] = {
            "TableName": self.table,
            "ConsistentRead": True,
            "ProjectionExpression": "sk, #c",
            "ExpressionAttributeNames": {"#c": f"c{counter_set}"},
        }
        if subject is None:
            request["KeyConditionExpression"] = "pk = :pk"
            request["ExpressionAttributeValues"] = {":pk": {"S": partition}}
        else:
            request["KeyConditionExpression"] = "pk = :pk AND sk BETWEEN :lo AND :hi"
            request["ExpressionAttributeValues"] = {
                ":pk": {"S": partition},
                ":lo": {"S": slot_key(subject, first or 0)},
                ":hi": {"S": slot_key(subject, 99 if last is None else last)},
            }
        out = []
        for item in self._query(request):
            state = item.get(f"c{counter_set}")
            if state is None:
                continue
            item_subject, _, index = item["sk"]["S"].rpartition("#")
            if subject is not None and item_subject != subject:
                continue
            out.append((item_subject, int(index), state["S"]))
        return out

    def read_slot_items(self, partition: str, subject: str | None = None) -> list[dict[str, Any]]:
        """Whole slot items (every counter set) of a partition, or of one subject in it."""
        request: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True}
        if subject is None:
            request["KeyConditionExpression"] = "pk = :pk"
            request["ExpressionAttributeValues"] = {":pk": {"S": partition}}
        else:
            request["KeyConditionExpression"] = "pk = :pk AND begins_with(sk, :prefix)"
            request["ExpressionAttributeValues"] = {":pk": {"S": partition}, ":prefix": {"S": subject + "#"}}
        return [item for item in self._query(request)
                if subject is None or item["sk"]["S"].rpartition("#")[0] == subject]

    def put_daywork(self, day_ms: int, namespace: str, now_ms: int) -> None:
        self.client.put_item(TableName=self.table, Item={
            "pk": {"S": f"daywork#{day_ms}"}, "sk": {"S": namespace},
            "expiresAt": {"N": str(now_ms // 1000 + 31 * 86_400)}})

    def read_daywork(self, day_ms: int) -> list[str]:
        return [item["sk"]["S"] for item in self._query_all(f"daywork#{day_ms}", True)]

    def get_compaction_state(self) -> dict[str, int]:
        item = self.client.get_item(TableName=self.table, Key=COMPACTION_KEY, ConsistentRead=True).get("Item")
        if not item:
            return {}
        return {name: int(value["N"]) for name, value in item.items() if "N" in value}

    def set_compaction_state(self, **values: int) -> None:
        names = {f"#a{i}": name for i, name in enumerate(values)}
        attr_values = {f":v{i}": {"N": str(v)} for i, v in enumerate(values.values())}
        self.client.update_item(
            TableName=self.table, Key=COMPACTION_KEY,
            UpdateExpression="SET " + ", ".join(f"#a{i} = :v{i}" for i in range(len(values))),
            ExpressionAttributeNames=names, ExpressionAttributeValues=attr_values,
        )

    def _query_all(self, partition: str, consistent: bool) -> Iterator[dict[str, Any]]:
        return self._query({
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": partition}},
            "ConsistentRead": consistent,
        })

    def _query(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        while True:
            response = self.client.query(**request)
            yield from response.get("Items", [])
            last = response.get("LastEvaluatedKey")
            if not last:
                return
            request["ExclusiveStartKey"] = last
