"""Counting: what one event contributes to one meter (a Row), and the aggregation states that rows
fold into and that merge across time slots.

Exactly-once rests on one rule: a row carries its event's identity (source, id), and every
aggregation over rows first drops rows whose identity was already seen. Rows may therefore be
written any number of times (stream redelivery, backfill overlapping live processing) without
changing any number. See docs/architecture.md, "Exactly-once counting".
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from meterline.domain.events import StoredEvent
from meterline.domain.meters import Aggregation, CompiledMeter, Meter, parse_number
from meterline.domain.timeutil import parse_rfc3339, to_epoch_ms

# Raw rows are partitioned by subject bucket so a one-subject read touches 1/SUBJECT_BUCKETS of them.
SUBJECT_BUCKETS = 8


@dataclass(frozen=True, slots=True)
class Row:
    """One event's contribution to one meter."""

    source: str
    id: str
    subject: str
    groups: tuple[str, ...]
    value: Any  # float for numeric aggregations, str for UNIQUE_COUNT, None for COUNT
    time_ms: int

    def as_list(self) -> list[Any]:
        return [self.source, self.id, self.subject, list(self.groups), self.value, self.time_ms]

    @classmethod
    def from_list(cls, raw: list[Any]) -> Row:
        return cls(raw[0], raw[1], raw[2], tuple(raw[3]), raw[4], raw[5])


def subject_bucket(subject: str) -> int:
    return zlib.crc32(subject.encode()) % SUBJECT_BUCKETS


def counter_set_id(meter: Meter) -> str:
    """Names the counters of one meter definition. Anything that changes what is counted (event type,
    aggregation, value property, group-by keys and paths, eventFrom) changes the name, so a changed
    meter starts from fresh counters, which its backfill rebuilds from the events."""
    identity = orjson.dumps([meter.event_type, meter.aggregation.value, meter.value_property,
                             sorted(meter.group_by.items()), meter.event_from], option=orjson.OPT_SORT_KEYS)
    meter_id = getattr(meter, "id", None) or meter.slug
    return f"{meter_id}.{hashlib.blake2b(identity, digest_size=4).hexdigest()}"


def _group_value(found: bool, raw: Any) -> str:
    if not found or raw is None:
        return ""
    if isinstance(raw, str):
        return raw
    return orjson.dumps(raw).decode()


class MeterCounter:
    """A compiled meter that turns events into rows."""

    def __init__(self, compiled: CompiledMeter) -> None:
        self.compiled = compiled
        self.meter = compiled.meter
        self.aggregation = compiled.meter.aggregation
        self.counter_set = counter_set_id(compiled.meter)
        self.group_keys = tuple(compiled.meter.group_by)
        self._group_getters = tuple(compiled.group_getters[key] for key in self.group_keys)
        self._value_getter = compiled.value_getter
        event_from = compiled.meter.event_from
        self._from_ms = to_epoch_ms(parse_rfc3339(event_from)) if isinstance(event_from, str) else (
            to_epoch_ms(event_from) if isinstance(event_from, datetime) else None)

    def row(self, event: StoredEvent) -> Row | None:
        """The event's row, or None if this meter does not count it (value missing or not a number,
        or the event is older than the meter's eventFrom)."""
        if self._from_ms is not None and event.time_ms < self._from_ms:
            return None
        data = event.data or {}
        value: str | float | None
        if self.aggregation is Aggregation.COUNT or self._value_getter is None:
            value = None
        else:
            found, raw = self._value_getter(data)
            if not found or raw is None:
                return None
            if self.aggregation is Aggregation.UNIQUE_COUNT:
                if isinstance(raw, (dict, list)):
                    return None
                value = raw if isinstance(raw, str) else orjson.dumps(raw).decode()
            else:
                value = parse_number(raw)
                if value is None:
                    return None
        groups = tuple(_group_value(*getter(data)) for getter in self._group_getters)
        return Row(event.source, event.id, event.subject, groups, value, event.time_ms)


# --- aggregation states -------------------------------------------------------------------------
# A state is a small JSON-friendly list; `fold` adds rows, `merge` combines states of disjoint row
# sets, `final` gives the number the API reports.


def empty_state(aggregation: Aggregation) -> list[Any] | None:
    return [] if aggregation is Aggregation.UNIQUE_COUNT else None


def fold(aggregation: Aggregation, state: list[Any] | None, row: Row) -> list[Any]:
    value = row.value
    if aggregation is Aggregation.COUNT:
        return [1] if state is None else [state[0] + 1]
    if aggregation is Aggregation.SUM:
        return [value] if state is None else [state[0] + value]
    if aggregation is Aggregation.AVG:
        return [value, 1] if state is None else [state[0] + value, state[1] + 1]
    if aggregation is Aggregation.MIN:
        return [value] if state is None or value < state[0] else state
    if aggregation is Aggregation.MAX:
        return [value] if state is None or value > state[0] else state
    if aggregation is Aggregation.LATEST:
        candidate = [row.time_ms, row.source, row.id, value]
        return candidate if state is None or _latest_key(candidate) > _latest_key(state) else state
    # UNIQUE_COUNT: the sorted distinct values (exact, so states of different slots can be unioned)
    values = set(state or ())
    values.add(value)
    return sorted(values)


def _latest_key(state: list[Any]) -> tuple[int, str, str]:
    # Later event time wins; ties go to the greater (source, id) so arrival order never matters.
    return (state[0], state[1], state[2])


def merge(aggregation: Aggregation, a: list[Any] | None, b: list[Any] | None) -> list[Any] | None:
    if a is None:
        return b
    if b is None:
        return a
    if aggregation in (Aggregation.COUNT, Aggregation.SUM):
        return [a[0] + b[0]]
    if aggregation is Aggregation.AVG:
        return [a[0] + b[0], a[1] + b[1]]
    if aggregation is Aggregation.MIN:
        return a if a[0] <= b[0] else b
    if aggregation is Aggregation.MAX:
        return a if a[0] >= b[0] else b
    if aggregation is Aggregation.LATEST:
        return a if _latest_key(a) >= _latest_key(b) else b
    return sorted(set(a) | set(b))


def final(aggregation: Aggregation, state: list[Any] | None) -> float | None:
    if state is None:
        return None
    if aggregation is Aggregation.AVG:
        return state[0] / state[1]
    if aggregation is Aggregation.UNIQUE_COUNT:
        return float(len(state))
    if aggregation is Aggregation.LATEST:
        return state[3]
    return state[0]


GroupStates = dict[tuple[str, str], list[Any]]  # (subject, encoded groups) -> state


def encode_groups(groups: tuple[str, ...]) -> str:
    return orjson.dumps(list(groups)).decode()


def aggregate_rows(aggregation: Aggregation, rows: Iterable[Row], seen: set[tuple[str, str]] | None = None
                   ) -> dict[str, dict[str, list[Any]]]:
    """Fold rows into states per subject and group, counting each event identity once.
    Returns {subject: {encoded groups: state}}."""
    unseen = _first_of_each_event(rows, set() if seen is None else seen)
    if aggregation is Aggregation.UNIQUE_COUNT:
        return _unique_values(unseen)
    out: dict[str, dict[str, list[Any]]] = {}
    for row in unseen:
        by_group = out.setdefault(row.subject, {})
        key = encode_groups(row.groups)
        by_group[key] = fold(aggregation, by_group.get(key), row)
    return out


def _first_of_each_event(rows: Iterable[Row], seen: set[tuple[str, str]]) -> Iterator[Row]:
    """The rows whose event identity is not in `seen` yet (adding it)."""
    for row in rows:
        identity = (row.source, row.id)
        if identity not in seen:
            seen.add(identity)
            yield row


def _unique_values(rows: Iterable[Row]) -> dict[str, dict[str, list[Any]]]:
    """aggregate_rows for UNIQUE_COUNT: the same states (each group's sorted distinct values, groups in
    the order first seen), gathered in sets and sorted once, where `fold` would sort a growing list for
    every row (quadratic in the distinct values of a group)."""
    values: dict[str, dict[str, set[Any]]] = {}
    for row in rows:
        values.setdefault(row.subject, {}).setdefault(encode_groups(row.groups), set()).add(row.value)
    return {subject: {key: sorted(distinct) for key, distinct in by_group.items()}
            for subject, by_group in values.items()}


def merge_group_states(aggregation: Aggregation, into: dict[str, list[Any]], other: dict[str, list[Any]]) -> None:
    for key, state in other.items():
        merged = merge(aggregation, into.get(key), state)
        if merged is not None:
            into[key] = merged
