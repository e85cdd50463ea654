"""From an HTTP request to the typed input of a service, in one order: media type (415), size (413),
JSON syntax (400 malformed-json), then the pydantic model of the body or query string (400 naming each
offending field). Services never see bytes, headers or query strings."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, TypeVar

import orjson
from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent
from pydantic import BaseModel

from meterline.domain.events import ACCEPTED_CONTENT_TYPES, JSON, MAX_BODY_BYTES, CloudEvent, validate_events
from meterline.domain.validation import validated
from meterline.errors import FieldError, InvalidInput, PayloadTooLarge, UnsupportedMediaType

# Meters, reports, run requests and query bodies are small.
MAX_OBJECT_BYTES = 64 * 1024

Model = TypeVar("Model", bound=BaseModel)


def bare_media_type(content_type: str | None) -> str:
    """"Application/JSON; charset=utf-8" -> "application/json" ("" when absent)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def media_type(content_type: str | None, accepted: tuple[str, ...] = (JSON,)) -> str:
    """The bare media type of a Content-Type header, or 415 unless it is one of `accepted`."""
    bare = bare_media_type(content_type)
    if bare not in accepted:
        send = accepted[0] if len(accepted) == 1 else f"{', '.join(accepted[:-1])} or {accepted[-1]}"
        reason = f"must be {accepted[0]}" if len(accepted) == 1 else f"must be one of {', '.join(accepted)}"
        raise UnsupportedMediaType(f"Content-Type {bare or 'none'} is not accepted; send {send}",
                                   [FieldError("Content-Type", reason)])
    return bare


def body_bytes(event: BaseProxyEvent) -> bytes:
    if event.is_base64_encoded:
        return base64.b64decode(event.body or "")
    return (event.body or "").encode()


def load_json(body: bytes, max_bytes: int) -> Any:
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"the request body is {len(body)} bytes; the limit is {max_bytes}")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}", kind="malformed-json",
                           title="Malformed JSON") from None


def json_body(event: BaseProxyEvent) -> Any:
    """Any JSON body: 415 unless application/json, 413 beyond 64 KiB, 400 if malformed."""
    media_type(event.headers.get("content-type"))
    return load_json(body_bytes(event), MAX_OBJECT_BYTES)


def json_object(event: BaseProxyEvent, what: str) -> dict[str, Any]:
    """The JSON object of a request body: 415 unless application/json, 413 beyond 64 KiB, 400 otherwise.
    `what` names the expected object in the error ("a meter", "a report", ...)."""
    payload = json_body(event)
    if not isinstance(payload, dict):
        raise InvalidInput(f"the body must be a JSON object ({what})",
                           [FieldError(what.split()[-1], "must be a JSON object")])
    return payload


def body_model(event: BaseProxyEvent, model: type[Model], what: str, *, prefix: str = "",
               unknown: str | None = None, context: Mapping[str, Any] | None = None) -> Model:
    """A JSON object body validated as `model`."""
    return validated(model, json_object(event, what), what=what, root=what.split()[-1], unknown=unknown,
                     context=context, prefix=prefix)


def parse_events(body: bytes, content_type: str | None, received_ms: int) -> list[CloudEvent]:
    """The events of POST /api/v1/events, each with its time in UTC epoch ms (see validate_events)."""
    kind = media_type(content_type, ACCEPTED_CONTENT_TYPES)
    return validate_events(load_json(body, MAX_BODY_BYTES), kind, len(body), received_ms)


def query_model(event: BaseProxyEvent, model: type[Model], *, context: Mapping[str, Any] | None = None) -> Model:
    """The query string validated as `model`: each parameter given once (repeated ones are the model's
    business, see `multi_query`)."""
    return query_params_model(event.query_string_parameters or {}, model, context=context)


def query_params_model(params: Mapping[str, Any], model: type[Model], *,
                       context: Mapping[str, Any] | None = None) -> Model:
    """Query parameters (however collected) validated as `model`; unknown ones named in the 400."""
    return validated(model, params, what="the query", root="query", unknown="is not a supported query parameter",
                     context=context)


def multi_query(event: BaseProxyEvent) -> list[tuple[str, str]]:
    """Every (name, value) of the query string in order, repeated names included."""
    from urllib.parse import parse_qsl

    return parse_qsl(event.raw_event.get("rawQueryString") or "", keep_blank_values=True)
