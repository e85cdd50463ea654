"""Usage queries: windows in any IANA time zone, answered from zone day, day, hour and quarter-hour slots
and raw rows, each part of time from exactly one of them.

Below the compactor's horizons the slots are complete; above them (the fresh tail) raw rows are read
and de-duplicated by event identity. Window edges that are not on a UTC quarter-hour (a `from` of
10:07:30, a MINUTE window) are read from raw rows too, filtered to the millisecond. Slots that nothing
has written for SETTLE_MS are read eventually consistently (meterline.domain.query_plan.is_settled). A
DAY query off UTC asks the compactor for the zone days of its phase (meterline.domain.slots.ZoneDays).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import orjson
from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError

from meterline.domain.counting import (
    SUBJECT_BUCKETS,
    Row,
    counter_set_id,
    encode_groups,
    final,
    fold,
    merge,
    subject_bucket,
)
from meterline.domain.meters import Aggregation, Meter
from meterline.domain.query_plan import Plan, UsageQuery, plan
from meterline.domain.slots import QUARTER, ZONE_RENEW_MS, Horizons, SlotLevel, zone_days_kept_from
from meterline.domain.timeutil import DAY_MS, HOUR_MS, MINUTE_MS, QUARTER_MS, floor_to, format_ms
from meterline.domain.validation import EpochMs, QueryParameters, invalid
from meterline.domain.windows import TooManyWindows, WindowSize, resolve_time_zone
from meterline.errors import FieldError, InvalidInput
from meterline.observability import logger
from meterline.services.meters import get_meter
from meterline.settings import QueryLimits
from meterline.storage.dynamo import concurrently
from meterline.storage.meters_store import MetersStore
from meterline.storage.usage_store import UsageStore, raw_partition, shared_raw_partition
from meterline.storage.zone_requests_store import ZoneRequests

SUBJECT = "subject"


def _window_size(value: Any) -> WindowSize | None:
    if value is None:
        return None
    try:
        return WindowSize(value)
    except ValueError:
        raise PydanticCustomError("window_size", "must be one of MINUTE, HOUR, DAY, MONTH") from None


def _time_zone(value: Any) -> str:
    zone = value or "UTC"
    try:
        resolve_time_zone(zone)
    except (ValueError, TypeError) as exc:
        raise PydanticCustomError("time_zone", str(exc)) from None
    return str(zone)


def _string_list(value: Any) -> list[str] | None:
    if value is None:
        return None
    listed = [value] if isinstance(value, str) else value
    if not isinstance(listed, list) or not all(isinstance(v, str) and v for v in listed):
        raise PydanticCustomError("string_list", "must be a list of non-empty strings")
    return list(dict.fromkeys(listed))


def _mapping(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PydanticCustomError("filter_group_by", "must map groupBy keys to values")
    return dict(value)


class UsageQueryParameters(QueryParameters):
    """OpenMeter's usage query, from a query string (meterline.http.requests.usage_query_params) or a
    JSON body: what can be checked without the meter."""

    from_ms: EpochMs | None = Field(None, alias="from")
    to_ms: EpochMs | None = Field(None, alias="to")
    window_size: Annotated[WindowSize | None, BeforeValidator(_window_size)] = Field(None, alias="windowSize")
    window_time_zone: Annotated[str, BeforeValidator(_time_zone)] = Field("UTC", alias="windowTimeZone")
    subject: Annotated[list[str] | None, BeforeValidator(_string_list)] = None
    group_by: Annotated[list[str] | None, BeforeValidator(_string_list)] = Field(None, alias="groupBy")
    filter_group_by: Annotated[dict[str, Any], BeforeValidator(_mapping)] = Field({}, alias="filterGroupBy")
    client_id: str | None = Field(None, alias="clientId")  # accepted, as OpenMeter's SDKs send it

    def query(self, meter: Meter, now_ms: int, default_range_ms: int) -> UsageQuery:
        """The query on `meter`: its groupBy and filter keys must be the meter's; `to` defaults to now and
        `from` to `default_range_ms` before `to`."""
        errors = [FieldError("groupBy", f"meter {meter.slug} has no groupBy key {key!r}")
                  for key in self.group_by or [] if key != SUBJECT and key not in meter.group_by]
        filters: dict[str, list[str]] = {}
        for key, values in self.filter_group_by.items():
            if key not in meter.group_by:
                errors.append(FieldError(f"filterGroupBy[{key}]", f"meter {meter.slug} has no groupBy key {key!r}"))
                continue
            listed = [values] if isinstance(values, str) else values
            if not isinstance(listed, list) or not listed or not all(isinstance(v, str) for v in listed):
                errors.append(FieldError(f"filterGroupBy[{key}]", "must be a string or a non-empty list of strings"))
                continue
            filters[key] = listed
        if errors:
            raise invalid(errors)
        to_ms = now_ms if self.to_ms is None else self.to_ms
        from_ms = to_ms - default_range_ms if self.from_ms is None else self.from_ms
        if from_ms >= to_ms:
            raise InvalidInput("from must be before to", [FieldError("from", "must be before to")])
        return UsageQuery(from_ms, to_ms, self.window_size, self.window_time_zone, self.subject,
                          self.group_by or [], filters)


def query_usage(meters: MetersStore, store: UsageStore, namespace: str, id_or_slug: str,
                parameters: UsageQueryParameters, now_ms: int, default_range_ms: int, limits: QueryLimits
                ) -> tuple[Meter, UsageQuery, list[dict[str, Any]]]:
    """GET/POST /api/v1/meters/{idOrSlug}/query: the meter, the query as understood, and its rows."""
    meter = get_meter(meters, namespace, id_or_slug)
    query = parameters.query(meter, now_ms, default_range_ms)
    # zone day requests live beside the meters, in the catalog table
    reader = UsageReader(store, limits, ZoneRequests(meters.client, meters.table))
    return meter, query, reader.query(namespace, meter, query, now_ms)


def meter_subjects(meters: MetersStore, store: UsageStore, namespace: str, id_or_slug: str, now_ms: int,
                   retention_ms: int, limits: QueryLimits) -> list[str]:
    """GET /api/v1/meters/{idOrSlug}/subjects: the subjects with usage of the meter over the retention,
    read through the same exact query path as /query (one window, grouped by subject)."""
    by_subject = UsageQueryParameters.model_validate({"groupBy": [SUBJECT]})
    _, _, rows = query_usage(meters, store, namespace, id_or_slug, by_subject, now_ms, retention_ms, limits)
    return sorted({row["subject"] for row in rows})


class UsageReader:
    def __init__(self, store: UsageStore, limits: QueryLimits | None = None,
                 zone_requests: ZoneRequests | None = None) -> None:
        """`zone_requests`: where a DAY query off UTC asks for zone days (None: it does not ask, but reads
        the zone days others asked for)."""
        self.store = store
        self.limits = limits
        self.zone_requests = zone_requests
        self._now = 0

    def query(self, namespace: str, meter: Meter, query: UsageQuery, now_ms: int | None = None
              ) -> list[dict[str, Any]]:
        self._now = int(time.time() * 1000) if now_ms is None else now_ms
        state = self.store.get_compaction_state()
        counter_set = counter_set_id(meter)
        # Whatever the plan, each UTC month of the range is at least one read: refuse absurd ranges before
        # planning them.
        months = (query.to_ms - query.from_ms) // (28 * DAY_MS) + 1
        self._check_budget(months * (len(query.subjects) if query.subjects else 1))
        pending, recent = self._late_quarters(namespace, counter_set, state)
        try:
            the_plan = plan(query, state, pending, recent=recent, zone_days_from=self._zone_days_from())
        except TooManyWindows as exc:
            raise InvalidInput(str(exc), [FieldError("windowSize", str(exc))]) from None
        self._check_retention(query, the_plan, pending)
        self._request_zone_days(the_plan, state)
        slot_reads = self._slot_reads(the_plan.slots, query.subjects, the_plan.eventual, state)
        raw_reads = self._raw_reads(namespace, counter_set, the_plan.raw_ranges, query.subjects)
        self._check_budget(len(slot_reads) + len(raw_reads))
        aggregation = meter.aggregation
        group_keys = list(meter.group_by)
        selected = [k for k in query.group_by if k != SUBJECT]
        by_subject = SUBJECT in query.group_by or query.subjects is not None
        filters = [(group_keys.index(k), set(v)) for k, v in query.filter_group_by.items()]
        window_starts = [w[0] for w in the_plan.windows]
        accumulated: dict[tuple[int, str | None, tuple[str, ...]], Any] = {}
        decoded: dict[str, tuple[str, ...] | None] = {}

        def groups_of(encoded: str) -> tuple[str, ...] | None:
            """Selected group values, or None if a filter excludes the group."""
            if encoded not in decoded:
                values = orjson.loads(encoded)
                values += [""] * (len(group_keys) - len(values))
                if any(values[i] not in allowed for i, allowed in filters):
                    decoded[encoded] = None
                else:
                    decoded[encoded] = tuple(values[group_keys.index(k)] for k in selected)
            return decoded[encoded]

        def add(time_ms: int, subject: str, encoded: str, state: Any) -> None:
            groups = groups_of(encoded)
            if groups is None:
                return
            window = bisect.bisect_right(window_starts, time_ms) - 1
            key = (window, subject if by_subject else None, groups)
            accumulated[key] = merge(aggregation, accumulated.get(key), state)

        self._read_slots(namespace, counter_set, slot_reads, add)
        self._read_raw(aggregation, raw_reads, the_plan.raw_ranges, query.subjects, add)
        if self.limits is not None and len(accumulated) > self.limits.max_rows:
            reason = (f"would answer more than {self.limits.max_rows} rows (METERLINE_QUERY_MAX_ROWS); group by "
                      "fewer keys, filter with subject or filterGroupBy, or use a larger windowSize")
            raise InvalidInput(f"the query {reason}", [FieldError("groupBy", reason), FieldError("windowSize", reason)])

        rows = []
        for (window, subject, groups), state in sorted(accumulated.items(), key=lambda kv: (
                kv[0][0], kv[0][1] or "", kv[0][2])):
            start, end = the_plan.windows[window]
            rows.append({
                "value": final(aggregation, state),
                "windowStart": format_ms(start),
                "windowEnd": format_ms(end),
                "subject": subject,
                "groupBy": dict(zip(selected, groups, strict=True)),
            })
        return rows

    def _check_retention(self, query: UsageQuery, the_plan: Plan, pending: frozenset[int] = frozenset()) -> None:
        """Refuse a query that needs minute rows or quarter slots older than they are kept: its answer
        would silently miss usage. Pending late quarters are read from raw rows however old: their rows are
        whole, as the compactor will fold them (a late event's quarter is young enough to re-fold,
        Retention.refold_from_ms, and a recount rewrites every row of its hour). So are the other quarters of
        their hours: one older than its retention was recounted, which lists every quarter that has rows, so
        the others are empty."""
        retention = self.store.retention
        pending_hours = {floor_to(quarter, HOUR_MS) for quarter in pending}
        needs = [("minute", retention.minute_days, retention.minute_ms, "METERLINE_MINUTE_RETENTION_DAYS",
                  "quarter-hour", min((start for start, end in the_plan.raw_ranges
                                       if not (start in pending and end == start + QUARTER_MS)), default=None)),
                 ("quarter-hour", retention.quarter_days, retention.quarter_ms, "METERLINE_QUARTER_RETENTION_DAYS",
                  "hour", min((start for (level, _), starts in the_plan.slots.items() if level is QUARTER
                               for start in starts if floor_to(start, HOUR_MS) not in pending_hours), default=None))]
        for name, configured, kept_ms, variable, coarser, oldest in needs:
            # Unless configured, fine resolutions live as long as the events (their expiry counts from
            # when they were written, so late events' rows outlive the events' own time).
            if configured is None or oldest is None or oldest >= self._now - kept_ms:
                continue
            field = "windowSize" if query.window_size is WindowSize.MINUTE else "from"
            days = kept_ms // DAY_MS
            reason = (f"needs {name} counters at {format_ms(oldest)}, which are kept {days} days ({variable}); "
                      f"before {format_ms(self._now - kept_ms)} use window and range edges on UTC {coarser} "
                      "boundaries")
            raise InvalidInput(f"{field} {reason}", [FieldError(field, reason)])

    def _check_budget(self, reads: int) -> None:
        if self.limits is None or reads <= self.limits.read_budget:
            return
        reason = (f"needs {reads} reads, more than the {self.limits.read_budget} one query may make "
                  "(METERLINE_QUERY_READ_BUDGET): narrow from/to, ask for fewer subjects, or use window and "
                  "range edges on UTC hour or day boundaries")
        raise InvalidInput(f"the query {reason}", [FieldError("from", reason)])

    def _zone_days_from(self) -> int:
        """The first zone day a query may read: the ones before expire (TTL) within the hour."""
        return zone_days_kept_from(self._now, self.store.retention.zone_day_ms)

    def _request_zone_days(self, the_plan: Plan, state: Horizons | None) -> None:
        """Ask for the zone days of the plan's whole local days off UTC that the compactor does not keep,
        or renew a request about to lapse (a failure only costs reads: logged, never an error)."""
        if self.zone_requests is None:
            return
        for phase in sorted(the_plan.day_phases):
            zone = state.zones.get(phase) if state else None
            if zone is not None and zone.requested_ms >= self._now - ZONE_RENEW_MS:
                continue
            try:
                self.zone_requests.request(phase, self._now)
            except Exception:  # noqa: BLE001 - the query is answered all the same
                logger.warning("could not request zone days", extra={"phase_ms": phase}, exc_info=True)

    @staticmethod
    def _slot_reads(wanted: dict[tuple[SlotLevel, int], list[int]], subjects: Sequence[str] | None,
                    eventual: set[tuple[SlotLevel, int]], state: Horizons | None) -> list[_SlotRead]:
        """One read per (level, period) and subject (or all subjects): level, period, subject, the wanted
        slots by index (their start), whether it must be strongly consistent, whether it reads a folded
        day's hours from their bundles (below the day horizon: bundled before it moved; eventually
        consistent only below the settled one, so that the bundles are as old as SETTLE_MS), and whether
        its period may have per-subject items from before bundles (Horizons.bundled_from)."""
        reads = []
        for (level, period), starts in sorted(wanted.items(), key=lambda kv: (kv[0][0].length_ms, kv[0][0].key,
                                                                             kv[0][1])):
            by_index = {level.index(start): start for start in starts}
            archived = state is not None and state.hours_bundled(level, period)
            consistent = (level, period) not in eventual or archived and not (
                state is not None and state.settled is not None and state.settled.hours_bundled(level, period))
            legacy = state is None or state.before_bundles(period)
            for subject in [None] if subjects is None else subjects:
                reads.append((level, period, subject, by_index, consistent, archived, legacy))
        return reads

    def _read_slots(self, namespace: str, counter_set: str, reads: list[_SlotRead], add: Any) -> None:
        """The slots of every read, made concurrently and added in a fixed order (so floating-point sums
        come out the same whatever order the reads finish in)."""
        def read(one: _SlotRead) -> list[Any]:
            level, period, subject, by_index, consistent, archived, legacy = one
            first, last = (min(by_index), max(by_index)) if subject else (None, None)
            return list(self.store.read_slots(namespace, level, period, [counter_set], subject, first, last,
                                              consistent, archived, legacy))

        for (_, _, _, by_index, _, _, _), slots in zip(reads, concurrently(read, reads), strict=True):
            for subject, by_slot in slots:
                for index, states in by_slot.items():
                    start = by_index.get(index)
                    if start is None or counter_set not in states:
                        continue
                    for encoded_groups, state in orjson.loads(states[counter_set]).items():
                        add(start, subject, encoded_groups, state)

    def _raw_reads(self, namespace: str, counter_set: str, ranges: list[tuple[int, int]],
                   subjects: Sequence[str] | None) -> list[_RawRead]:
        """Per quarter and subject bucket, two Queries over the minutes wanted: the counter set's own raw
        partition and the shared one (whose entries of other counter sets are dropped): (partition, first,
        last minute, the counter set to keep of a shared partition, None for an own one)."""
        buckets = sorted({subject_bucket(s) for s in subjects} if subjects is not None else range(SUBJECT_BUCKETS))
        horizon = self._now + QUARTER_MS  # nothing is stored for later times (ingestion refuses them)
        minutes_by_quarter: dict[int, list[int]] = {}
        for start, end in ranges:
            first, last = floor_to(start, MINUTE_MS), floor_to(min(end, horizon) - 1, MINUTE_MS)
            if first > last:
                continue
            for quarter in range(floor_to(first, QUARTER_MS), last + 1, QUARTER_MS):
                lo, hi = max(first, quarter), min(last, quarter + QUARTER_MS - MINUTE_MS)
                known = minutes_by_quarter.get(quarter)
                minutes_by_quarter[quarter] = [lo, hi] if known is None else [min(known[0], lo), max(known[1], hi)]
        return [read for quarter, (first, last) in sorted(minutes_by_quarter.items()) for bucket in buckets
                for read in ((raw_partition(namespace, counter_set, quarter, bucket), first, last, None),
                             (shared_raw_partition(namespace, quarter, bucket), first, last, counter_set))]

    def _read_raw(self, aggregation: Aggregation, reads: list[_RawRead], ranges: list[tuple[int, int]],
                  subjects: Sequence[str] | None, add: Any) -> None:
        """Raw rows of the given time ranges, own and shared pages alike, de-duplicated together by event
        identity and cut to the millisecond (read concurrently, added in quarter and bucket order)."""
        wanted_subjects = set(subjects) if subjects is not None else None
        seen: set[tuple[str, str]] = set()

        def read(one: _RawRead) -> list[list[Any]]:
            partition, first, last, shared_of = one
            if shared_of is None:
                return list(self.store.iter_raw(partition, first, last))
            return [row for counter_set, rows in self.store.iter_shared_raw(partition, first, last)
                    if counter_set == shared_of for row in rows]

        for rows in concurrently(read, reads):
            for raw in rows:
                row = Row.from_list(raw)
                if (row.source, row.id) in seen or not any(a <= row.time_ms < b for a, b in ranges):
                    continue
                if wanted_subjects is not None and row.subject not in wanted_subjects:
                    continue
                seen.add((row.source, row.id))
                add(row.time_ms, row.subject, encode_groups(row.groups), fold(aggregation, None, row))

    def _late_quarters(self, namespace: str, counter_set: str, horizons: Horizons | None
                       ) -> tuple[frozenset[int], frozenset[int]]:
        """Quarters with late rows of the counter set (one Query of the namespace's late lists): pending,
        not folded yet (lists from the compactor's `lateThrough` on, however far behind it is), and
        recent, folded again since the settled horizons (lists from their `lateThrough` on)."""
        if horizons is None:
            return frozenset(), frozenset()
        since = min(horizons.late_through, horizons.settled.late_through) if horizons.settled else horizons.late_through
        pending: set[int] = set()
        recent: set[int] = set()
        for listed, (_, cs, minute, _) in self.store.read_late_lists_since(namespace, since):
            if cs == counter_set:
                (pending if listed >= horizons.late_through else recent).add(floor_to(minute, QUARTER_MS))
        return frozenset(pending), frozenset(recent)


# level, period, subject (None: all), wanted slots by index (-> start), strongly consistent
_SlotRead = tuple[SlotLevel, int, str | None, dict[int, int], bool, bool, bool]
# raw partition, first and last minute, the counter set whose entries to keep (a shared partition) or None
_RawRead = tuple[str, int, int, str | None]
