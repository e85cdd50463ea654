"""Domain errors. They carry what went wrong; meterline.http.problems maps them to HTTP."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class FieldError:
    """One offending field: where it is (`index` inside a batch, if any) and why it was refused."""

    field: str
    reason: str
    index: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field, "reason": self.reason}
        if self.index is not None:
            out["index"] = self.index
        return out


@dataclass
class MeterlineError(Exception):
    """Base of every error a caller can cause. `kind` names the problem type."""

    detail: str
    errors: list[FieldError] = field(default_factory=list)
    kind: str = "invalid-request"
    title: str = "The request is not valid"

    def __str__(self) -> str:
        return self.detail


class InvalidInput(MeterlineError):
    """Malformed or out-of-range input (HTTP 400)."""


@dataclass
class PayloadTooLarge(MeterlineError):
    kind: str = "payload-too-large"
    title: str = "The request body is too large"


@dataclass
class UnsupportedMediaType(MeterlineError):
    kind: str = "unsupported-media-type"
    title: str = "The content type is not supported"


@dataclass
class NotFound(MeterlineError):
    kind: str = "not-found"
    title: str = "Not found"


@dataclass
class Conflict(MeterlineError):
    """A clash with what exists (HTTP 409); `conflicting_id` names it (`extensions.conflictingEntityId`)."""

    kind: str = "conflict"
    title: str = "Conflict"
    conflicting_id: str | None = None


@dataclass
class QuotaExceeded(MeterlineError):
    """A namespace would hold more of something than it may (HTTP 400, naming the limit)."""

    kind: str = "quota-exceeded"
    title: str = "Quota exceeded"


@dataclass
class TooManyRequests(MeterlineError):
    """Too many requests of a kind in a period (HTTP 429); `retry_after_s` says when to try again."""

    kind: str = "too-many-requests"
    title: str = "Too many requests"
    retry_after_s: int = 60


@dataclass
class Unauthenticated(MeterlineError):
    """No credentials, or credentials that name no caller (HTTP 401)."""

    kind: str = "unauthenticated"
    title: str = "Authentication required"


@dataclass
class Forbidden(MeterlineError):
    """A known caller whose scope does not cover the request (HTTP 403)."""

    kind: str = "forbidden"
    title: str = "Forbidden"
