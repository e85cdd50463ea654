"""The events table: conditional puts keyed on (namespace, source, id), reads by key, and the manifests
of the event time index (meterline.storage.tables.EVENT_TIME_INDEX)."""

from __future__ import annotations

import uuid
import zlib
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from meterline.domain.event_index import EventRef
from meterline.domain.events import CloudEvent, StoredEvent
from meterline.domain.timeutil import DAY_S, HOUR_MS, floor_to
from meterline.storage.dynamo import MAX_CONCURRENT_CALLS, TableAdapter, concurrently
from meterline.storage.tables import EVENT_TIME_INDEX, EVENTS_TABLE

DEFAULT_RETENTION_DAYS = 400


def event_key(namespace: str, source: str, event_id: str) -> str:
    """The partition key. The length prefix keeps ("a#b", "c") and ("a", "b#c") apart."""
    return f"{namespace}#{len(source)}#{source}#{event_id}"


def is_manifest(item: dict[str, Any]) -> bool:
    return EVENT_TIME_INDEX.partition_key in item


@dataclass(frozen=True)
class PutResult:
    stored: int
    duplicates: int


class StorageUnavailable(Exception):
    """DynamoDB refused or failed a write that was not a duplicate; the caller may retry."""


def stored_event_from_item(item: dict[str, Any]) -> StoredEvent:
    """Decode an item (GetItem result or stream image, both in DynamoDB's attribute-value form)."""
    data = item.get("data")
    schema = item.get("dataschema")
    return StoredEvent(
        namespace=item["ns"]["S"],
        id=item["id"]["S"],
        source=item["source"]["S"],
        type=item["type"]["S"],
        subject=item["subject"]["S"],
        time_ms=int(item["time"]["N"]),
        ingested_ms=int(item["ingestedAt"]["N"]),
        data=orjson.loads(data["S"]) if data is not None else None,
        dataschema=schema["S"] if schema is not None else None,
    )


class EventsStore(TableAdapter):
    """Writes each event at most once, concurrently, and reads events back by key."""

    spec = EVENTS_TABLE

    def __init__(self, client: Any = None, table: str | None = None,
                 retention_days: int = DEFAULT_RETENTION_DAYS) -> None:
        super().__init__(client, table)
        self._retention_s = retention_days * DAY_S

    def item(self, namespace: str, event: CloudEvent, ingested_ms: int) -> dict[str, Any]:
        item: dict[str, Any] = {
            "pk": {"S": event_key(namespace, event.source, event.id)},
            "ns": {"S": namespace},
            "id": {"S": event.id},
            "source": {"S": event.source},
            "type": {"S": event.type},
            "subject": {"S": event.subject},
            "time": {"N": str(event.time)},
            "ingestedAt": {"N": str(ingested_ms)},
            # TTL counts from ingestion, so a duplicate is refused for the whole retention period.
            "expiresAt": {"N": str(ingested_ms // 1000 + self._retention_s)},
        }
        if event.data is not None:
            item["data"] = {"S": orjson.dumps(event.data).decode()}
        if event.dataschema is not None:
            item["dataschema"] = {"S": event.dataschema}
        return item

    def manifests(self, namespace: str, events: Sequence[CloudEvent], ingested_ms: int) -> list[dict[str, Any]]:
        """The time index's manifests of one request: per UTC hour of event time, its events by type and
        source as `[id, subject, ms since the previous one]` in time order (the first from the hour's start),
        and the request's ingestion time (one small item per hour a request touches, whatever its types):
        enough to list events by time without reading them. Sources and the small time steps are what zlib
        compresses; ids rarely compress. The key ("{ns}#~m#{uuid}") cannot be an event's: an event key's
        second part is a number."""
        timed: dict[int, dict[str, dict[str, list[tuple[int, str, str]]]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(list)))
        for event in events:
            time_ms = ingested_ms if event.time is None else event.time
            timed[floor_to(time_ms, HOUR_MS)][event.type][event.source].append((time_ms, event.id, event.subject))
        manifests = []
        for hour, by_type in timed.items():
            entries: dict[str, dict[str, list[list[Any]]]] = {}
            for event_type, by_source in by_type.items():
                entries[event_type] = {}
                for source, listed in by_source.items():
                    previous, rows = hour, []
                    for time_ms, event_id, subject in sorted(listed):
                        rows.append([event_id, subject, time_ms - previous])
                        previous = time_ms
                    entries[event_type][source] = rows
            manifests.append({"pk": {"S": f"{namespace}#~m#{uuid.uuid4().hex}"},
                              EVENT_TIME_INDEX.partition_key: {"S": namespace},
                              EVENT_TIME_INDEX.sort_key: {"N": str(hour)},
                              "keys": {"B": zlib.compress(orjson.dumps(entries))},
                              "ingestedAt": {"N": str(ingested_ms)},
                              "expiresAt": {"N": str(ingested_ms // 1000 + self._retention_s)}})
        return manifests

    def put_new(self, namespace: str, events: Sequence[CloudEvent], ingested_ms: int) -> PutResult:
        """Store every event whose key is new; a duplicate changes nothing. The request's time-index
        manifests are written first, so every stored event is findable by time (a manifest may also
        name a duplicate, or an event whose put then failed: readers skip what is not there). Returns
        only once every write has been acknowledged; raises StorageUnavailable if any write failed."""
        items = [self.item(namespace, event, ingested_ms) for event in events]
        lanes = max(1, min(MAX_CONCURRENT_CALLS, len(items)))
        try:
            self.put_batch(self.manifests(namespace, events, ingested_ms))
            results = concurrently(self._put_all, [items[lane::lanes] for lane in range(lanes)])
        except Exception as exc:
            raise StorageUnavailable(str(exc)) from exc
        return PutResult(sum(stored for stored, _ in results), sum(duplicates for _, duplicates in results))

    def _put_all(self, items: Iterable[dict[str, Any]]) -> tuple[int, int]:
        stored = duplicates = 0
        client = self.client
        conditional_failed = client.exceptions.ConditionalCheckFailedException
        for item in items:
            try:
                client.put_item(TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(pk)")
                stored += 1
            except conditional_failed:
                duplicates += 1
        return stored, duplicates

    def get_many(self, namespace: str, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], StoredEvent]:
        """Fetch events by (source, id); missing ones (e.g. expired) are absent from the result."""
        found: dict[tuple[str, str], StoredEvent] = {}
        wanted = [{"pk": {"S": event_key(namespace, source, event_id)}} for source, event_id in dict.fromkeys(keys)]
        for item in self.get_items(wanted):
            event = stored_event_from_item(item)
            found[(event.source, event.id)] = event
        return found

    def hours(self, namespace: str, from_ms: int, to_ms: int, newest_first: bool = False
              ) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """The UTC hours of [from, to) in which the namespace has events, oldest (or newest) first, each with
        the keys of its manifests: one ranged Query of the time index, read lazily (stop iterating to stop
        reading)."""
        current: int | None = None
        manifests: list[dict[str, Any]] = []
        for item in self.query_items({
                "IndexName": EVENT_TIME_INDEX.name,
                "KeyConditionExpression": "#ns = :ns AND #hour BETWEEN :first AND :last",
                "ExpressionAttributeNames": {"#ns": EVENT_TIME_INDEX.partition_key, "#hour": EVENT_TIME_INDEX.sort_key},
                "ExpressionAttributeValues": {":ns": {"S": namespace}, ":first": {"N": str(floor_to(from_ms, HOUR_MS))},
                                              ":last": {"N": str(to_ms - 1)}},
                "ScanIndexForward": not newest_first}):
            hour = int(item[EVENT_TIME_INDEX.sort_key]["N"])
            if current is not None and hour != current:
                yield current, manifests
                manifests = []
            current = hour
            manifests.append({"pk": item["pk"]})
        if current is not None:
            yield current, manifests

    def _entries(self, manifests: Sequence[dict[str, Any]], hour_ms: int
                 ) -> Iterator[tuple[str, str, str, EventRef | None]]:
        """(event type, source, id, what the manifest says of the event) of every event the manifests name;
        None for manifests written before they carried subjects and times (`{type: [[source, id], ...]}`)."""
        for item in self.get_items(list(manifests)):
            ingested = int(item["ingestedAt"]["N"]) if "ingestedAt" in item else None
            for event_type, listed in orjson.loads(zlib.decompress(item["keys"]["B"])).items():
                if isinstance(listed, list):
                    for source, event_id, *_ in listed:
                        yield event_type, source, event_id, None
                    continue
                for source, rows in listed.items():
                    time_ms = hour_ms
                    for event_id, subject, step in rows:
                        time_ms += step
                        yield event_type, source, event_id, (
                            EventRef(time_ms, ingested, source, event_id, subject) if ingested is not None else None)

    def events_of(self, namespace: str, manifests: Sequence[dict[str, Any]], event_types: Collection[str] | None,
                  hour_ms: int) -> list[StoredEvent]:
        """The stored events of `event_types` (None: every type) that an hour's manifests name, in time order
        (a manifest may name a duplicate or an event whose put failed: only what is stored comes back)."""
        keys = {(source, event_id): None for event_type, source, event_id, _ in self._entries(manifests, hour_ms)
                if event_types is None or event_type in event_types}
        found = self.get_many(namespace, list(keys))
        return sorted((event for event in found.values()
                       if (event_types is None or event.type in event_types)
                       and hour_ms <= event.time_ms < hour_ms + HOUR_MS),
                      key=lambda event: (event.time_ms, event.source, event.id))

    def refs_of(self, namespace: str, manifests: Sequence[dict[str, Any]], hour_ms: int) -> list[EventRef]:
        """What an hour's manifests say of their events (time, ingestion, key, subject), as written: a
        duplicate's or a failed put's entry is there too, so a listing checks what it shows against the
        stored events. Manifests written before they carried subjects and times are read through the events."""
        refs: list[EventRef] = []
        older: list[tuple[str, str]] = []
        for _, source, event_id, ref in self._entries(manifests, hour_ms):
            if ref is not None:
                refs.append(ref)
            else:
                older.append((source, event_id))
        if older:
            refs.extend(EventRef(event.time_ms, event.ingested_ms, event.source, event.id, event.subject)
                        for event in self.get_many(namespace, older).values()
                        if hour_ms <= event.time_ms < hour_ms + HOUR_MS)
        return refs

    def at_hour(self, namespace: str, event_types: Collection[str] | None, hour_ms: int) -> list[StoredEvent]:
        """The namespace's stored events of `event_types` (None: every type) in the UTC hour at `hour_ms`."""
        return [event for hour, manifests in self.hours(namespace, hour_ms, hour_ms + HOUR_MS)
                for event in self.events_of(namespace, manifests, event_types, hour)]

    def scan_type(self, namespace: str, event_type: str, cursor: dict[str, Any] | None, limit: int = 1000
                  ) -> tuple[list[StoredEvent], dict[str, Any] | None]:
        """One page of a full scan for the events of one type in one namespace (for backfills).
        Returns the events and the cursor of the next page (None at the end)."""
        request: dict[str, Any] = {
            "TableName": self.table,
            "Limit": limit,
            "FilterExpression": "ns = :ns AND #type = :type",
            "ExpressionAttributeNames": {"#type": "type"},
            "ExpressionAttributeValues": {":ns": {"S": namespace}, ":type": {"S": event_type}},
            "ConsistentRead": True,
        }
        if cursor:
            request["ExclusiveStartKey"] = cursor
        response = self.client.scan(**request)
        return [stored_event_from_item(item) for item in response.get("Items", [])], response.get("LastEvaluatedKey")
