"""CloudEvents as Meterline accepts them: parsing, validation and the limits of one request.

A request is validated as a whole before anything is stored: one bad event refuses the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from meterline.domain.timeutil import format_ms, parse_rfc3339, to_epoch_ms
from meterline.domain.validation import field_errors
from meterline.errors import FieldError, InvalidInput, PayloadTooLarge

MAX_BODY_BYTES = 1024 * 1024
MAX_EVENTS_PER_REQUEST = 1000
MAX_EVENT_BYTES = 64 * 1024
# id and source form the idempotency key (a DynamoDB key is at most 2,048 bytes); subject and
# type are keys of counters and indexes.
MAX_ATTRIBUTE_BYTES = 256
# How far an event's time may be ahead of its receipt (clock skew). Queries look for counting rows up to
# a quarter-hour after their own `now`, so anything accepted here is found; see docs/decisions.md.
MAX_FUTURE_MS = 5 * 60_000
# `data` is stored and meters read paths into it; deeper nesting serves no meter and costs every reader.
MAX_DATA_DEPTH = 32

SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
JSON = "application/json"
ACCEPTED_CONTENT_TYPES = (SINGLE, BATCH, JSON)

NonEmpty = Annotated[StrictStr, Field(min_length=1)]
# Parsed once, during validation, into UTC epoch milliseconds.
if TYPE_CHECKING:
    EpochMs = int  # what validation makes of it
else:
    EpochMs = Annotated[StrictStr, AfterValidator(lambda value: to_epoch_ms(parse_rfc3339(value)))]


class CloudEvent(BaseModel):
    """One usage event (CloudEvents 1.0, structured mode). Unknown extension attributes are ignored."""

    model_config = ConfigDict(extra="ignore")

    id: NonEmpty
    source: NonEmpty
    specversion: Literal["1.0"]
    type: NonEmpty
    subject: NonEmpty
    time: EpochMs | None = None
    datacontenttype: Literal["application/json"] | None = None
    dataschema: StrictStr | None = None
    data: dict[str, Any] | None = None

    @field_validator("data")
    @classmethod
    def _shallow(cls, data: dict[str, Any] | None) -> dict[str, Any] | None:
        if data is not None and _deeper_than(data, MAX_DATA_DEPTH):
            raise ValueError(f"must be nested at most {MAX_DATA_DEPTH} levels deep")
        return data

    @field_validator("id", "source", "type", "subject")
    @classmethod
    def _bounded(cls, value: str) -> str:
        if len(value) > MAX_ATTRIBUTE_BYTES // 4 and len(value.encode()) > MAX_ATTRIBUTE_BYTES:
            raise ValueError(f"must be at most {MAX_ATTRIBUTE_BYTES} bytes long")
        return value


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether objects and arrays nest more than `limit` levels (iterative: no recursion limit)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                pending.append((child, depth + 1))
    return False


def _subject_key(value: str) -> str:
    if len(value.encode()) > MAX_ATTRIBUTE_BYTES:
        raise ValueError(f"must be at most {MAX_ATTRIBUTE_BYTES} bytes long (as an event's subject)")
    return value


# A subject's key wherever one is named (subjects, portal tokens): what an event's `subject` may be.
SubjectKey = Annotated[str, Field(min_length=1), AfterValidator(_subject_key)]

_BATCH_ADAPTER = TypeAdapter(list[CloudEvent])


def validate_events(payload: Any, kind: str, body_size: int, received_ms: int) -> list[CloudEvent]:
    """Validate the decoded body of POST /api/v1/events, sent as media type `kind` in `body_size` bytes.
    Raises a MeterlineError on any problem.

    Every returned event has `time` resolved to UTC epoch milliseconds (the time of receipt if absent).
    Any past time is taken: an event too old for its quarter to be re-folded from raw rows is counted by a
    recount of its hour (meterline.processing.stream_batch.request_recounts).
    """
    is_batch = isinstance(payload, list)
    if kind == SINGLE and not isinstance(payload, dict):
        raise InvalidInput(f"{SINGLE} takes one event as a JSON object; send arrays as {BATCH}")
    if kind == BATCH and not is_batch:
        raise InvalidInput(f"{BATCH} takes a JSON array of events")
    if not is_batch and not isinstance(payload, dict):
        raise InvalidInput("the body must be a JSON object (one event) or an array of events")
    raw_events: list[Any] = payload if is_batch else [payload]
    if not raw_events:
        raise InvalidInput("the batch is empty; send at least one event")
    if len(raw_events) > MAX_EVENTS_PER_REQUEST:
        raise PayloadTooLarge(
            f"the batch holds {len(raw_events)} events; the limit is {MAX_EVENTS_PER_REQUEST} per request"
        )
    if body_size > MAX_EVENT_BYTES:  # only then can a single event exceed the per-event limit
        _check_event_sizes(raw_events, is_batch)

    try:
        events = _BATCH_ADAPTER.validate_python(raw_events)
    except ValidationError as exc:
        errors = field_errors(exc, what="an event", root="", reasons=_REASONS, indexed=True)
        if not is_batch:
            for error in errors:
                error.index = None
        raise _invalid_events(errors) from None

    future = []
    for index, ev in enumerate(events):
        if ev.time is None:
            ev.time = received_ms
        elif ev.time > received_ms + MAX_FUTURE_MS:
            future.append(FieldError("time", f"must be at most {MAX_FUTURE_MS // 60_000} minutes after the time "
                                     f"of receipt ({format_ms(received_ms)}); it is {format_ms(ev.time)}",
                                     index if is_batch else None))
    if future:
        raise _invalid_events(future)
    return events


def _invalid_events(errors: list[FieldError]) -> InvalidInput:
    bad = len({e.index for e in errors})
    return InvalidInput(
        f"{bad} invalid event{'s' if bad > 1 else ''}, nothing was stored: "
        + "; ".join(_describe(e) for e in errors[:10]),
        errors,
        kind="invalid-events",
        title="Invalid events",
    )


def _check_event_sizes(raw_events: list[Any], is_batch: bool) -> None:
    errors = []
    for index, raw in enumerate(raw_events):
        size = len(orjson.dumps(raw))
        if size > MAX_EVENT_BYTES:
            errors.append(FieldError("", f"the event is {size} bytes; the limit is {MAX_EVENT_BYTES}",
                                     index if is_batch else None))
    if errors:
        raise PayloadTooLarge(
            f"{len(errors)} event(s) exceed the limit of {MAX_EVENT_BYTES} bytes per event", errors
        )


_REASONS = {
    "literal_error": None,  # pydantic's own message names the allowed values
    "dict_type": "must be a JSON object or null",
    "model_type": "must be a JSON object (a CloudEvent)",
}


def _describe(err: FieldError) -> str:
    where = f"event {err.index}: " if err.index is not None else ""
    return f"{where}{err.field or 'event'} {err.reason}"


@dataclass(slots=True)
class StoredEvent:
    """An event as it is stored: the idempotency key, its UTC time in ms and when it was ingested."""

    namespace: str
    id: str
    source: str
    type: str
    subject: str
    time_ms: int
    ingested_ms: int
    data: dict[str, Any] | None
    dataschema: str | None = None

    def as_cloudevent(self) -> dict[str, Any]:
        """The event in CloudEvents JSON form, as the API shows it."""
        event: dict[str, Any] = {
            "id": self.id,
            "source": self.source,
            "specversion": "1.0",
            "type": self.type,
            "subject": self.subject,
            "time": format_ms(self.time_ms),
        }
        if self.dataschema is not None:
            event["dataschema"] = self.dataschema
        if self.data is not None:
            event["data"] = self.data
        return event
