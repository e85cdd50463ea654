"""The one module that maps domain errors to HTTP: RFC 7807 application/problem+json."""

from __future__ import annotations

from typing import Any

import orjson

from meterline.errors import (
    Conflict,
    FieldError,
    Forbidden,
    InvalidInput,
    MeterlineError,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    TooManyRequests,
    Unauthenticated,
    UnsupportedMediaType,
)

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_BASE = "urn:meterline:problem:"

_STATUS: dict[type[MeterlineError], int] = {
    InvalidInput: 400,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    NotFound: 404,
    Conflict: 409,
    Unauthenticated: 401,
    Forbidden: 403,
    QuotaExceeded: 400,
    TooManyRequests: 429,
}


def status_of(error: MeterlineError) -> int:
    for cls in type(error).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 400


def problem_body(status: int, kind: str, title: str, detail: str,
                 errors: list[FieldError] | None = None, instance: str | None = None,
                 extensions: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": PROBLEM_TYPE_BASE + kind, "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = [e.as_dict() for e in errors]
    if extensions:
        body["extensions"] = extensions
    return body


def problem_for(error: MeterlineError, instance: str | None = None) -> tuple[int, bytes]:
    status = status_of(error)
    extensions = ({"conflictingEntityId": error.conflicting_id}
                  if isinstance(error, Conflict) and error.conflicting_id else None)
    body = problem_body(status, error.kind, error.title, error.detail, error.errors, instance, extensions)
    return status, orjson.dumps(body)
