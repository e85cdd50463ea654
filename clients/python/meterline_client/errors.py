"""What the client raises. Every error is a `MeterlineError`; server answers keep their problem+json."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx


class MeterlineError(Exception):
    """Base class of every error of this package."""


def problem_detail(status: int, problem: Mapping[str, Any] | None, text: str = "") -> str:
    """One line for a log or an exception: the status and what the server said about it."""
    if problem:
        words = [str(problem[key]) for key in ("title", "detail") if problem.get(key)]
        return f"{status} {': '.join(words)}" if words else f"{status} {problem}"
    return f"{status} {text[:500]}".rstrip()


def problem_of(response: httpx.Response) -> dict[str, Any] | None:
    """The RFC 7807 problem (or any JSON object) an error answer carries, if it carries one."""
    if "json" not in response.headers.get("content-type", ""):
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


class MeterlineAPIError(MeterlineError):
    """The server answered a request with an error status (its RFC 7807 body, if any, in `problem`)."""

    def __init__(self, status: int, problem: Mapping[str, Any] | None = None, text: str = "") -> None:
        self.status = status
        self.problem = dict(problem) if problem else None
        super().__init__(problem_detail(status, problem, text))


class MeterlineUnavailableError(MeterlineError):
    """The server could not be reached, or kept answering 429/5xx."""


class EventsRejectedError(MeterlineError):
    """The server refused these events for good (a 4xx other than 429); they are not retried.

    `events` are the refused CloudEvents as they were sent, `status` and `problem` the answer."""

    def __init__(self, events: Sequence[Mapping[str, Any]], status: int,
                 problem: Mapping[str, Any] | None = None, text: str = "") -> None:
        self.events = [dict(event) for event in events]
        self.status = status
        self.problem = dict(problem) if problem else None
        noun = "event" if len(self.events) == 1 else "events"
        super().__init__(f"{len(self.events)} {noun} rejected: {problem_detail(status, problem, text)}")


class FlushTimeoutError(MeterlineError):
    """`flush` ran out of time. The undelivered events stay buffered and are still retried."""

    def __init__(self, pending: int, timeout_seconds: float, last_error: str | None) -> None:
        self.pending = pending
        self.last_error = last_error
        cause = f"; last error: {last_error}" if last_error else ""
        noun = "event" if pending == 1 else "events"
        super().__init__(f"{pending} {noun} not delivered within {timeout_seconds:g} s (still buffered){cause}")
