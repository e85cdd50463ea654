"""The usage table: everything derived from the events: counting rows, manifests,
quarter-hour, hour, day and zone day slots, and the compactor's state."""

from __future__ import annotations

import bisect
import heapq
import itertools
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from meterline.domain.slots import (
    BUNDLED_FROM_UNKNOWN,
    HORIZON_NAMES,
    HOUR,
    QUARTER,
    ZONE_DAYS_KEPT_MS,
    Horizons,
    SlotLevel,
    ZoneDays,
    ZoneRange,
)
from meterline.domain.timeutil import DAY_MS, DAY_S, HOUR_MS, QUARTER_MS, floor_to
from meterline.storage.dynamo import TableAdapter
from meterline.storage.tables import USAGE_TABLE

# --- counting ---------------------------------------------------------------------------------
# Raw rows (the minute resolution, and what every coarser counter is recomputed from), a batch's rows of one
# (namespace, counter set, minute, subject bucket) in one of two places, by their packed size:
#   own:    pk "{ns}#raw#{counter set}#{quarter ms}#{bucket}"  sk "{minute ms}#{batch id}"  rows: list of Row lists
#       (a page per minute and batch; a Query over a minute range of one partition finds a subject's rows)
#   shared: pk "{ns}#raw#shared#{quarter ms}#{bucket}"         sk "{minute ms}#{batch id}"
#           rows: list of [counter set, list of Row lists]
#       the rows of every counter set whose packed rows are smaller than SHARED_PAGE_BELOW, in one page per
#       minute and batch ("shared" is never a counter set id: those are "{meter id}.{8 hex}"), so a quiet
#       batch writes one item per (quarter, bucket, minute), not one per counter set. A counter set's rows
#       are those of its own partition and its entries in the shared one: readers read both and
#       de-duplicate them together (a retried batch may put an event's row in either, or both).
# Manifests (what the compactor must look at, and the directory of a quarter's raw partitions):
#   pk "manifest#{quarter ms}"  sk "{ns}#{batch id}"   parts: [[ns, counter set, minute, bucket]]
#       on-time and late batches alike, by event quarter; a reader reads its namespace's key range only
#   pk "late#{processing quarter ms}"  sk "{ns}#{batch id}"  parts: the compactor's list of late work
#   pk "{ns}#late"  sk "{processing quarter ms, 13 digits}#{batch id}"  parts: the same, per namespace,
#       so a reader finds every late part the compactor has not folded yet in one Query
#   pk "work#{level}#{period ms}"  sk ns    namespaces with quarters to roll into an hour or a day
# Slots (level q: quarter-hours, partitions per UTC hour; h: hours, per UTC day; d: days, per UTC month;
# z{phase in minutes}: zone days, per UTC month of the UTC day they start in),
# key "{subject byte length, 3 digits}#{subject}#{index in the partition}":
#   packed: pk "{ns}#{level}#{period ms}"                  one attribute "c{counter set}" per small state
#   split:  pk "{ns}#{level}#{period ms}#{counter set}"    attribute "s": one state of more than
#           SPLIT_STATE_BYTES, so that reading one meter never pays for a subject's other large states
#           A state too large for one item (MAX_ITEM_BYTES) is cut into chunks: the JSON text's first
#           piece in "s" of that item, with "n" (the number of chunks) and "h" (CRC-32 of the whole
#           text); piece k (1..n-1) in "s" of sort key "{key}#{k}". Readers join the pieces of chunks
#           0..n-1 and check the CRC; chunks from k = n on are left over from a larger state and ignored.
#   A state lives in exactly one of them; if both exist (a state that shrank), the packed one is current.
#   Bundles: several subjects' packed states in one item, where the per-subject items would cost a write
#   unit and 100 bytes of storage each for a few dozen bytes of state:
#   pk "{ns}#{level}#{start ms}#bundles"  sk subject_prefix(the bundle's last subject)
#       b: zlib'd JSON [[subject, [[slot index, {counter set: state}], ...]], ...], subjects in key order
#   plus one item sk BUNDLE_END ("~", after every subject's prefix), written last, so that a bundle
#   partition is never empty: an empty one is from before bundles (read the per-subject items instead).
#   A subject's states are in the first bundle at or after its prefix (a Query with Limit 1); a bundle
#   holds the subjects after the previous bundle's key up to its own (entries outside that range are left
#   over from a rewrite cut short, and ignored). Used for
#     quarters ({start} = the quarter): written by the compactor for a namespace's quarter at once, instead
#       of packed items; split items stay per UTC hour as above;
#     hours of a folded day ({start} = the UTC day): written when the day is folded, from the hours'
#       packed items, which are kept only as long as quarter slots; readers read a day's hours from its
#       bundles once the day horizon has passed it (`archived`), and from the packed items before.
# Compaction state:  pk "compaction"  sk "state"   the horizons (numbers), `zoneDays` (JSON: phase ->
#       [from, through, requested, created]), `snapshot` (JSON: {at, horizons}) and `settled` (JSON horizons)
#
# Item size. DynamoDB refuses items over 400 KB. Lists (raw rows, manifest and late parts)
# are packed into one blob per item; a list whose blob would make the item larger than MAX_ITEM_BYTES is
# written as consecutive slices, the first under the item's own sort key and slice k under "{sk}#{k}"
# (every reader of them reads a key range and concatenates, so slicing changes nothing for them; a
# leftover slice of an earlier, larger write of the same batch repeats rows readers de-duplicate).

RAW = "raw"
# The counter set field of shared raw partitions: no counter set id is without a dot.
SHARED = "shared"
# A batch's rows of one counter set, minute and subject bucket smaller than this when packed go to the shared
# page of the batch's (quarter, bucket, minute) instead of a page of their own. An item costs a write unit
# per started KB and 100 bytes of storage: rows under 300 bytes (with the ~150 bytes of keys and attributes,
# an item using less than half its write unit) would mostly pay for the rounding up, while in a shared page
# they add only their size. But every byte of a shared page is also read by the raw reads of the bucket's
# other counter sets: at 700 bytes, 1,000 events/s in 1,000-record batches would share most groups, saving
# 0.045 write units per event but making a 30-day query up to now of one subject read 587 units instead of
# 228 (all subjects: 7,568 instead of 1,312). At 300 those stay 231 and 1,510, and low traffic, whose groups
# are a row or three, saves all the same (docs/decisions.md).
SHARED_PAGE_BELOW = 300
COMPACTION_KEY = {"pk": {"S": "compaction"}, "sk": {"S": "state"}}
# DynamoDB's item limit is 400 KB (409,600 bytes: attribute names and values, keys included); every item
# the store writes stays under this, leaving margin.
MAX_ITEM_BYTES = 350_000


def pack(value: Any) -> bytes:
    """Pages (event references, rows, manifests) are stored as zlib-compressed JSON: they are written
    once per batch and billed by size, and compress about 3:1."""
    return zlib.compress(orjson.dumps(value), 1)


def unpack(blob: bytes) -> Any:
    return orjson.loads(zlib.decompress(blob))


def raw_partition(namespace: str, counter_set: str, quarter_ms: int, bucket: int) -> str:
    return f"{namespace}#{RAW}#{counter_set}#{quarter_ms}#{bucket}"


def shared_raw_partition(namespace: str, quarter_ms: int, bucket: int) -> str:
    """The partition of the shared raw pages of a namespace's quarter and subject bucket."""
    return raw_partition(namespace, SHARED, quarter_ms, bucket)


def slot_partition(namespace: str, level: SlotLevel, period_ms: int, counter_set: str | None = None) -> str:
    base = f"{namespace}#{level.key}#{period_ms}"
    return base if counter_set is None else f"{base}#{counter_set}"


def bundle_partition(namespace: str, level: SlotLevel, start_ms: int) -> str:
    """The bundles of a namespace's quarter (`start_ms` the quarter's start) or of the hours of a UTC day
    (the day's)."""
    return f"{namespace}#{level.key}#{start_ms}#{BUNDLES}"


def slot_key(subject: str, level: SlotLevel, index: int) -> str:
    return f"{subject_prefix(subject)}{index:0{level.width}d}"


def subject_prefix(subject: str) -> str:
    """What every slot key of `subject` starts with; slot partitions are in the order of these prefixes,
    so streams of several partitions merge by it."""
    return f"{len(subject.encode()):03d}#{subject}#"


def parse_slot_key(key: str) -> tuple[str, int]:
    subject, index, _ = _split_slot_key(key)
    return subject, index


def _split_slot_key(key: str) -> tuple[str, int, int]:
    """(subject, slot index, chunk number) of a slot item's sort key; chunk 0 unless the key is a chunk's."""
    length, _, rest = key.partition("#")
    size = int(length)
    if rest.isascii():
        subject, tail = rest[:size], rest[size + 1:]
    else:
        raw = rest.encode()
        subject, tail = raw[:size].decode(), raw[size + 1:].decode()
    index, _, chunk = tail.partition("#")
    return subject, int(index), int(chunk) if chunk else 0


def item_bytes(item: Mapping[str, Any]) -> int:
    """An item's size as DynamoDB counts it against the item limit (numbers over-estimated)."""
    return sum(len(name.encode()) + _value_bytes(value) for name, value in item.items())


def _value_bytes(value: Mapping[str, Any]) -> int:
    (kind, data), = value.items()
    if kind == "B":
        return len(data)
    if kind == "S":
        return len(data) if data.isascii() else len(data.encode())
    return len(str(data))


def _packed_pieces(values: list[Any], room: int, packed: bytes | None = None) -> list[bytes]:
    """`values` packed (`packed`, if the caller has packed them already): one blob, or, if that is longer
    than `room` bytes, consecutive slices of `values` packed one by one, each within `room` (a single value
    never comes near: an event is at most 64 KB)."""
    blob, room = pack(values) if packed is None else packed, max(room, 1)
    if len(blob) <= room or len(values) < 2:
        return [blob]
    step = -(-len(values) // min(len(values), len(blob) // room + 1))
    return [piece for start in range(0, len(values), step)
            for piece in _packed_pieces(values[start:start + step], room)]


def _text_pieces(text: str, room: int) -> list[str]:
    """`text` cut into pieces of at most `room` bytes of UTF-8, never inside a character."""
    data, room = text.encode(), max(room, 4)  # room for any one character
    pieces, start = [], 0
    while start < len(data):
        end = min(start + room, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # a continuation byte: back to the character
            end -= 1
        pieces.append(data[start:end].decode())
        start = end
    return pieces


class _Bundled:
    """A bundle partition being rewritten: the entries of the bundles read (by key; a new partition's
    under BUNDLE_END), which of them changed, and their new cuts."""

    def __init__(self, items: Sequence[dict[str, Any]]) -> None:
        self.ended = any(item["sk"]["S"] == BUNDLE_END for item in items)
        self.keys: list[str] = []
        self.groups: list[dict[str, dict[int, dict[str, str]]]] = []
        self.dirty: set[int] = set()
        previous = ""
        for item in items:  # in key order
            key = item["sk"]["S"]
            if key == BUNDLE_END:
                continue
            entries = _bundle_entries(item, previous)
            if len(entries) < len(unpack(item["b"]["B"])):  # left over from a rewrite cut short
                self.dirty.add(len(self.keys))
            self.keys.append(key)
            self.groups.append(dict(entries))
            previous = key

    def _group(self, subject: str) -> int:
        if not self.groups:
            self.keys.append(BUNDLE_END)
            self.groups.append({})
        return min(bisect.bisect_left(self.keys, subject_prefix(subject)), len(self.keys) - 1)

    def seed(self, entries: Iterable[BundleEntry]) -> None:
        """Add the states of `entries` the bundles do not have (those are newer)."""
        for subject, slots in entries:
            have = self.slots(subject)
            missing = {index: {cs: state for cs, state in states.items() if cs not in have.get(index, {})}
                       for index, states in slots.items()}
            self.update(subject, {index: states for index, states in missing.items() if states})

    def update(self, subject: str, slots: Mapping[int, Mapping[str, str | None]]) -> None:
        """Set (or, for None, remove) the given states of `subject`."""
        group = self._group(subject)
        current = self.groups[group].setdefault(subject, {})
        for index, states in slots.items():
            slot = current.setdefault(index, {})
            for counter_set, state in states.items():
                if state is None:
                    slot.pop(counter_set, None)
                else:
                    slot[counter_set] = state
            if not slot:
                del current[index]
        if not current:
            del self.groups[group][subject]
        self.dirty.add(group)

    def slots(self, subject: str) -> dict[int, dict[str, str]]:
        return self.groups[self._group(subject)].get(subject, {})

    def cut(self) -> tuple[list[tuple[str, bytes]], list[str]]:
        """The bundles to write (the changed ones, cut again) and the keys no longer cut."""
        puts: list[tuple[str, bytes]] = []
        deletes: list[str] = []
        for group in sorted(self.dirty):
            cuts = _bundles(sorted(self.groups[group].items(), key=lambda entry: subject_prefix(entry[0])),
                            BUNDLE_BYTES)
            puts.extend(cuts)
            if self.keys[group] != BUNDLE_END and all(key != self.keys[group] for key, _ in cuts):
                deletes.append(self.keys[group])
        return puts, deletes


class IncompleteSlot(RuntimeError):
    """A chunked state whose chunks are missing or do not add up (its CRC differs): never answered."""


BUNDLES = "bundles"  # never a counter set id (those have a dot)
BUNDLE_END = "~"
# A bundle holds subjects' packed states up to this many bytes (compressed): one subject's read of it is
# then at most one read unit (4 KB), and a quiet quarter costs a few write units instead of one per subject
# (at 4 events/s, about 1,300 subjects a quarter, 1 to 2 events each).
BUNDLE_BYTES = 3800
# Bundling a day's hours cuts what it has read every this many bytes of states (its memory stays bounded).
BUNDLE_FLUSH_BYTES = 1_000_000
# Rewriting bundles for fewer subjects than this reads each one's bundle (a Query each), else all of them.
FEW_SUBJECTS = 32
# What one bundle partition spans: a quarter, or a UTC day of hours.
BUNDLE_SPAN_MS: dict[SlotLevel, int] = {QUARTER: QUARTER_MS, HOUR: DAY_MS}

BundleEntry = tuple[str, dict[int, dict[str, str]]]  # subject, {slot index: {counter set: state}}


def _bundle_blob(entries: Sequence[BundleEntry]) -> bytes:
    # written once (a quarter, a day's hours) and read by every query of it: the better compression
    return zlib.compress(orjson.dumps([[subject, sorted(slots.items())] for subject, slots in entries]), 6)


def _bundles(entries: Sequence[BundleEntry], limit: int) -> list[tuple[str, bytes]]:
    """`entries`, in key order, cut into consecutive bundles of at most `limit` bytes each, as (sort key:
    the last subject's prefix, blob); an entry larger than `limit` is a bundle of its own. The same
    entries always give the same bundles. Each bundle is the longest run that fits: found by doubling its
    length, then halving the step (a few compressions per bundle)."""
    bundles: list[tuple[str, bytes]] = []
    start = 0
    while start < len(entries):
        good, blob = start + 1, _bundle_blob(entries[start:start + 1])
        step, growing = 1, True
        while good < len(entries) and step:
            end = min(good + step, len(entries))
            candidate = _bundle_blob(entries[start:end])
            fits = len(candidate) <= limit
            if fits:
                good, blob = end, candidate
            if fits and growing:
                step *= 2
            else:  # past the longest run that fits: search below with halving steps
                growing = False
                step //= 2
        bundles.append((subject_prefix(entries[good - 1][0]), blob))
        start = good
    return bundles


def _bundle_item(partition: str, key: str, blob: bytes, expires: dict[str, str]) -> dict[str, Any]:
    return {"pk": {"S": partition}, "sk": {"S": key}, "b": {"B": blob}, "expiresAt": expires}


def _state_bytes(entry: BundleEntry) -> int:
    return sum(len(state) for slot in entry[1].values() for state in slot.values())


def _bundle_entries(item: Mapping[str, Any], after: str = "") -> list[BundleEntry]:
    """A bundle item's entries whose keys lie after `after` (the previous bundle's key, if known)."""
    if item["sk"]["S"] == BUNDLE_END:
        return []
    return [(subject, {int(index): states for index, states in slots}) for subject, slots in unpack(item["b"]["B"])
            if subject_prefix(subject) > after]


# A state longer than this (JSON text) gets an item of its own. Most subjects' states are a few dozen
# bytes and share one item (one write unit per subject and slot); a busy subject's large states (many
# groups) are split out, so a query of one meter reads that meter's state and not the others'.
SPLIT_STATE_BYTES = 256
SlotStates = dict[int, dict[str, str]]  # slot index -> counter set -> state (JSON)
# Room reserved in a chunk for its "n" and "h" attributes and a key suffix "#{k}".
_CHUNK_OVERHEAD = len("n") + 10 + len("h") + 10 + len("#") + 10


# A slot written now lives at least this long, whatever its level's retention (Retention.slot_expiry_s).
SLOT_MIN_LIFE_MS = DAY_MS


@dataclass(frozen=True)
class Retention:
    """How long derived usage items live. Hour and day slots: `days` (as events; an hour's packed item
    only as long as quarter slots after its day, which is read from the day's bundles once folded). Raw
    counting rows (the minute resolution): `minute_days`, counted from when they are written, which is
    never before their events' time. Quarter-hour slots: `quarter_days` after the quarter. Zone days:
    `zone_day_ms` after their day. Queries that would need an expired resolution are refused
    (meterline.services.usage_query), never answered short; expired zone days are not read."""

    days: int = 400
    minute_days: int | None = None
    quarter_days: int | None = None

    @property
    def minute_ms(self) -> int:
        return (self.minute_days or self.days) * DAY_MS

    @property
    def quarter_ms(self) -> int:
        return (self.quarter_days or self.days) * DAY_MS

    @property
    def zone_day_ms(self) -> int:
        """How long zone day slots are kept after their day (meterline.domain.slots.ZONE_DAYS_KEPT_MS)."""
        return min(self.days * DAY_MS, ZONE_DAYS_KEPT_MS)

    def slot_expiry_s(self, level: SlotLevel, start_ms: int, written_ms: int | None = None) -> int:
        """When a slot expires: its level's retention after its end, but, written at `written_ms`, never
        less than SLOT_MIN_LIFE_MS after that (a recount re-folds quarters older than their retention, and
        their hour is folded from them afterwards). Queries check retention by time, not by what exists."""
        keep_ms = self.quarter_ms if level is QUARTER else self.zone_day_ms if isinstance(
            level, ZoneDays) else self.days * DAY_MS
        expiry_ms = start_ms + level.length_ms + keep_ms
        if written_ms is not None:
            expiry_ms = max(expiry_ms, written_ms + SLOT_MIN_LIFE_MS)
        return expiry_ms // 1000

    def refold_from_ms(self, now_ms: int) -> int | None:
        """The oldest event time whose quarter can still be re-folded from all its raw rows at `now_ms`: raw
        rows live `minute_ms` after they are written (never before their event's time), less a day for
        compaction lag. The stream processor leaves older events to a recount request. None when raw rows
        are kept as long as events: written after their events, they outlive them, so a quarter's rows
        cover every event of it still stored."""
        if self.minute_ms >= self.days * DAY_MS:
            return None
        return now_ms - self.minute_ms + DAY_MS


# Recount requests: pk "recount"  sk "{ns}#{UTC hour ms, 13 digits}"  at: when last asked for (ms),
# batch: by which stream batch. A stream batch asks for one per (namespace, hour) of its events too old for
# their quarter to be re-folded from raw rows (Retention.refold_from_ms), instead of counting them; the
# backfill function recounts those hours (meterline.services.backfill). One small partition, read with one
# Query; "recount" has no "#", so no namespace's key can be it.
RECOUNT_REQUESTS = "recount"


def _recount_request_key(namespace: str, hour_ms: int) -> dict[str, Any]:
    return {"pk": {"S": RECOUNT_REQUESTS}, "sk": {"S": f"{namespace}#{hour_ms:013d}"}}


@dataclass(frozen=True)
class RecountRequest:
    namespace: str
    hour_ms: int
    at_ms: int  # when it was last asked for
    batch: str  # by which stream batch


class UsageStore(TableAdapter):
    spec = USAGE_TABLE
    # The largest item written (tests lower it to make every list and state chunked).
    item_limit = MAX_ITEM_BYTES
    # Raw rows smaller than this (packed) go to shared pages (tests vary it: 0, every group in a page of its own).
    shared_page_below = SHARED_PAGE_BELOW

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

    # --- counting ---

    def put_raw_rows(self, groups: Mapping[tuple[str, str, int, int], list[list[Any]]], batch_id: str,
                     now_ms: int) -> int:
        """A batch's rows by (namespace, counter set, minute, subject bucket): each group of at least
        `shared_page_below` bytes packed in a page of its own (in its counter set's raw partition), the
        smaller ones together in one shared page per (namespace, quarter, bucket, minute), tagged with
        their counter sets. Pages are keyed by the minute and the batch: a redelivered batch overwrites its
        own pages (the same rows make the same choices), or, re-cut, writes rows again, perhaps in the
        other kind of page, which readers de-duplicate. Returns the number of items."""
        expires = {"N": str((now_ms + self.retention.minute_ms) // 1000)}
        items: list[dict[str, Any]] = []
        shared: dict[tuple[str, int], list[list[Any]]] = {}
        for (namespace, counter_set, minute, bucket), rows in groups.items():
            quarter = floor_to(minute, QUARTER_MS)
            text = orjson.dumps(rows)
            # JSON text shorter than the threshold packs shorter than it too (give or take zlib's few bytes)
            blob = None if len(text) < self.shared_page_below else zlib.compress(text, 1)
            if blob is None or len(blob) < self.shared_page_below:
                shared.setdefault((shared_raw_partition(namespace, quarter, bucket), minute), []).append(
                    [counter_set, rows])
            else:
                items.extend(self._list_items(raw_partition(namespace, counter_set, quarter, bucket),
                                              f"{minute:013d}#{batch_id}", "rows", rows, expires, blob))
        for (partition, minute), entries in shared.items():
            items.extend(self._list_items(partition, f"{minute:013d}#{batch_id}", "rows", entries, expires))
        self.put_batch(items)
        return len(items)

    def iter_raw(self, partition: str, first_minute: int | None = None, last_minute: int | None = None
                 ) -> Iterator[list[Any]]:
        """The rows of a raw partition's own pages (a quarter of one counter set and subject bucket), or of
        its minutes first..last. The counter set's rows in shared pages: iter_shared_raw."""
        for page in self._raw_pages(partition, first_minute, last_minute):
            yield from page

    def iter_shared_raw(self, partition: str, first_minute: int | None = None, last_minute: int | None = None
                        ) -> Iterator[tuple[str, list[list[Any]]]]:
        """(counter set, rows) of every entry of a shared raw partition's pages (shared_raw_partition: a
        quarter of one namespace and subject bucket), or of its minutes first..last; a counter set may have
        several entries (one per page)."""
        for page in self._raw_pages(partition, first_minute, last_minute):
            yield from ((counter_set, rows) for counter_set, rows in page)

    def _raw_pages(self, partition: str, first_minute: int | None, last_minute: int | None
                   ) -> Iterator[list[Any]]:
        """The unpacked pages (and slices) of a raw partition, or of its minutes first..last, in key order."""
        request: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True,
                                   "KeyConditionExpression": "pk = :pk",
                                   "ExpressionAttributeValues": {":pk": {"S": partition}}}
        if first_minute is not None and last_minute is not None:
            request["KeyConditionExpression"] += " AND sk BETWEEN :lo AND :hi"
            request["ExpressionAttributeValues"][":lo"] = {"S": f"{first_minute:013d}#"}
            request["ExpressionAttributeValues"][":hi"] = {"S": f"{last_minute:013d}#\U0010ffff"}
        for item in self.query_items(request):
            yield unpack(item["rows"]["B"])

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
        items = [item for pk, sk, parts in keys for item in self._list_items(pk, sk, "parts", parts, expires)]
        self.put_batch(items)
        return len(items)

    def _list_items(self, pk: str, sk: str, attribute: str, values: list[Any], expires: dict[str, str],
                    packed: bytes | None = None) -> list[dict[str, Any]]:
        """The item holding `values` packed (`packed`, if given), or, if it would be larger than
        `item_limit`, the items of consecutive slices: the first under `sk`, slice k under "{sk}#{k}"."""
        room = self.item_limit - item_bytes({"pk": {"S": pk}, "sk": {"S": sk}, "expiresAt": expires}) - len(
            attribute) - _CHUNK_OVERHEAD
        return [{"pk": {"S": pk}, "sk": {"S": sk if k == 0 else f"{sk}#{k}"}, attribute: {"B": blob},
                 "expiresAt": expires} for k, blob in enumerate(_packed_pieces(values, room, packed))]

    def read_manifests(self, quarter_ms: int, namespace: str | None = None) -> list[list[Any]]:
        """The parts listed for a quarter: every namespace's (the compactor) or one namespace's."""
        return self._read_parts(f"manifest#{quarter_ms}", None if namespace is None else f"{namespace}#")

    def read_late(self, processing_quarter_ms: int) -> list[list[Any]]:
        """Every namespace's late parts listed in one processing quarter (the compactor's work)."""
        return self._read_parts(f"late#{processing_quarter_ms}", None)

    def read_late_since(self, namespace: str, processing_quarter_ms: int) -> list[list[Any]]:
        """One namespace's late parts listed from a processing quarter on, in one Query."""
        return [part for _, part in self.read_late_lists_since(namespace, processing_quarter_ms)]

    def read_late_lists_since(self, namespace: str, processing_quarter_ms: int) -> list[tuple[int, list[Any]]]:
        """One namespace's late parts listed from a processing quarter on, each with the processing
        quarter of its list, in one Query."""
        parts: list[tuple[int, list[Any]]] = []
        for item in self.query_items({
                "TableName": self.table, "ConsistentRead": True,
                "KeyConditionExpression": "pk = :pk AND sk BETWEEN :lo AND :hi",
                "ExpressionAttributeValues": {":pk": {"S": f"{namespace}#late"},
                                              ":lo": {"S": f"{processing_quarter_ms:013d}"},
                                              ":hi": {"S": "9" * 13 + "~"}}}):
            quarter = int(item["sk"]["S"][:13])
            parts.extend((quarter, part) for part in unpack(item["parts"]["B"]))
        return parts

    def _read_parts(self, pk: str, prefix: str | None) -> list[list[Any]]:
        values: dict[str, Any] = {":pk": {"S": pk}}
        condition = "pk = :pk"
        if prefix is not None:
            condition += " AND begins_with(sk, :prefix)"
            values[":prefix"] = {"S": prefix}
        parts: list[list[Any]] = []
        for item in self.query_items({"TableName": self.table, "KeyConditionExpression": condition,
                                 "ExpressionAttributeValues": values, "ConsistentRead": True}):
            parts.extend(unpack(item["parts"]["B"]))
        return parts

    def put_slot(self, namespace: str, level: SlotLevel, start_ms: int, subject: str, states: dict[str, str],
                 written_ms: int | None = None) -> int:
        """Overwrite some counter sets' states in one subject's slot (idempotent). Large states go to
        items of their own first (chunked if need be), then the packed item gets the small ones and
        loses any stale copy of the large ones, in one write. Written at `written_ms` (the compactor's run),
        a slot lives at least SLOT_MIN_LIFE_MS after it (Retention.slot_expiry_s). Returns the number of writes.
        A quarter's small states go to its bundles instead (put_quarter_slots; so do a folded day's hours,
        through put_bundled); an hour's packed item is kept as long as quarter slots (the compactor folds
        its day from it, or from quarters, however late it runs within that time)."""
        if level is QUARTER:
            return self.put_quarter_slots(namespace, start_ms, {subject: states}, written_ms)
        period = level.period(start_ms)
        key = {"S": slot_key(subject, level, level.index(start_ms))}
        split = {cs for cs, state in states.items() if len(state) > SPLIT_STATE_BYTES}
        expires = {"N": str(self.retention.slot_expiry_s(level, start_ms, written_ms))}
        writes = self._put_split(namespace, level, period, key, {cs: states[cs] for cs in split}, expires) + 1
        packed_key = {"pk": {"S": slot_partition(namespace, level, period)}, "sk": key}
        if level is HOUR:  # read from the day's bundles once it is folded: kept as long as quarters
            kept_ms = max(period + DAY_MS + self.retention.quarter_ms, (written_ms or 0) + SLOT_MIN_LIFE_MS)
            expires = {"N": str(min(int(expires["N"]), kept_ms // 1000))}
        try:
            self._update_packed(packed_key, states, split, expires)
        except Exception as error:  # botocore's ClientError, from whichever client this store was given
            if not _too_large(error):
                raise
            # The packed item would outgrow the item limit (a namespace with hundreds of meters): this
            # call's small states go to items of their own too, which only shrinks the packed item.
            writes += self._put_split(namespace, level, period, key,
                                      {cs: state for cs, state in states.items() if cs not in split}, expires)
            self._update_packed(packed_key, states, set(states), expires)
        return writes

    def put_quarter_slots(self, namespace: str, quarter_ms: int, states: Mapping[str, Mapping[str, str]],
                          written_ms: int | None = None, legacy: bool = True) -> int:
        """Overwrite some counter sets' states of some subjects in a namespace's quarter (idempotent; other
        subjects and counter sets keep theirs): put_bundled. Returns the number of writes."""
        index = QUARTER.index(quarter_ms)
        return self.put_bundled(namespace, QUARTER, quarter_ms,
                                {subject: {index: given} for subject, given in states.items()}, written_ms, legacy)

    def put_bundled(self, namespace: str, level: SlotLevel, start_ms: int,
                    states: Mapping[str, Mapping[int, Mapping[str, str]]], written_ms: int | None = None,
                    legacy: bool = True) -> int:
        """Overwrite some counter sets' states of some subjects' slots in the bundles of a quarter or of a
        day's hours (`start_ms`; other subjects and counter sets keep theirs). Large states go to split
        items, as in put_slot; the rest into the bundles that hold those subjects (read first: all of them,
        or, for a few subjects, each one's with a Query), which are cut again where they changed and written
        back, then the bundles no longer cut are deleted and the end item written. A partition without
        bundles starts from the per-subject items of the layout before them (`legacy`: there may be some;
        always for a day's hours, which are those). Nothing reads the slots
        meanwhile (above their horizon, or pending). Returns the number of writes."""
        period = level.period(start_ms)
        expires = self._bundle_expiry(level, start_ms, written_ms)
        partition = bundle_partition(namespace, level, start_ms)
        writes = 0
        updates: dict[str, dict[int, dict[str, str | None]]] = {}
        for subject, slots in states.items():
            for index, given in slots.items():
                split = {cs: state for cs, state in given.items() if len(state) > SPLIT_STATE_BYTES}
                writes += self._put_split(namespace, level, period, {"S": slot_key(subject, level, index)}, split,
                                          expires)
                updates.setdefault(subject, {})[index] = {cs: None if cs in split else state
                                                          for cs, state in given.items()}
        bundled = _Bundled(self._covering_bundles(partition, sorted(updates, key=subject_prefix)))
        if not bundled.ended and (legacy or level is HOUR):  # new, or its first writing cut short
            bundled.seed(self._packed_entries(namespace, level, start_ms))
        while True:
            for subject, changes in updates.items():
                bundled.update(subject, changes)
            puts, deletes = bundled.cut()
            items = [_bundle_item(partition, key, blob, expires) for key, blob in puts]
            too_large = [item["sk"]["S"] for item in items if item_bytes(item) > self.item_limit]
            if not too_large:
                break
            for key in too_large:  # one subject's many small states (hundreds of meters): split items instead
                subject = parse_slot_key(f"{key}0")[0]
                for index, slot in bundled.slots(subject).items():
                    writes += self._put_split(namespace, level, period, {"S": slot_key(subject, level, index)},
                                              slot, expires)
                    updates.setdefault(subject, {})[index] = dict.fromkeys(slot)
        self.put_batch(items)
        self._end_bundles(partition, deletes, expires if not bundled.ended else None)
        return writes + len(items) + len(deletes) + (not bundled.ended)

    def write_hour_bundles(self, namespace: str, day_ms: int, written_ms: int | None = None) -> int:
        """Bundle the hours of a folded UTC day from their packed items, streamed subject by subject (a day
        of a namespace's subjects need not fit in memory); bundles left by an attempt cut short that this one
        does not write again are deleted, then the end item is written. Returns the number of writes."""
        partition = bundle_partition(namespace, HOUR, day_ms)
        expires = self._bundle_expiry(HOUR, day_ms, written_ms)
        earlier = {item["sk"]["S"] for item in self.partition_items(partition)}
        written: set[str] = set()
        pending: list[BundleEntry] = []

        def flush(final: bool) -> None:
            cuts = _bundles(pending, BUNDLE_BYTES)
            keep = cuts if final else cuts[:-1]  # the last run may go on with the next subjects
            if not keep:
                return
            self.put_batch([_bundle_item(partition, key, blob, expires) for key, blob in keep])
            written.update(key for key, _ in keep)
            del pending[:sum(1 for subject, _ in pending if subject_prefix(subject) <= keep[-1][0])]

        held = 0  # bytes of states in `pending`
        for entry in self._packed_entries(namespace, HOUR, day_ms):
            pending.append(entry)
            held += _state_bytes(entry)
            if held > BUNDLE_FLUSH_BYTES:
                flush(final=False)
                held = sum(map(_state_bytes, pending))
        flush(final=True)
        self._end_bundles(partition, earlier - written - {BUNDLE_END}, expires)
        return len(written) + 1

    def _bundle_expiry(self, level: SlotLevel, start_ms: int, written_ms: int | None) -> dict[str, str]:
        """A bundle partition's expiry: its last slot's (Retention.slot_expiry_s)."""
        last_slot = start_ms + BUNDLE_SPAN_MS[level] - level.length_ms
        return {"N": str(self.retention.slot_expiry_s(level, last_slot, written_ms))}

    def _end_bundles(self, partition: str, stale: Iterable[str], expires: dict[str, str] | None) -> None:
        """After a bundle partition's bundles are written: delete the `stale` keys, then write the end
        item (unless `expires` is None: it exists)."""
        for key in stale:
            self.client.delete_item(TableName=self.table, Key={"pk": {"S": partition}, "sk": {"S": key}})
        if expires is not None:
            self.client.put_item(TableName=self.table, Item={"pk": {"S": partition}, "sk": {"S": BUNDLE_END},
                                                             "expiresAt": expires})

    def _covering_bundles(self, partition: str, subjects: Sequence[str]) -> list[dict[str, Any]]:
        """The bundle items that hold `subjects`, or would, in key order: for a few subjects of a complete
        partition (its end item exists), the end item, the first bundle at or after each one's prefix and,
        for a subject after every bundle, the last bundle (it joins it); else every item of the partition."""
        end = self.client.get_item(TableName=self.table, Key={"pk": {"S": partition}, "sk": {"S": BUNDLE_END}},
                                   ConsistentRead=True).get("Item") if 0 < len(subjects) < FEW_SUBJECTS else None
        if end is None:
            return list(self.partition_items(partition))
        found: dict[str, dict[str, Any]] = {BUNDLE_END: end}
        after_all = False
        for subject in subjects:
            page = self.client.query(
                TableName=self.table, KeyConditionExpression="pk = :pk AND sk >= :sk", Limit=1, ConsistentRead=True,
                ExpressionAttributeValues={":pk": {"S": partition}, ":sk": {"S": subject_prefix(subject)}},
            ).get("Items", [])
            found.update((item["sk"]["S"], item) for item in page)
            after_all = after_all or any(item["sk"]["S"] == BUNDLE_END for item in page)
        if after_all:
            found.update((item["sk"]["S"], item) for item in self.client.query(
                TableName=self.table, KeyConditionExpression="pk = :pk AND sk < :end", Limit=1, ConsistentRead=True,
                ScanIndexForward=False, ExpressionAttributeValues={":pk": {"S": partition}, ":end": {"S": BUNDLE_END}},
            ).get("Items", []))
        return [found[key] for key in sorted(found)]

    def _packed_entries(self, namespace: str, level: SlotLevel, start_ms: int) -> Iterator[BundleEntry]:
        """The packed items of the slots a bundle partition spans, per subject in key order, as bundle
        entries: the hours of a day before they are bundled, or a quarter written before bundles."""
        first = level.index(start_ms)
        last = first + BUNDLE_SPAN_MS[level] // level.length_ms - 1
        items = self.partition_items(slot_partition(namespace, level, level.period(start_ms)))
        for subject, group in itertools.groupby(
                ((*parse_slot_key(item["sk"]["S"]), item) for item in items), key=lambda entry: entry[0]):
            slots = {index: {name[1:]: value["S"] for name, value in item.items() if name.startswith("c")}
                     for _, index, item in group if first <= index <= last}
            slots = {index: states for index, states in slots.items() if states}
            if slots:
                yield subject, slots

    def _put_split(self, namespace: str, level: SlotLevel, period: int, key: dict[str, str],
                   states: dict[str, str], expires: dict[str, str]) -> int:
        """Each state in the item of its own (its chunks first, if it has any). Returns the number of writes."""
        writes = 0
        for counter_set, state in states.items():
            items = self._state_items(slot_partition(namespace, level, period, counter_set), key, state, expires)
            if len(items) > 1:
                self.put_batch(items[1:])
            self.client.put_item(TableName=self.table, Item=items[0])
            writes += len(items)
        return writes

    def _state_items(self, pk: str, key: dict[str, str], state: str, expires: dict[str, str]
                     ) -> list[dict[str, Any]]:
        """The split item of one state, or, if it would be larger than `item_limit`, its chunks (chunk 0
        first): see the layout at the top of this module."""
        item = {"pk": {"S": pk}, "sk": key, "s": {"S": state}, "expiresAt": expires}
        if item_bytes(item) <= self.item_limit:
            return [item]
        room = self.item_limit - item_bytes({**item, "s": {"S": ""}}) - _CHUNK_OVERHEAD
        pieces = _text_pieces(state, room)
        head = {"pk": {"S": pk}, "sk": key, "s": {"S": pieces[0]}, "n": {"N": str(len(pieces))},
                "h": {"N": str(zlib.crc32(state.encode()))}, "expiresAt": expires}
        return [head] + [{"pk": {"S": pk}, "sk": {"S": f"{key['S']}#{k}"}, "s": {"S": piece}, "expiresAt": expires}
                         for k, piece in enumerate(pieces[1:], 1)]

    def _update_packed(self, packed_key: dict[str, Any], states: dict[str, str], split: set[str],
                       expires: dict[str, str]) -> None:
        """SET the states not in `split` on the packed item, REMOVE those in it."""
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
            TableName=self.table, Key=packed_key,
            UpdateExpression=expression, ExpressionAttributeNames=names, ExpressionAttributeValues=values)

    def read_slots(self, namespace: str, level: SlotLevel, period_ms: int, counter_sets: Sequence[str],
                   subject: str | None = None, first: int | None = None, last: int | None = None,
                   consistent: bool = True, archived: bool = False, legacy: bool = True
                   ) -> Iterator[tuple[str, SlotStates]]:
        """(subject, {slot index: {counter set: state}}) for every subject of a slot partition, or for one
        subject's slots first..last, one subject at a time in key order (streamed: a subject's slots
        are complete when it is yielded). Reads the packed states (packed items, or bundles: quarters', and
        with `archived` a folded day's hours') and, per counter set, its split items, joining a chunked
        state's pieces (the text written, exactly). `consistent=False` reads eventually consistently (half
        the read units): only for slots nothing has written lately (meterline.domain.query_plan.is_settled).
        `legacy`: the period may have per-subject items from before bundles (Horizons.bundled_from), read
        where it has no bundles; else a period without bundles has no packed states."""
        if not counter_sets:
            return
        names = {f"#c{i}": f"c{cs}" for i, cs in enumerate(counter_sets)}

        def packed(first_index: int | None, last_index: int | None) -> Iterator[tuple[str, str, dict[str, Any]]]:
            return _tagged(self._slot_items(slot_partition(namespace, level, period_ms), level, subject, first_index,
                                            last_index, "sk, " + ", ".join(names), names, consistent), "")

        streams: list[Iterator[tuple[str, str, dict[str, Any]]]] = []

        def bundled(start_ms: int, first_index: int | None, last_index: int | None) -> None:
            stream = self._bundle_stream(bundle_partition(namespace, level, start_ms), level, counter_sets, subject,
                                         first_index, last_index, consistent)
            if stream is not None:
                streams.append(stream)
            elif legacy:  # no bundles: the period's per-subject items, if it has any from before them
                streams.append(packed(first_index, last_index))

        if level is QUARTER:
            for index in range(first or 0, (HOUR_MS // QUARTER_MS - 1 if last is None else last) + 1):
                bundled(level.start(period_ms, index), index, index)
        elif level is HOUR and archived:
            bundled(period_ms, first, last)
        else:
            streams.append(packed(first, last))
        for counter_set in counter_sets:
            items = self._slot_items(slot_partition(namespace, level, period_ms, counter_set), level, subject,
                                     first, last, None, None, consistent)
            streams.append(_tagged(items, counter_set))
        current: str | None = None
        inline: SlotStates = {}
        split: _SplitItems = {}
        for key, counter_set, item in heapq.merge(*streams, key=lambda entry: entry[:2]):
            item_subject, index, chunk = _split_slot_key(key)
            if item_subject != current:
                if current is not None:
                    yield current, _combine(inline, split)
                current, inline, split = item_subject, {}, {}
            if counter_set:
                split.setdefault((index, counter_set), {})[chunk] = item
            else:
                states = {cs: item[f"c{cs}"]["S"] for cs in counter_sets if f"c{cs}" in item}
                if states:
                    inline.setdefault(index, {}).update(states)
        if current is not None:
            yield current, _combine(inline, split)

    def _bundle_stream(self, partition: str, level: SlotLevel, counter_sets: Sequence[str], subject: str | None,
                       first: int | None, last: int | None, consistent: bool
                       ) -> Iterator[tuple[str, str, dict[str, Any]]] | None:
        """The packed states of slots first..last in a bundle partition, as read_slots merges packed items:
        (slot key, "", {"c{counter set}": state}) in key order; every subject's, or `subject`'s (the first
        bundle at or after its prefix, Limit 1). None if the partition is empty: its slots are in per-
        subject items (written before bundles)."""
        request: dict[str, Any] = {"KeyConditionExpression": "pk = :pk", "ConsistentRead": consistent,
                                   "ExpressionAttributeValues": {":pk": {"S": partition}}}
        items: Iterator[dict[str, Any]]
        if subject is None:
            items = self.query_items(request)
            head = next(items, None)
            if head is None:
                return None
            items = itertools.chain([head], items)
        else:
            request["KeyConditionExpression"] += " AND sk >= :sk"
            request["ExpressionAttributeValues"][":sk"] = {"S": subject_prefix(subject)}
            page = self.client.query(TableName=self.table, Limit=1, **request).get("Items", [])
            if not page:
                return None
            items = iter(page)
        low, high = first or 0, 10**level.width if last is None else last
        wanted = set(counter_sets)

        def entries() -> Iterator[tuple[str, str, dict[str, Any]]]:
            previous = ""
            for item in items:
                for entry_subject, slots in _bundle_entries(item, previous):
                    if subject not in (None, entry_subject):
                        continue
                    for index in sorted(slots):
                        picked = {f"c{cs}": {"S": state} for cs, state in slots[index].items() if cs in wanted}
                        if picked and low <= index <= high:
                            key = slot_key(entry_subject, level, index)
                            yield key, "", {"sk": {"S": key}, **picked}
                previous = item["sk"]["S"]

        return entries()

    def _slot_items(self, partition: str, level: SlotLevel, subject: str | None, first: int | None,
                    last: int | None, projection: str | None, names: dict[str, str] | None, consistent: bool
                    ) -> Iterator[dict[str, Any]]:
        request: dict[str, Any] = {"TableName": self.table, "ConsistentRead": consistent}
        if subject is None:
            request["KeyConditionExpression"] = "pk = :pk"
            request["ExpressionAttributeValues"] = {":pk": {"S": partition}}
        else:
            request["KeyConditionExpression"] = "pk = :pk AND sk BETWEEN :lo AND :hi"
            request["ExpressionAttributeValues"] = {
                ":pk": {"S": partition},
                ":lo": {"S": slot_key(subject, level, first or 0)},
                # through the last slot's chunks ("{key}#{k}")
                ":hi": {"S": f"{slot_key(subject, level, 10**level.width - 1 if last is None else last)}#\U0010ffff"},
            }
        if projection is not None:
            request["ProjectionExpression"] = projection
            request["ExpressionAttributeNames"] = names
        return self.query_items(request)

    def put_work(self, level: SlotLevel, period_ms: int, namespace: str, now_ms: int) -> None:
        """Note that a namespace has quarters to roll into the hour or day starting at period_ms. Kept at
        least as long as the quarters and hour items it is folded from (a compactor that lags that long
        still folds, and bundles, the day), and at least 31 days (zone days are built 30 days back)."""
        kept_s = max(31 * DAY_S, self.retention.quarter_ms // 1000 + DAY_S)
        self.client.put_item(TableName=self.table, Item={
            "pk": {"S": f"work#{level.key}#{period_ms}"}, "sk": {"S": namespace},
            "expiresAt": {"N": str(now_ms // 1000 + kept_s)}})

    def read_work(self, level: SlotLevel, period_ms: int) -> list[str]:
        return [item["sk"]["S"] for item in self.partition_items(f"work#{level.key}#{period_ms}", True)]

    def put_recount_requests(self, hours: Iterable[tuple[str, int]], batch_id: str, now_ms: int) -> int:
        """Ask for a recount of each (namespace, UTC hour): an overwrite, so asking again renews the request
        (and keeps it past a recount already under way: drop_recount_request). Returns the number of items."""
        expires = {"N": str(now_ms // 1000 + self._retention_s)}
        items = [{**_recount_request_key(namespace, hour),
                  "at": {"N": str(now_ms)}, "batch": {"S": batch_id}, "expiresAt": expires}
                 for namespace, hour in sorted(set(hours))]
        self.put_batch(items)
        return len(items)

    def recount_requests(self) -> list[RecountRequest]:
        """Every pending recount request, by namespace and hour (one Query)."""
        requests = []
        for item in self.partition_items(RECOUNT_REQUESTS):
            namespace, _, hour = item["sk"]["S"].rpartition("#")
            requests.append(RecountRequest(namespace, int(hour), int(item["at"]["N"]), item["batch"]["S"]))
        return requests

    def drop_recount_request(self, request: RecountRequest) -> bool:
        """Delete a served request, unless it was asked for again since it was read: then it stays and is
        served again (a recount is idempotent), since the recount may have missed the newer event. Returns
        whether it was deleted."""
        try:
            self.client.delete_item(
                TableName=self.table,
                Key=_recount_request_key(request.namespace, request.hour_ms),
                ConditionExpression="#at = :at AND #batch = :batch",
                ExpressionAttributeNames={"#at": "at", "#batch": "batch"},
                ExpressionAttributeValues={":at": {"N": str(request.at_ms)}, ":batch": {"S": request.batch}})
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def get_compaction_state(self) -> Horizons | None:
        """The compactor's horizons (with its zone days, snapshot and settled horizons); None before its
        first run."""
        item = self.client.get_item(TableName=self.table, Key=COMPACTION_KEY, ConsistentRead=True).get("Item")
        if not item or any(name not in item for name in HORIZON_NAMES.values()):
            return None
        horizons = _horizons({field: int(item[name]["N"]) for field, name in HORIZON_NAMES.items()})
        if "zoneDays" in item:
            horizons.zones = _zones_from_json(orjson.loads(item["zoneDays"]["S"]))
        if "settled" in item:
            horizons.settled = _horizons_from_json(orjson.loads(item["settled"]["S"]))
        if "snapshot" in item:
            snapshot = orjson.loads(item["snapshot"]["S"])
            horizons.snapshot = (int(snapshot["at"]), _horizons_from_json(snapshot["horizons"]))
        horizons.bundled_from = int(item["bundledFrom"]["N"]) if "bundledFrom" in item else BUNDLED_FROM_UNKNOWN
        return horizons

    def set_compaction_state(self, horizons: Horizons, *fields: str) -> None:
        """Store the named fields of `horizons` (every field when none is named): its four horizons by
        name, "zones" (the zone days), "settled" (the settled horizons and the snapshot, or their removal
        when None), "bundled_from"."""
        sets: dict[str, dict[str, str]] = {}
        removes: list[str] = []
        for field in fields or (*HORIZON_NAMES, "zones", "settled", "bundled_from"):
            if field in HORIZON_NAMES:
                sets[HORIZON_NAMES[field]] = {"N": str(getattr(horizons, field))}
            elif field == "bundled_from":
                sets["bundledFrom"] = {"N": str(horizons.bundled_from)}
            elif field == "zones":
                sets["zoneDays"] = {"S": orjson.dumps(_zones_json(horizons.zones)).decode()}
            elif field == "settled":
                for name, value in (("settled", None if horizons.settled is None else _horizons_json(horizons.settled)),
                                    ("snapshot", None if horizons.snapshot is None else {
                                        "at": horizons.snapshot[0], "horizons": _horizons_json(horizons.snapshot[1])})):
                    if value is None:
                        removes.append(name)
                    else:
                        sets[name] = {"S": orjson.dumps(value).decode()}
            else:
                raise ValueError(f"no compaction state field {field!r}")
        names = [*sets, *removes]
        clauses = []
        if sets:
            clauses.append("SET " + ", ".join(f"#a{i} = :v{i}" for i in range(len(sets))))
        if removes:
            clauses.append("REMOVE " + ", ".join(f"#a{i}" for i in range(len(sets), len(names))))
        request: dict[str, Any] = {
            "TableName": self.table, "Key": COMPACTION_KEY, "UpdateExpression": " ".join(clauses),
            "ExpressionAttributeNames": {f"#a{i}": name for i, name in enumerate(names)}}
        if sets:
            request["ExpressionAttributeValues"] = {f":v{i}": value for i, value in enumerate(sets.values())}
        self.client.update_item(**request)


def _zones_json(zones: Mapping[int, ZoneRange]) -> dict[str, list[int]]:
    return {str(phase): [z.from_ms, z.through_ms, z.requested_ms, z.created_ms] for phase, z in sorted(zones.items())}


def _zones_from_json(value: Mapping[str, list[int]]) -> dict[int, ZoneRange]:
    return {int(phase): ZoneRange(*(int(v) for v in bounds)) for phase, bounds in value.items()}


def _horizons_json(horizons: Horizons) -> list[Any]:
    """A snapshot's or the settled horizons, compactly (the state item stays under 1 KB, one write unit,
    with a few zone day phases): [quarter, hour, day, late_through, {phase: [from, through, created]}]."""
    return [horizons.quarter, horizons.hour, horizons.day, horizons.late_through,
            {str(phase): [z.from_ms, z.through_ms, z.created_ms] for phase, z in sorted(horizons.zones.items())}]


def _horizons_from_json(value: list[Any]) -> Horizons:
    quarter, hour, day, late_through, zones = value
    return Horizons(int(quarter), int(hour), int(day), int(late_through), {
        int(phase): ZoneRange(int(start), int(through), 0, int(created))
        for phase, (start, through, created) in zones.items()})


def _horizons(by_field: Mapping[str, int]) -> Horizons:
    return Horizons(by_field["quarter"], by_field["hour"], by_field["day"], by_field["late_through"])


def _too_large(error: Exception) -> bool:
    """Whether DynamoDB refused a write because the item would exceed its size limit."""
    details = getattr(error, "response", None)
    if not isinstance(details, dict):
        return False
    problem = details.get("Error", {})
    # "Item size has exceeded ..." (PutItem), "Item size to update has exceeded ..." (UpdateItem)
    return problem.get("Code") == "ValidationException" and "item size" in str(problem.get("Message", "")).lower()


def _tagged(items: Iterator[dict[str, Any]], tag: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for item in items:
        yield item["sk"]["S"], tag, item


# A subject's split items: (slot index, counter set) -> chunk number -> item
_SplitItems = dict[tuple[int, str], dict[int, dict[str, Any]]]


def _combine(inline: SlotStates, split: _SplitItems) -> SlotStates:
    """A subject's states: the packed copy of a counter set's state wins over a split one (a split item
    is left behind when a state shrinks back under SPLIT_STATE_BYTES)."""
    for (index, counter_set), chunks in split.items():
        into = inline.setdefault(index, {})
        if counter_set not in into:
            state = _assemble(chunks)
            if state is not None:
                into[counter_set] = state
        if not into:
            del inline[index]
    return inline


def _assemble(chunks: dict[int, dict[str, Any]]) -> str | None:
    """The text of a split state: its one item's, or its chunks' 0..n-1 joined and checked against the
    CRC. None for what TTL is deleting (expired chunks disappear in any order); IncompleteSlot if
    anything else does not add up."""
    head = chunks.get(0)
    if head is not None and "n" not in head:
        text: str = head["s"]["S"]
        return text
    count = int(head["n"]["N"]) if head is not None else 0
    if head is not None and all(k in chunks for k in range(count)):
        text = "".join(chunks[k]["s"]["S"] for k in range(count))
        if zlib.crc32(text.encode()) == int(head["h"]["N"]):
            return text
    now_s = int(time.time())
    if all("expiresAt" in item and int(item["expiresAt"]["N"]) <= now_s for item in chunks.values()):
        return None
    key = min(chunks.items())[1]["sk"]["S"]
    raise IncompleteSlot(f"the slot state at {key!r} is incomplete: chunks {sorted(chunks)} of "
                         f"{count or 'an unknown number'}, or their text does not match its CRC")
