"""The stream processor's counting step: turn a batch's events into rows and write them.

Rows are written, never added: each batch writes its rows of each (namespace, counter set, minute,
subject bucket) it touches into a raw page keyed by the minute and the batch id, in a partition per
quarter: a page of their own, or, when they are few (UsageStore.put_raw_rows), the batch's shared page of
the namespace, quarter, subject bucket and minute, with the other counter sets' few rows; then,
once every page has landed, one manifest per event quarter and namespace (plus, for late data, a late
list per namespace) telling the compactor which partitions to fold into slots. Both are batched writes
(25 items per call). A redelivered batch rewrites pages (same or different
batch id); rows carry their event's identity, so every reader counts each event once whatever was
written twice.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from meterline.domain.counting import MeterCounter, subject_bucket
from meterline.domain.events import StoredEvent
from meterline.domain.meters import MeterCatalog
from meterline.domain.timeutil import MINUTE_MS, QUARTER_MS, floor_to
from meterline.settings import CompactionTiming
from meterline.storage.usage_store import UsageStore, raw_partition

_counters_by_catalog: weakref.WeakKeyDictionary[MeterCatalog, dict[str, list[MeterCounter]]] = (
    weakref.WeakKeyDictionary())


def counters_for(catalog: MeterCatalog) -> dict[str, list[MeterCounter]]:
    """The catalog's meters as counters, by event type; built once per catalog object."""
    counters = _counters_by_catalog.get(catalog)
    if counters is None:
        counters = defaultdict(list)
        for meter in catalog.meters:
            for compiled in catalog.for_event_type(meter.event_type):
                if compiled.meter is meter:
                    counters[meter.event_type].append(MeterCounter(compiled))
        _counters_by_catalog[catalog] = counters
    return counters


@dataclass
class CountResult:
    rows: int = 0
    pages: int = 0
    manifests: int = 0


def is_late(quarter_ms: int, now_ms: int, timing: CompactionTiming) -> bool:
    """A quarter is late once the compactor may already have folded it: its manifest then goes to the
    late queue. `write_margin` covers the time between this decision and the write landing."""
    return quarter_ms + QUARTER_MS + timing.grace_ms - timing.write_margin_ms <= now_ms


def count_events(events: Sequence[StoredEvent], catalogs: Callable[[str], MeterCatalog], store: UsageStore,
                 batch_id: str, now_ms: int, timing: CompactionTiming) -> CountResult:
    groups: dict[tuple[str, str, int, int], list[list]] = defaultdict(list)
    parts: dict[str, tuple[str, str, int, int]] = {}
    for event in events:
        counters = counters_for(catalogs(event.namespace)).get(event.type)
        if not counters:
            continue
        minute = floor_to(event.time_ms, MINUTE_MS)
        bucket = subject_bucket(event.subject)
        for counter in counters:
            row = counter.row(event)
            if row is None:
                continue
            group = (event.namespace, counter.counter_set, minute, bucket)
            groups[group].append(row.as_list())
            parts[raw_partition(event.namespace, counter.counter_set, floor_to(minute, QUARTER_MS), bucket)] = group
    result = CountResult(rows=sum(len(rows) for rows in groups.values()))
    if not groups:
        return result
    result.pages = store.put_raw_rows(groups, batch_id, now_ms)

    # manifest#{quarter} lists every raw partition of a quarter (the compactor's on-time work, and the
    # directory a query reads raw rows through), under the namespace's key range, whether the batch wrote its
    # rows there or in the shared page (readers read both); late parts, whose quarters the compactor may
    # already have folded, are also listed by processing quarter.
    manifests: dict[tuple[int, str], list[list]] = defaultdict(list)
    late: dict[str, list[list]] = defaultdict(list)
    for namespace, counter_set, minute, bucket in parts.values():
        quarter = floor_to(minute, QUARTER_MS)
        part = [namespace, counter_set, minute, bucket]
        manifests[(quarter, namespace)].append(part)
        if is_late(quarter, now_ms, timing):
            late[namespace].append(part)
    result.manifests = store.put_work_lists(batch_id, manifests, late, floor_to(now_ms, QUARTER_MS), now_ms)
    return result
