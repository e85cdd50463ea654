"""Meters: their definition (OpenMeter's `meters:` shape, in YAML or through the API), validation,
the rules of what an update may change, and reading values from events.

A `Meter` is what a user declares plus, once stored, the read-only fields Meterline sets: `id` (a
ULID), `createdAt`, `updatedAt` and the `backfill` status. JSON field names are OpenMeter's (camelCase).

JSONPath expressions are compiled once per meter. Simple dotted paths (`$.a.b`) are read with plain
dict lookups; anything else goes through jsonpath-ng, imported only when a meter needs it.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from meterline.domain.timeutil import format_ms, parse_rfc3339, to_epoch_ms
from meterline.domain.validation import field_errors
from meterline.errors import FieldError, InvalidInput

SLUG_PATTERN = r"^[a-z0-9]+(?:_[a-z0-9]+)*$"
MAX_SLUG_LENGTH = 64
GROUP_KEY_PATTERN = re.compile(r"^[a-zA-Z_][0-9a-zA-Z_]*$")
# A ULID: 26 characters of Crockford base32, the first at most 7 (128 bits).
ULID_PATTERN = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$", re.IGNORECASE)
_SLUG = re.compile(SLUG_PATTERN)
# One member step of a path: .name, ["any name"] or ['any name'], or [index].
_STEP = re.compile(r"""\.([A-Za-z_][A-Za-z0-9_]*)|\["((?:[^"\\]|\\.)*)"\]|\['((?:[^'\\]|\\.)*)'\]|\[(\d{1,6})\]""")
MAX_GROUP_BY_KEYS = 20
# What a new definition's paths may be; stored meters keep whatever JSONPath they were made with.
SIMPLE_PATHS = "simple member paths such as $.a.b, $.a[\"b c\"] or $.a[0] (no wildcards, filters or ..)"
_NUMERIC = re.compile(r"^\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*$")

# Set by Meterline, never by a request body.
READ_ONLY_FIELDS = ("id", "createdAt", "updatedAt", "backfill")
# Fixed at creation: a PUT may repeat them unchanged, never change them.
IMMUTABLE_FIELDS = ("slug", "eventType", "aggregation", "valueProperty", "eventFrom", "windowSize")
# What a PUT may change (groupBy only by adding keys).
UPDATABLE_FIELDS = ("name", "description", "metadata", "groupBy")


class Aggregation(StrEnum):
    SUM = "SUM"
    COUNT = "COUNT"
    UNIQUE_COUNT = "UNIQUE_COUNT"
    AVG = "AVG"
    MIN = "MIN"
    MAX = "MAX"
    LATEST = "LATEST"


class BackfillState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


def _normalised_time(value: Any) -> str | None:
    """An RFC 3339 date-time as UTC with milliseconds (ValueError with a reason otherwise)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 date-time string")
    return format_ms(to_epoch_ms(parse_rfc3339(value)))


class BackfillStatus(BaseModel):
    """Progress of rebuilding a meter's counters from the events table (read-only in the API)."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    status: BackfillState
    started_at: str | None = Field(default=None, alias="startedAt")
    completed_at: str | None = Field(default=None, alias="completedAt")
    events_scanned: int | None = Field(default=None, alias="eventsScanned", ge=0)
    error: str | None = None

    @field_validator("started_at", "completed_at", mode="before")
    @classmethod
    def _times(cls, value: Any) -> str | None:
        return _normalised_time(value)


class Meter(BaseModel):
    """A meter as a user declares it, plus the read-only fields Meterline sets once it is stored.

    Field order matters: validators of later fields read earlier ones (valueProperty reads aggregation,
    groupBy reads valueProperty).
    """

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    slug: str = Field(pattern=SLUG_PATTERN, max_length=MAX_SLUG_LENGTH)
    name: str | None = Field(default=None, min_length=1)
    description: str | None = Field(default=None, min_length=1)
    event_type: str = Field(alias="eventType", min_length=1)
    aggregation: Aggregation
    value_property: str | None = Field(default=None, alias="valueProperty", validate_default=True)
    group_by: dict[str, str] = Field(default_factory=dict, alias="groupBy")
    event_from: str | None = Field(default=None, alias="eventFrom")
    # OpenMeter's legacy meter windowSize (MONTH was never one), echoed only; queries take windows.WindowSize.
    window_size: Literal["MINUTE", "HOUR", "DAY"] | None = Field(default=None, alias="windowSize")
    metadata: dict[str, str] | None = None
    # Read-only: set by Meterline when the meter is stored.
    id: str | None = Field(default=None, pattern=ULID_PATTERN.pattern)
    created_at: str | None = Field(default=None, alias="createdAt")
    updated_at: str | None = Field(default=None, alias="updatedAt")
    backfill: BackfillStatus | None = None

    @field_validator("value_property")
    @classmethod
    def _value_property(cls, value: str | None, info: ValidationInfo) -> str | None:
        aggregation = info.data.get("aggregation")
        if aggregation is None:  # the aggregation itself is invalid and reported on its own
            return value
        if aggregation is Aggregation.COUNT:
            if value is not None:
                raise ValueError("must be absent for COUNT (it counts events)")
            return None
        if not value:
            raise ValueError(f"is required for {aggregation} (a JSONPath into data starting with $)")
        if not value.startswith("$"):
            raise ValueError(f"{value!r} must start with $ (a JSONPath into data)")
        if _is_definition(info) and member_steps(value) is None:
            raise ValueError(f"{value!r} must be one of the {SIMPLE_PATHS}")
        _compile(value)
        return value

    @field_validator("group_by")
    @classmethod
    def _group_by(cls, group_by: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        value_property = info.data.get("value_property")
        if len(group_by) > MAX_GROUP_BY_KEYS:
            raise ValueError(f"has {len(group_by)} keys; a meter may have at most {MAX_GROUP_BY_KEYS}")
        for key, path in group_by.items():
            if not GROUP_KEY_PATTERN.match(key):
                raise ValueError(f"key {key!r} must match {GROUP_KEY_PATTERN.pattern}")
            if not path.startswith("$"):
                raise _group_by_error(key, f"{path!r} must be a JSONPath starting with $")
            if _is_definition(info) and member_steps(path) is None:
                raise _group_by_error(key, f"{path!r} must be one of the {SIMPLE_PATHS}")
            try:
                _compile(path)
            except ValueError as exc:
                raise _group_by_error(key, str(exc)) from None
            if value_property is not None and path == value_property:
                raise _group_by_error(key, f"{path!r} must differ from valueProperty")
        return group_by

    @field_validator("event_from", "created_at", "updated_at", mode="before")
    @classmethod
    def _times(cls, value: Any) -> str | None:
        return _normalised_time(value)

    def to_api(self) -> dict[str, Any]:
        """The meter as the API shows it (and as it is stored): camelCase, absent fields omitted."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def _group_by_error(key: str, reason: str) -> PydanticCustomError:
    """An error about one groupBy entry; its field is reported as groupBy.<key>."""
    return PydanticCustomError("group_by_value", "{reason}", {"key": key, "reason": reason})


_ALIASES = {name: info.alias or name for name, info in Meter.model_fields.items()}
_ALIASES.update({name: info.alias or name for name, info in BackfillStatus.model_fields.items()})

def _field_errors(exc: ValidationError, index: int | None = None) -> list[FieldError]:
    return field_errors(exc, aliases=_ALIASES, what="a meter", root="meter", index=index)


def describe(errors: Sequence[FieldError]) -> str:
    return "; ".join(f"{'meter ' + str(e.index) + ': ' if e.index is not None else ''}{e.field} {e.reason}"
                     for e in errors)


def _validated(raw: Any, index: int | None = None) -> tuple[Meter | None, list[FieldError]]:
    """Validate a user's meter definition: by OpenMeter's JSON names only, read-only fields refused."""
    errors = []
    if isinstance(raw, Mapping):
        errors = [FieldError(key, "is read-only; Meterline sets it", index) for key in READ_ONLY_FIELDS if key in raw]
        raw = {key: value for key, value in raw.items() if key not in READ_ONLY_FIELDS}
    try:
        meter = Meter.model_validate(raw, by_alias=True, by_name=False, context=DEFINITION)
    except ValidationError as exc:
        return None, errors + _field_errors(exc, index)
    return (None if errors else meter), errors


def meter_definition(raw: Any) -> Meter:
    """A meter from a create request's body; InvalidInput naming every offending field."""
    meter, errors = _validated(raw)
    if meter is None:
        raise InvalidInput(f"invalid meter: {describe(errors)}", errors)
    return meter


def new_meter(definition: Meter, meter_id: str, now_ms: int) -> Meter:
    """The stored form of a new meter: its id, timestamps, a name (the slug unless given, as OpenMeter
    does) and a pending backfill, since a new meter must see the events stored before it."""
    now = format_ms(now_ms)
    return definition.model_copy(update={
        "id": meter_id,
        "name": definition.name or definition.slug,
        "created_at": now,
        "updated_at": now,
        "backfill": BackfillStatus(status=BackfillState.PENDING),
    })


def updated_meter(current: Meter, raw: Any, now_ms: int) -> Meter:
    """Apply a PUT body to a stored meter.

    A PUT replaces name (the slug when absent, as OpenMeter does), description and metadata (cleared
    when absent), and may add groupBy keys (an absent groupBy keeps the current ones). Existing groupBy
    keys cannot be changed or removed; slug, eventType, aggregation, valueProperty, eventFrom and
    windowSize may be repeated unchanged but not changed; read-only fields are refused. Adding groupBy
    keys resets the backfill to pending. Raises InvalidInput naming each offending field.
    """
    if not isinstance(raw, Mapping):
        raise InvalidInput("the body must be a JSON object", [FieldError("meter", "must be a JSON object")])
    shown = current.to_api()
    errors: list[FieldError] = []
    for key, value in raw.items():
        if key in READ_ONLY_FIELDS:
            errors.append(FieldError(key, "is read-only; Meterline sets it"))
        elif key in IMMUTABLE_FIELDS:
            if not _same(key, value, shown.get(key)):
                errors.append(FieldError(key, f"cannot be changed (it is {shown.get(key)!r}); create a new meter"))
        elif key not in UPDATABLE_FIELDS:
            errors.append(FieldError(key, "is not a field of a meter"))
    group_by = raw.get("groupBy")
    if group_by is None:
        group_by = current.group_by
    elif isinstance(group_by, Mapping):
        for key, path in current.group_by.items():
            if key not in group_by:
                errors.append(FieldError(f"groupBy.{key}", "cannot be removed; groupBy keys can only be added"))
            elif group_by[key] != path:
                errors.append(FieldError(f"groupBy.{key}", f"cannot be changed (it is {path!r})"))
    if errors:
        raise InvalidInput(f"invalid meter update: {describe(errors)}", errors)

    data = {key: value for key, value in shown.items() if key not in ("name", "description", "metadata")}
    data.update({key: raw[key] for key in ("name", "description", "metadata") if raw.get(key) is not None})
    data.setdefault("name", current.slug)
    data["groupBy"] = group_by
    data["updatedAt"] = format_ms(now_ms)
    if isinstance(group_by, Mapping) and set(group_by) - set(current.group_by):
        data["backfill"] = {"status": BackfillState.PENDING.value}
    try:
        return Meter.model_validate(data, by_alias=True, by_name=False, context=DEFINITION)
    except ValidationError as exc:
        errors = _field_errors(exc)
        raise InvalidInput(f"invalid meter update: {describe(errors)}", errors) from None


def _same(key: str, given: Any, current: Any) -> bool:
    if key == "eventFrom" and isinstance(given, str) and current is not None:
        try:
            return _normalised_time(given) == current
        except ValueError:
            return False
    return given == current


def is_ulid(value: str) -> bool:
    return bool(ULID_PATTERN.match(value))


def is_slug(value: str) -> bool:
    return len(value) <= MAX_SLUG_LENGTH and bool(_SLUG.match(value))


class CompiledMeter:
    """A meter with its JSONPath expressions compiled, ready to read events."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self._value = _compile(meter.value_property) if meter.value_property else None
        self._groups = {key: _compile(path) for key, path in meter.group_by.items()}

    @property
    def value_getter(self) -> Getter | None:
        return self._value

    @property
    def group_getters(self) -> dict[str, Getter]:
        return self._groups

    def value_problem(self, data: dict[str, Any] | None) -> str | None:
        """Why this event cannot be counted by this meter, or None if it can."""
        if self._value is None:
            return None
        found, raw = self._value(data or {})
        where = f"meter {self.meter.slug}: valueProperty {self.meter.value_property}"
        if not found or raw is None:
            return f"{where} is missing or null"
        if self.meter.aggregation is Aggregation.UNIQUE_COUNT:
            if isinstance(raw, (dict, list)):
                return f"{where} must be a scalar, got {type(raw).__name__}"
            return None
        if parse_number(raw) is None:
            return f"{where} is not a number: {str(raw)[:64]!r}"
        return None


def parse_number(raw: Any) -> float | None:
    """A JSON number or numeric string as a finite float; None for anything else (NaN, Inf, bool)."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, (int, float)) or isinstance(raw, str) and _NUMERIC.match(raw):
        value = float(raw)
    else:
        return None
    return value if math.isfinite(value) else None


Getter = Callable[[dict[str, Any]], tuple[bool, Any]]


# Validation context of a definition a user sends (a request body or a meters file), as opposed to a
# stored meter being read back.
DEFINITION = {"definition": True}


def _is_definition(info: ValidationInfo) -> bool:
    return bool((info.context or {}).get("definition"))


def member_steps(path: str) -> list[str | int] | None:
    """The steps of a simple member path (`$.a.b`, `$.a["b c"]`, `$.a[0]`), or None for anything else."""
    if not path.startswith("$") or len(path) < 2:
        return None
    steps: list[str | int] = []
    position = 1
    while position < len(path):
        match = _STEP.match(path, position)
        if match is None:
            return None
        name, double, single, index = match.groups()
        if index is not None:
            steps.append(int(index))
        else:
            quoted = double if double is not None else single
            steps.append(name if quoted is None else re.sub(r"\\(.)", r"\1", quoted))
        position = match.end()
    return steps


def _compile(path: str) -> Getter:
    steps = member_steps(path)
    if steps is not None and all(isinstance(step, str) for step in steps):
        names = [str(step) for step in steps]

        def members(data: dict[str, Any]) -> tuple[bool, Any]:  # the common case, on every event
            node: Any = data
            for name in names:
                if not isinstance(node, dict) or name not in node:
                    return False, None
                node = node[name]
            return True, node

        return members
    if steps is not None:
        def simple(data: dict[str, Any]) -> tuple[bool, Any]:
            node: Any = data
            for step in steps:
                if isinstance(step, int):
                    if not isinstance(node, list) or step >= len(node):
                        return False, None
                elif not isinstance(node, dict) or step not in node:
                    return False, None
                node = node[step]
            return True, node

        return simple
    from jsonpath_ng.ext import parse as jsonpath_parse  # only for non-trivial paths

    try:
        expression = jsonpath_parse(path)
    except Exception as exc:  # jsonpath-ng raises several exception types
        raise ValueError(f"{path!r} is not a valid JSONPath: {exc}") from None

    def general(data: dict[str, Any]) -> tuple[bool, Any]:
        matches = expression.find(data)
        return (True, matches[0].value) if matches else (False, None)

    return general


class MeterCatalog:
    """The meters in force, indexed by event type."""

    def __init__(self, meters: Iterable[Meter] = ()) -> None:
        self.meters = list(meters)
        self._by_type: dict[str, list[CompiledMeter]] = defaultdict(list)
        for meter in self.meters:
            self._by_type[meter.event_type].append(CompiledMeter(meter))

    def for_event_type(self, event_type: str) -> Sequence[CompiledMeter]:
        return self._by_type.get(event_type, ())

    def validation_error(self, event_type: str, data: dict[str, Any] | None) -> str | None:
        """Why an event will not be counted (no meter, or a value that does not parse), or None."""
        meters = self.for_event_type(event_type)
        if not meters:
            return f"no meter found for event type {event_type}"
        problems = [p for p in (m.value_problem(data) for m in meters) if p]
        return "; ".join(problems) or None


def parse_meters(document: Any, source: str = "meters") -> list[Meter]:
    """Validate a `{"meters": [...]}` document; errors name the meter index and field."""
    if not isinstance(document, dict) or not isinstance(document.get("meters", []), list):
        raise InvalidInput(f"{source}: expected a mapping with a `meters:` list")
    meters: list[Meter] = []
    errors: list[FieldError] = []
    seen: set[str] = set()
    for index, raw in enumerate(document.get("meters") or []):
        meter, problems = _validated(raw, index)
        errors.extend(problems)
        if meter is None:
            continue
        if meter.slug in seen:
            errors.append(FieldError("slug", f"duplicate slug {meter.slug}", index))
        seen.add(meter.slug)
        meters.append(meter)
    if errors:
        raise InvalidInput(f"{source}: invalid meter definitions: {describe(errors)}", errors)
    return meters


def load_meters_file(path: str | Path) -> list[Meter]:
    import yaml

    with open(path, encoding="utf-8") as handle:
        return parse_meters(yaml.safe_load(handle) or {}, source=str(path))
