"""The usage table: everything derived from the events: the event index, counting rows, manifests,
quarter-hour and day slots, and the compactor's state."""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from meterline.domain.event_index import EventRef, IndexPage
from meterline.domain.slots import HORIZON_NAMES, QUARTER, Horizons, Resolution
from meterline.domain.timeutil import DAY_MS, DAY_S
from meterline.storage.dynamo import TableAdapter
from meterline.storage.tables import USAGE_TABLE

_INDEX = "evidx"


def index_partition(namespace: str, day: str) -> str:
    return f"{namespace}#{_INDEX}#{day}"


# --- counting ---------------------------------------------------------------------------------
# Raw rows (the minute resolution, and what every coarser counter is recomputed from):
#   pk "{ns}#raw#{counter set}#{quarter ms}#{bucket}"  sk "{minute ms}#{batch id}"  rows: list of Row lists
#       (a page per minute and batch; a Query over a minute range of one partition finds a subject's rows)
# Manifests (what the compactor must look at, and the directory of a quarter's raw partitions):
#   pk "manifest#{quarter ms}"  sk "{ns}#{batch id}"   parts: [[ns, counter set, minute, bucket]]
#       on-time and late batches alike, by event quarter; a reader reads its namespace's key range only
#   pk "late#{processing quarter ms}"  sk "{ns}#{batch id}"  parts: the compactor's list of late work
#   pk "{ns}#late"  sk "{processing quarter ms, 13 digits}#{batch id}"  parts: the same, per namespace,
#       so a reader finds every late part the compactor has not folded yet in one Query
#   pk "work#{level}#{period ms}"  sk ns    namespaces with quarters to roll into an hour or a day
# Slots (level q: quarter-hours, partitions per UTC day; h: hours and d: days, partitions per UTC month),
# key "{subject byte length, 3 digits}#{subject}#{index in the partition}":
#   packed: pk "{ns}#{level}#{period ms}"                  one attribute "c{counter set}" per small state
#   split:  pk "{ns}#{level}#{period ms}#{counter set}"    attribute "s": one state of more than
#           SPLIT_STATE_BYTES, so that reading one meter never pays for a subject's other large states
#   A state lives in exactly one of them; if both exist (a state that shrank), the packed one is current.
#   The length prefix keeps one subject's keys contiguous and its key ranges exact ("a" and "a#1").
# Compaction state:  pk "compaction"  sk "state"

RAW = "raw"
COMPACTION_KEY = {"pk": {"S": "compaction"}, "sk": {"S": "state"}}


def pack(value: Any) -> bytes:
    """Pages (event references, rows, manifests) are stored as zlib-compressed JSON: they are written
    once per batch and billed by size, and compress about 3:1."""
    return zlib.compress(orjson.dumps(value), 1)


def unpack(blob: bytes) -> Any:
    return orjson.loads(zlib.decompress(blob))


def raw_partition(namespace: str, counter_set: str, quarter_ms: int, bucket: int) -> str:
    return f"{namespace}#{RAW}#{counter_set}#{quarter_ms}#{bucket}"


def slot_partition(namespace: str, level: Resolution, period_ms: int, counter_set: str | None = None) -> str:
    base = f"{namespace}#{level.key}#{period_ms}"
    return base if counter_set is None else f"{base}#{counter_set}"


def slot_key(subject: str, level: Resolution, index: int) -> str:
    return f"{len(subject.encode()):03d}#{subject}#{index:0{level.width}d}"


def parse_slot_key(key: str) -> tuple[str, int]:
    subject, _, index = key.split("#", 1)[1].rpartition("#")
    return subject, int(index)


# A state longer than this (JSON text) gets an item of its own. Most subjects' states are a few dozen
# bytes and share one item (one write unit per subject and slot); a busy subject's large states (many
# groups) are split out, so a query of one meter reads that meter's state and not the others'.
SPLIT_STATE_BYTES = 256
SlotStates = dict[int, dict[str, str]]  # slot index -> counter set -> state (JSON)


@dataclass(frozen=True)
class Retention:
    """How long derived usage items live. Index pages, hour and day slots: `days` (as events). Raw
    counting rows (the minute resolution): `minute_days`, counted from when they are written, which is
    never before their events' time. Quarter-hour slots: `quarter_days` after the quarter. Queries that
    would need an expired resolution are refused (meterline.services.usage_query), never answered short."""

    days: int = 400
    minute_days: int | None = None
    quarter_days: int | None = None

    @property
    def minute_ms(self) -> int:
        return (self.minute_days or self.days) * DAY_MS

    @property
    def quarter_ms(self) -> int:
        return (self.quarter_days or self.days) * DAY_MS

    def slot_expiry_s(self, level: Resolution, start_ms: int) -> int:
        keep_ms = self.quarter_ms if level is QUARTER else self.days * DAY_MS
        return (start_ms + level.length_ms + keep_ms) // 1000


class UsageStore(TableAdapter):
    spec = USAGE_TABLE

    def __init__(self, client: Any = None, table: str | None = None, retention_days: int = 400,
                 retention: Retention | None = None) -> None:
        super().__init__(client, table)
        self.retention = retention or Retention(days=retention_days)
        self._retention_s = self.retention.days * DAY_S

    @classmethod
    def configured(cls) -> UsageStore:
        """The store with the retention of the environment (meterline.settings)."""
        from meterline.settings import settings

        config = settings()
        return cls(retention=Retention(config.retention_days, config.minute_retention_days,
                                       config.quarter_retention_days))

    def put_index_pages(self, pages: Sequence[IndexPage], now_ms: int) -> None:
        """Write index pages. A page's key is derived from its batch, so a redelivered batch
        overwrites its own pages instead of adding new ones."""
        expires = str(now_ms // 1000 + self._retention_s)
        self.put_batch([{
            "pk": {"S": index_partition(page.namespace, page.day)},
            "sk": {"S": f"{page.hour:02d}#{page.page_id}"},
            "refs": {"B": pack([ref.as_row() for ref in page.refs])},
            "expiresAt": {"N": expires},
        } for page in pages])

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

    def put_raw_pages(self, pages: dict[tuple[str, int], list[list[Any]]], batch_id: str, now_ms: int) -> int:
        """One page per (raw partition, minute) of a batch, keyed by the batch: a redelivered batch
        overwrites its own pages (or, re-cut, writes rows again, which readers de-duplicate)."""
        expires = str((now_ms + self.retention.minute_ms) // 1000)
        self.put_batch([{"pk": {"S": partition}, "sk": {"S": f"{minute:013d}#{batch_id}"},
                         "rows": {"B": pack(rows)}, "expiresAt": {"N": expires}}
                        for (partition, minute), rows in pages.items()])
        return len(pages)

    def iter_raw(self, partition: str, first_minute: int | None = None, last_minute: int | None = None
                 ) -> Iterator[list[Any]]:
        """The rows of a raw partition (a quarter of one counter set and subject bucket), or of its
        minutes first..last."""
        request: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True,
                                   "KeyConditionExpression": "pk = :pk",
                                   "ExpressionAttributeValues": {":pk": {"S": partition}}}
        if first_minute is not None and last_minute is not None:
            request["KeyConditionExpression"] += " AND sk BETWEEN :lo AND :hi"
            request["ExpressionAttributeValues"][":lo"] = {"S": f"{first_minute:013d}#"}
            request["ExpressionAttributeValues"][":hi"] = {"S": f"{last_minute:013d}#\U0010ffff"}
        for item in self.query_items(request):
            yield from unpack(item["rows"]["B"])

    def read_raw(self, partition: str) -> list[list[Any]]:
        return list(self.iter_raw(partition))

    def put_work_lists(self, batch_id: str, manifests: Mapping[tuple[int, str], list[list[Any]]],
                       late: Mapping[str, list[list[Any]]], processing_quarter_ms: int, now_ms: int) -> int:
        """A batch's manifests (per event quarter and namespace) and late lists (per namespace, in two
        copies: by namespace for queries, by processing quarter for the compactor), in one batched write.
        Returns the number of items."""
        # work items: a month is far beyond any compaction delay
        expires = {"N": str(now_ms // 1000 + 31 * DAY_S)}
        keys = [(f"manifest#{quarter}", f"{namespace}#{batch_id}", parts)
                for (quarter, namespace), parts in manifests.items()]
        for namespace, parts in late.items():
            keys.append((f"{namespace}#late", f"{processing_quarter_ms:013d}#{batch_id}", parts))
            keys.append((f"late#{processing_quarter_ms}", f"{namespace}#{batch_id}", parts))
        self.put_batch([{"pk": {"S": pk}, "sk": {"S": sk}, "parts": {"B": pack(parts)}, "expiresAt": expires}
                        for pk, sk, parts in keys])
        return len(keys)

    def read_manifests(self, quarter_ms: int, namespace: str | None = None) -> list[list[Any]]:
        """The parts listed for a quarter: every namespace's (the compactor) or one namespace's."""
        return self._read_parts(f"manifest#{quarter_ms}", None if namespace is None else f"{namespace}#")

    def read_late(self, processing_quarter_ms: int) -> list[list[Any]]:
        """Every namespace's late parts listed in one processing quarter (the compactor's work)."""
        return self._read_parts(f"late#{processing_quarter_ms}", None)

    def read_late_since(self, namespace: str, processing_quarter_ms: int) -> list[list[Any]]:
        """One namespace's late parts listed from a processing quarter on, in one Query."""
        return self._read_parts(f"{namespace}#late", None, (f"{processing_quarter_ms:013d}", "9" * 13 + "~"))

    def _read_parts(self, pk: str, prefix: str | None, between: tuple[str, str] | None = None
                    ) -> list[list[Any]]:
        values: dict[str, Any] = {":pk": {"S": pk}}
        condition = "pk = :pk"
        if prefix is not None:
            condition += " AND begins_with(sk, :prefix)"
            values[":prefix"] = {"S": prefix}
        elif between is not None:
            condition += " AND sk BETWEEN :lo AND :hi"
            values[":lo"], values[":hi"] = {"S": between[0]}, {"S": between[1]}
        parts: list[list[Any]] = []
        for item in self.query_items({"TableName": self.table, "KeyConditionExpression": condition,
                                 "ExpressionAttributeValues": values, "ConsistentRead": True}):
            parts.extend(unpack(item["parts"]["B"]))
        return parts

    def put_slot(self, namespace: str, level: Resolution, start_ms: int, subject: str, states: dict[str, str]) -> int:
        """Overwrite some counter sets' states in one subject's slot (idempotent). Large states go to
        items of their own first, then the packed item gets the small ones and loses any stale copy of
        the large ones, in one write. Returns the number of writes."""
        period = level.period(start_ms)
        key = {"S": slot_key(subject, level, level.index(start_ms))}
        split = {cs: state for cs, state in states.items() if len(state) > SPLIT_STATE_BYTES}
        expires = {"N": str(self.retention.slot_expiry_s(level, start_ms))}
        for counter_set, state in split.items():
            self.client.put_item(TableName=self.table, Item={
                "pk": {"S": slot_partition(namespace, level, period, counter_set)}, "sk": key, "s": {"S": state},
                "expiresAt": expires})
        names: dict[str, str] = {"#expires": "expiresAt"}
        values: dict[str, Any] = {":expires": expires}
        sets, removes = ["#expires = :expires"], []
        for i, (counter_set, state) in enumerate(states.items()):
            names[f"#c{i}"] = f"c{counter_set}"
            if counter_set in split:
                removes.append(f"#c{i}")
            else:
                values[f":v{i}"] = {"S": state}
                sets.append(f"#c{i} = :v{i}")
        expression = " ".join(part for part in (
            "SET " + ", ".join(sets) if sets else "", "REMOVE " + ", ".join(removes) if removes else "") if part)
        self.client.update_item(
            TableName=self.table, Key={"pk": {"S": slot_partition(namespace, level, period)}, "sk": key},
            UpdateExpression=expression, ExpressionAttributeNames=names, ExpressionAttributeValues=values)
        return len(split) + 1

    def read_slots(self, namespace: str, level: Resolution, period_ms: int, counter_sets: Sequence[str],
                   subject: str | None = None, first: int | None = None, last: int | None = None
                   ) -> Iterator[tuple[str, SlotStates]]:
        """(subject, {slot index: {counter set: state}}) for every subject of a slot partition, or for one
        subject's slots first..last, one subject at a time in key order (streamed: a subject's slots
        are complete when it is yielded). Reads the packed items and, per counter set, its split items."""
        if not counter_sets:
            return
        names = {f"#c{i}": f"c{cs}" for i, cs in enumerate(counter_sets)}
        packed = self._slot_items(slot_partition(namespace, level, period_ms), level, subject, first, last,
                                  "sk, " + ", ".join(names), names)
        streams = [_tagged(packed, "")]
        for counter_set in counter_sets:
            items = self._slot_items(slot_partition(namespace, level, period_ms, counter_set), level, subject,
                                     first, last, None, None)
            streams.append(_tagged(items, counter_set))
        current: str | None = None
        inline: SlotStates = {}
        split: SlotStates = {}
        for key, counter_set, item in heapq.merge(*streams, key=lambda entry: entry[:2]):
            item_subject, index = parse_slot_key(key)
            if item_subject != current:
                if current is not None:
                    yield current, _combine(inline, split)
                current, inline, split = item_subject, {}, {}
            if counter_set:
                split.setdefault(index, {})[counter_set] = item["s"]["S"]
            else:
                states = {cs: item[f"c{cs}"]["S"] for cs in counter_sets if f"c{cs}" in item}
                if states:
                    inline.setdefault(index, {}).update(states)
        if current is not None:
            yield current, _combine(inline, split)

    def _slot_items(self, partition: str, level: Resolution, subject: str | None, first: int | None,
                    last: int | None, projection: str | None, names: dict[str, str] | None
                    ) -> Iterator[dict[str, Any]]:
        request: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True}
        if subject is None:
            request["KeyConditionExpression"] = "pk = :pk"
            request["ExpressionAttributeValues"] = {":pk": {"S": partition}}
        else:
            request["KeyConditionExpression"] = "pk = :pk AND sk BETWEEN :lo AND :hi"
            request["ExpressionAttributeValues"] = {
                ":pk": {"S": partition},
                ":lo": {"S": slot_key(subject, level, first or 0)},
                ":hi": {"S": slot_key(subject, level, 10**level.width - 1 if last is None else last)},
            }
        if projection is not None:
            request["ProjectionExpression"] = projection
            request["ExpressionAttributeNames"] = names
        return self.query_items(request)

    def put_work(self, level: Resolution, period_ms: int, namespace: str, now_ms: int) -> None:
        """Note that a namespace has quarters to roll into the hour or day starting at period_ms."""
        self.client.put_item(TableName=self.table, Item={
            "pk": {"S": f"work#{level.key}#{period_ms}"}, "sk": {"S": namespace},
            "expiresAt": {"N": str(now_ms // 1000 + 31 * DAY_S)}})

    def read_work(self, level: Resolution, period_ms: int) -> list[str]:
        return [item["sk"]["S"] for item in self.partition_items(f"work#{level.key}#{period_ms}", True)]

    def get_compaction_state(self) -> Horizons | None:
        """The compactor's horizons; None before its first run."""
        item = self.client.get_item(TableName=self.table, Key=COMPACTION_KEY, ConsistentRead=True).get("Item")
        if not item or any(name not in item for name in HORIZON_NAMES.values()):
            return None
        return Horizons(**{field: int(item[name]["N"]) for field, name in HORIZON_NAMES.items()})

    def set_compaction_state(self, horizons: Horizons, *fields: str) -> None:
        """Store the named fields of `horizons` (every field when none is named)."""
        names = [HORIZON_NAMES[field] for field in fields or HORIZON_NAMES]
        values = [getattr(horizons, field) for field in fields or HORIZON_NAMES]
        self.client.update_item(
            TableName=self.table, Key=COMPACTION_KEY,
            UpdateExpression="SET " + ", ".join(f"#a{i} = :v{i}" for i in range(len(names))),
            ExpressionAttributeNames={f"#a{i}": name for i, name in enumerate(names)},
            ExpressionAttributeValues={f":v{i}": {"N": str(value)} for i, value in enumerate(values)},
        )




def _tagged(items: Iterator[dict[str, Any]], tag: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for item in items:
        yield item["sk"]["S"], tag, item


def _combine(inline: SlotStates, split: SlotStates) -> SlotStates:
    """A subject's states: the packed copy of a counter set's state wins over a split one (a split item
    is left behind when a state shrinks back under SPLIT_STATE_BYTES)."""
    for index, states in split.items():
        into = inline.setdefault(index, {})
        for counter_set, state in states.items():
            into.setdefault(counter_set, state)
    return inline
