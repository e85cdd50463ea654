"""Meter definitions (OpenMeter's `meters:` shape), their validation, and reading values from events.

JSONPath expressions are compiled once per meter. Simple dotted paths (`$.a.b`) are read with plain
dict lookups; anything else goes through jsonpath-ng, imported only when a meter needs it.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from meterline.errors import FieldError, InvalidInput

SLUG_PATTERN = r"^[a-z0-9]+(?:_[a-z0-9]+)*$"
GROUP_KEY_PATTERN = re.compile(r"^[a-zA-Z_][0-9a-zA-Z_]*$")
_SIMPLE_PATH = re.compile(r"^\$(?:\.[A-Za-z_][A-Za-z0-9_]*)+$")
_NUMERIC = re.compile(r"^\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*$")


class Aggregation(StrEnum):
    SUM = "SUM"
    COUNT = "COUNT"
    UNIQUE_COUNT = "UNIQUE_COUNT"
    AVG = "AVG"
    MIN = "MIN"
    MAX = "MAX"
    LATEST = "LATEST"


class WindowSize(StrEnum):
    MINUTE = "MINUTE"
    HOUR = "HOUR"
    DAY = "DAY"


class Meter(BaseModel):
    """A meter as a user declares it."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    slug: str = Field(pattern=SLUG_PATTERN, max_length=64)
    name: str | None = None
    description: str | None = None
    event_type: str = Field(alias="eventType", min_length=1)
    aggregation: Aggregation
    value_property: str | None = Field(default=None, alias="valueProperty")
    group_by: dict[str, str] = Field(default_factory=dict, alias="groupBy")
    event_from: str | None = Field(default=None, alias="eventFrom")
    window_size: WindowSize | None = Field(default=None, alias="windowSize")  # legacy, echoed only
    metadata: dict[str, str] | None = None

    @field_validator("group_by")
    @classmethod
    def _group_by(cls, group_by: dict[str, str]) -> dict[str, str]:
        for key, path in group_by.items():
            if not GROUP_KEY_PATTERN.match(key):
                raise ValueError(f"key {key!r} must match {GROUP_KEY_PATTERN.pattern}")
            if not isinstance(path, str) or not path.startswith("$"):
                raise ValueError(f"{key}: {path!r} must be a JSONPath starting with $")
            _compile(path)
        return group_by

    @model_validator(mode="after")
    def _value_property(self) -> Meter:
        if self.aggregation is Aggregation.COUNT:
            if self.value_property is not None:
                raise ValueError("valueProperty must be absent for COUNT")
        else:
            if not self.value_property or not self.value_property.startswith("$"):
                raise ValueError(f"valueProperty is required for {self.aggregation} and must start with $")
            _compile(self.value_property)
            if self.value_property in self.group_by.values():
                raise ValueError("groupBy values must differ from valueProperty")
        return self


class CompiledMeter:
    """A meter with its JSONPath expressions compiled, ready to read events."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self._value = _compile(meter.value_property) if meter.value_property else None
        self._groups = {key: _compile(path) for key, path in meter.group_by.items()}

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
    if isinstance(raw, (int, float)):
        value = float(raw)
    elif isinstance(raw, str) and _NUMERIC.match(raw):
        value = float(raw)
    else:
        return None
    return value if math.isfinite(value) else None


Getter = Callable[[dict[str, Any]], tuple[bool, Any]]


def _compile(path: str) -> Getter:
    if _SIMPLE_PATH.match(path):
        keys = path[2:].split(".")

        def simple(data: dict[str, Any]) -> tuple[bool, Any]:
            node: Any = data
            for key in keys:
                if not isinstance(node, dict) or key not in node:
                    return False, None
                node = node[key]
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
    for index, raw in enumerate(document.get("meters") or []):
        try:
            meters.append(Meter.model_validate(raw))
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                field = ".".join(str(part) for part in err["loc"]) or "meter"
                errors.append(FieldError(field, err["msg"].removeprefix("Value error, "), index))
    seen: set[str] = set()
    for index, meter in enumerate(meters):
        if meter.slug in seen:
            errors.append(FieldError("slug", f"duplicate slug {meter.slug}", index))
        seen.add(meter.slug)
    if errors:
        raise InvalidInput(f"{source}: invalid meter definitions: "
                           + "; ".join(f"meter {e.index}: {e.field} {e.reason}" for e in errors), errors)
    return meters


def load_meters_file(path: str | Path) -> list[Meter]:
    import yaml

    with open(path, encoding="utf-8") as handle:
        return parse_meters(yaml.safe_load(handle) or {}, source=str(path))
