"""The checks every JSON request body goes through, in one order: media type (415), size (413), JSON
syntax (400 malformed-json), and for object bodies, that it is an object (400)."""

from __future__ import annotations

from typing import Any

import orjson

from meterline.errors import FieldError, InvalidInput, PayloadTooLarge, UnsupportedMediaType

JSON = "application/json"
# Meters, reports, run requests and query bodies are small.
MAX_OBJECT_BYTES = 64 * 1024


def bare_media_type(content_type: str | None) -> str:
    """"Application/JSON; charset=utf-8" -> "application/json" ("" when absent)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def load_json(body: bytes, max_bytes: int) -> Any:
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"the request body is {len(body)} bytes; the limit is {max_bytes}")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}", kind="malformed-json",
                           title="Malformed JSON") from None


def json_object(body: bytes, content_type: str | None, what: str = "a meter") -> dict[str, Any]:
    """The JSON object of a request body: 415 unless application/json, 413 beyond 64 KiB, 400 otherwise.
    `what` names the expected object in the error ("a meter", "a report", ...)."""
    bare = bare_media_type(content_type)
    if bare != JSON:
        raise UnsupportedMediaType(f"Content-Type {bare or 'none'} is not accepted; send {JSON}",
                                   [FieldError("Content-Type", f"must be {JSON}")])
    payload = load_json(body, MAX_OBJECT_BYTES)
    if not isinstance(payload, dict):
        raise InvalidInput(f"the body must be a JSON object ({what})",
                           [FieldError(what.split()[-1], "must be a JSON object")])
    return payload
