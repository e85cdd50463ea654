"""The one place where pydantic's validation errors become the `{field, reason}` pairs of a 400 problem
(one per offending field, named by its JSON path as the user sent it, with a reason a user can act on),
and the input types that query strings and bodies share (bounded integers, RFC 3339 times)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError

from meterline.domain.timeutil import parse_rfc3339, to_epoch_ms
from meterline.errors import FieldError, InvalidInput

_REASONS = {
    "missing": "is required",
    "string_type": "must be a string",
    "string_too_short": "must not be empty",
    "dict_type": "must be a JSON object",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "list_type": "must be a JSON array",
}


def field_errors(exc: ValidationError, *, what: str, root: str, aliases: Mapping[str, str] | None = None,
                 reasons: Mapping[str, str | None] | None = None, unknown: str | None = None,
                 indexed: bool = False, index: int | None = None) -> list[FieldError]:
    """`what` names the object in "is not a field of ..." (or `unknown` replaces that reason); `root`
    names the whole input when an error has no location; `aliases` maps python field names to JSON names;
    `reasons` overrides the reason of an error type (None: pydantic's own message). With `indexed`, the
    first part of each location is the position of the item in a batch and becomes the error's index."""
    errors = []
    for err in exc.errors(include_url=False):
        loc: list[Any] = list(err["loc"])
        item = index
        if indexed and loc and isinstance(loc[0], int):
            item = loc.pop(0)
        parts = [str(part) for part in loc]
        if err["type"] != "extra_forbidden":  # an unknown field is named as it was sent
            parts = [(aliases or {}).get(part, part) for part in parts]
        if err["type"] == "group_by_value":
            parts.append(err["ctx"]["key"])
        field = ".".join(parts) or root
        errors.append(FieldError(field, _reason(err, what, reasons or {}, unknown), item))
    return errors


def _reason(err: Any, what: str, overrides: Mapping[str, str | None], unknown: str | None) -> str:
    kind = err["type"]
    if kind in overrides:
        reason = overrides[kind]
        if reason is not None:
            return reason
    elif kind == "extra_forbidden":
        return unknown or f"is not a field of {what}"
    elif kind in _REASONS:
        return _REASONS[kind]
    elif kind == "string_pattern_mismatch":
        return f"must match {err['ctx']['pattern']}"
    elif kind == "string_too_long":
        return f"must be at most {err['ctx']['max_length']} characters long"
    msg = err["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
    return msg[:1].lower() + msg[1:]


def invalid(errors: Sequence[FieldError], prefix: str = "") -> InvalidInput:
    """A 400 naming every offending field, its detail the fields and reasons in one line."""
    return InvalidInput(prefix + "; ".join(f"{e.field} {e.reason}" for e in errors), list(errors))


Model = TypeVar("Model", bound=BaseModel)


def validated(model: type[Model], raw: Any, *, what: str, root: str, unknown: str | None = None,
              context: Mapping[str, Any] | None = None, prefix: str = "") -> Model:
    """`raw` as a `model`, or InvalidInput naming every offending field."""
    try:
        return model.model_validate(raw, context=dict(context or {}))
    except ValidationError as exc:
        errors = field_errors(exc, what=what, root=root, unknown=unknown,
                              aliases={name: info.alias or name for name, info in model.model_fields.items()})
        raise invalid(errors, prefix) from None


class QueryParameters(BaseModel):
    """A query string (or a query's JSON body): unknown parameters are refused by their own name."""

    model_config = ConfigDict(extra="forbid")


def bounded_integer(low: int, high: int) -> Callable[[Any], int]:
    """An integer from `low` to `high`, given as digits (a query string) or a JSON integer."""
    def check(value: Any) -> int:
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise PydanticCustomError("bounded_integer", "must be an integer from {low} to {high}",
                                      {"low": low, "high": high})
        return value
    return check


def _epoch_ms(value: Any) -> int:
    if not isinstance(value, str):
        raise PydanticCustomError("date_time", "must be an RFC 3339 date-time string")
    try:
        return to_epoch_ms(parse_rfc3339(value))
    except ValueError as exc:
        raise PydanticCustomError("date_time", str(exc)) from None


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise PydanticCustomError("boolean", "must be true or false")


if TYPE_CHECKING:
    EpochMs = int
    QueryBool = bool
else:
    # An RFC 3339 date-time (a Z or numeric offset), as UTC epoch milliseconds.
    EpochMs = Annotated[int, BeforeValidator(_epoch_ms)]
    QueryBool = Annotated[bool, BeforeValidator(_boolean)]
