"""CloudEvents as the OpenMeter v1 API takes them: the defaults a client fills in, and their times."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

SPEC_VERSION = "1.0"
REQUIRED_STRINGS = ("id", "source", "type", "subject")


def rfc3339(moment: datetime) -> str:
    """`2024-01-01T00:00:00.001Z`: UTC with milliseconds, the form OpenMeter's SDKs send."""
    if moment.tzinfo is None:
        raise ValueError(f"a CloudEvent time needs a time zone, got the naive datetime {moment.isoformat()}")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_rfc3339() -> str:
    return rfc3339(datetime.now(UTC))


def complete_event(event: Mapping[str, Any], default_source: str) -> dict[str, Any]:
    """A copy of `event` with the CloudEvents defaults filled in: specversion 1.0, the client's source, a
    random id and the current time. The id and time are fixed here, once, so every retry sends the same
    event and the server's idempotency key (source, id) stops a double count."""
    if not isinstance(event, Mapping):
        raise TypeError(f"an event is a mapping (a CloudEvent as a dict), got {type(event).__name__}")
    completed = dict(event)
    completed.setdefault("specversion", SPEC_VERSION)
    completed.setdefault("source", default_source)
    completed.setdefault("id", str(uuid.uuid4()))
    moment = completed.get("time")
    completed["time"] = rfc3339(moment) if isinstance(moment, datetime) else moment or now_rfc3339()
    # Refuse here what the server would refuse for good: the caller sees the mistake at once.
    missing = [name for name in REQUIRED_STRINGS if not isinstance(completed.get(name), str) or not completed[name]]
    if missing:
        raise ValueError(f"event {completed.get('id')!r}: {', '.join(missing)} must be non-empty strings")
    data = completed.get("data")
    if data is not None and not isinstance(data, Mapping):
        raise ValueError(f"event {completed['id']!r}: data must be an object, got {type(data).__name__}")
    return completed
