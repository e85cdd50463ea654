"""Turning pydantic's validation errors into the FieldErrors of a 400 problem: one per offending field,
named by its JSON path as the user sent it, with a reason a user can act on."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError

from meterline.errors import FieldError

_REASONS = {
    "missing": "is required",
    "string_type": "must be a string",
    "string_too_short": "must not be empty",
    "dict_type": "must be a JSON object",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "list_type": "must be a JSON array",
}


def field_errors(exc: ValidationError, *, aliases: Mapping[str, str], what: str, root: str,
                 index: int | None = None) -> list[FieldError]:
    """`aliases` maps python field names to JSON names; `what` names the object in "is not a field of ...";
    `root` names the whole body when an error has no location."""
    errors = []
    for err in exc.errors(include_url=False):
        loc = [str(part) for part in err["loc"]]
        if err["type"] != "extra_forbidden":  # an unknown field is named as it was sent
            loc = [aliases.get(part, part) for part in loc]
        if err["type"] == "group_by_value":
            loc.append(err["ctx"]["key"])
        field = ".".join(loc) or root
        reason = _REASONS.get(err["type"])
        if err["type"] == "extra_forbidden":
            reason = f"is not a field of {what}"
        elif reason is None:
            if err["type"] == "string_pattern_mismatch":
                reason = f"must match {err['ctx']['pattern']}"
            elif err["type"] == "string_too_long":
                reason = f"must be at most {err['ctx']['max_length']} characters long"
            else:
                msg = err["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
                reason = msg[:1].lower() + msg[1:]
        errors.append(FieldError(field, reason, index))
    return errors
