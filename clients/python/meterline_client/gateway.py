"""API metering and entitlement checks for a Powertools API (`APIGatewayHttpResolver` or
`APIGatewayRestResolver`), in the manner of OpenMeter's gateway policy.

    app.use(middlewares=[MeteringPolicy(client=ml, meter={"type": "api-request", "data": {"count": 1}},
                                        required_entitlements=["api-request"])])

Before the route: the subject is read from the request's authorizer context (401 without one), and every
required feature is checked with `has_access` (`blocked_status`, 403 by default, if any lacks access). After
the route: if its status matches `meter_on_status_codes`, one event per meter, id `{requestId}-{type}` (so a
retried invocation of the same request counts once), flushed before the Lambda returns. `set_meters` changes
the meters of one request from inside its route.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, NotRequired, TypedDict, cast

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import ApiGatewayResolver
from aws_lambda_powertools.event_handler.middlewares import BaseMiddlewareHandler, NextMiddleware

from meterline_client.client import Meterline
from meterline_client.errors import MeterlineError
from meterline_client.events import SPEC_VERSION, now_rfc3339, rfc3339

logger = logging.getLogger("meterline_client")

PROBLEM_JSON = "application/problem+json"
METERS_CONTEXT_KEY = "meterline_meters"  # where set_meters leaves a request's meters in the resolver's context


class Meter(TypedDict):
    """One event to send per metered request. `id` and `subject` override the request's."""

    type: str
    data: NotRequired[Mapping[str, Any]]
    id: NotRequired[str]
    subject: NotRequired[str]


MeterOrMeters = Mapping[str, Any] | Sequence[Mapping[str, Any]]


def meters_of(meter_or_meters: MeterOrMeters | None) -> list[Meter]:
    """A list of checked meters from one meter or several."""
    if meter_or_meters is None:
        return []
    meters = [meter_or_meters] if isinstance(meter_or_meters, Mapping) else list(meter_or_meters)
    checked: list[Meter] = []
    for meter in meters:
        if not isinstance(meter, Mapping) or not isinstance(meter.get("type"), str) or not meter["type"]:
            raise ValueError(f"a meter needs a non-empty string type, got {meter!r}")
        if not isinstance(meter.get("data", {}), Mapping):
            raise ValueError(f"meter {meter['type']!r}: data must be a mapping")
        unknown = set(meter) - set(Meter.__annotations__)
        if unknown:
            raise ValueError(f"meter {meter['type']!r}: unknown keys {sorted(unknown)} (type, data, id, subject)")
        checked.append(cast(Meter, dict(meter)))
    return checked


def set_meters(app: ApiGatewayResolver, meter_or_meters: MeterOrMeters) -> None:
    """Replace the policy's meters for the current request (an empty list meters nothing)."""
    app.append_context(**{METERS_CONTEXT_KEY: meters_of(meter_or_meters)})


class StatusCodes:
    """Status codes and ranges as OpenMeter's policy writes them: "200-299,304"."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self._ranges: list[tuple[int, int]] = []
        for part in spec.split(","):
            low, _, high = part.strip().partition("-")
            try:
                bounds = (int(low), int(high or low))
            except ValueError:
                raise ValueError(f"status codes are 'NNN' or 'NNN-NNN' separated by commas, got {spec!r}") from None
            if not 100 <= bounds[0] <= bounds[1] <= 599:
                raise ValueError(f"{part.strip()!r} in {spec!r} is not a range of HTTP status codes")
            self._ranges.append(bounds)

    def __contains__(self, status: object) -> bool:
        return isinstance(status, int) and any(low <= status <= high for low, high in self._ranges)


def authorizer_identity(raw_event: Mapping[str, Any]) -> Mapping[str, Any]:
    """What the API's authorizer said about the caller, for `subject_path`.

    HTTP API (payload 2.0): the JWT authorizer's claims, else a Lambda authorizer's context, else the IAM
    identity. REST API (1.0): a Cognito authorizer's claims, else a Lambda authorizer's context (with its
    `principalId`), else the IAM identity (`requestContext.identity`)."""
    context = raw_event.get("requestContext") or {}
    authorizer = context.get("authorizer") or {}
    if raw_event.get("version") == "2.0":
        for found in ((authorizer.get("jwt") or {}).get("claims"), authorizer.get("lambda"), authorizer.get("iam")):
            if found:
                return found
        return {}
    if authorizer.get("claims"):
        return authorizer["claims"]
    # Without an authorizer REST events still carry `{"claims": null, "scopes": null}`.
    if any(value is not None for key, value in authorizer.items() if key not in ("claims", "scopes")):
        return authorizer
    return context.get("identity") or {}


def value_at(document: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (".sub", ".data.account.id"), or None."""
    value: Any = document
    for key in path.strip(".").split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


class MeteringPolicy(BaseMiddlewareHandler[ApiGatewayResolver]):
    """Powertools middleware: entitlement checks before the route, usage events after it.

    `meter` is one meter or a list (`{"type", "data"?, "id"?, "subject"?}`); `meter_on_status_codes` which
    answers are metered; `event_source` the events' CloudEvents source; `required_entitlements` feature keys
    the subject needs access to (none: no check); `subject_path` where the subject is in the authorizer's
    identity (see `authorizer_identity`); `blocked_status` the answer without access. If entitlements cannot
    be checked (Meterline down) the request is answered 503, or let through with `fail_open=True`.
    """

    def __init__(self, client: Meterline, meter: MeterOrMeters | None = None, *,
                 meter_on_status_codes: str = "200-299", event_source: str = "api-gateway",
                 required_entitlements: Sequence[str] = (), subject_path: str = ".sub", blocked_status: int = 403,
                 fail_open: bool = False, flush_timeout_seconds: float = 5.0) -> None:
        super().__init__()
        if isinstance(required_entitlements, str):
            raise TypeError("required_entitlements is a list of feature keys, not one string")
        self.client = client
        self.meters = meters_of(meter)
        self.status_codes = StatusCodes(meter_on_status_codes)
        self.event_source = event_source
        self.required_entitlements = list(required_entitlements)
        self.subject_path = subject_path
        self.blocked_status = blocked_status
        self.fail_open = fail_open
        self.flush_timeout_seconds = flush_timeout_seconds

    def handler(self, app: ApiGatewayResolver, next_middleware: NextMiddleware) -> Response[str]:
        raw_event = app.current_event.raw_event
        subject = value_at(authorizer_identity(raw_event), self.subject_path)
        if isinstance(subject, int) and not isinstance(subject, bool):
            subject = str(subject)
        if not isinstance(subject, str) or not subject:
            logger.warning("no subject at %s in the request's authorizer context: answered 401", self.subject_path)
            return problem(401, "unauthenticated", "the request carries no subject (an authorizer must identify "
                           "the caller)")
        refusal = self._check_entitlements(subject)
        if refusal is not None:
            return refusal

        response = next_middleware(app)

        if response.status_code in self.status_codes:
            meters = app.context.get(METERS_CONTEXT_KEY, self.meters)
            events = self._events(app, raw_event, subject, meters, response.status_code)
            if events:
                self._send(events)
        return response

    def _check_entitlements(self, subject: str) -> Response[str] | None:
        try:
            denied = [key for key in self.required_entitlements if not self.client.has_access(subject, key)]
        except MeterlineError as error:
            if self.fail_open:
                logger.warning("entitlements of %r not checked (%s): let through (fail_open)", subject, error)
                return None
            logger.error("entitlements of %r not checked (%s): answered 503", subject, error)
            return problem(503, "entitlements-unavailable", "entitlements could not be checked; try again")
        if not denied:
            return None
        logger.warning("subject %r has no access to %s: answered %d", subject, ", ".join(denied), self.blocked_status)
        return problem(self.blocked_status, "no-access", f"no access to {', '.join(denied)}", features=denied)

    def _events(self, app: ApiGatewayResolver, raw_event: Mapping[str, Any], subject: str,
                meters: Sequence[Meter], status: int) -> list[dict[str, Any]]:
        context = raw_event.get("requestContext") or {}
        request_id = context.get("requestId") or getattr(app.lambda_context, "aws_request_id", None)
        if not request_id:  # not an API Gateway event: ids can no longer stop a retry's double count
            request_id = str(uuid.uuid4())
            logger.warning("no requestContext.requestId in the event: random event ids (%s)", request_id)
        epoch_ms = context.get("timeEpoch") or context.get("requestTimeEpoch")
        request_time = rfc3339(datetime.fromtimestamp(epoch_ms / 1000, UTC)) if epoch_ms else now_rfc3339()
        request_data = {"method": app.current_event.http_method.upper(), "route": route_template(app, raw_event),
                        "status": status}
        events, ids = [], set()
        for meter in meters:
            base_id = event_id = meter.get("id") or f"{request_id}-{meter['type']}"
            repeat = 1
            while event_id in ids:  # two meters of one type: still distinct ids, and the same ones on a retry
                repeat += 1
                event_id = f"{base_id}-{repeat}"
            ids.add(event_id)
            events.append({"specversion": SPEC_VERSION, "id": event_id, "source": self.event_source,
                           "type": meter["type"], "subject": meter.get("subject") or subject, "time": request_time,
                           "data": {**request_data, **meter.get("data", {})}})
        return events

    def _send(self, events: list[dict[str, Any]]) -> None:
        try:
            self.client.ingest(events)
        except (TypeError, ValueError):
            # Meters the server could not take (set_meters data that is not JSON): the work is done and answered,
            # and failing it now would only make the caller retry it.
            logger.exception("usage events of this request could not be buffered: not metered")
            return
        try:
            self.client.flush(self.flush_timeout_seconds)
        except MeterlineError as error:
            # The answer is the route's; usage not yet delivered stays buffered for the next invocation.
            logger.error("usage events not delivered before answering: %s", error)


def route_template(app: ApiGatewayResolver, raw_event: Mapping[str, Any]) -> str:
    """The matched route as a template ("/items/{id}"), never the raw path: the app's own route if Powertools
    resolved one, else API Gateway's (REST `resourcePath`, HTTP API `routeKey` without its method)."""
    try:
        return app.request.route
    except RuntimeError:  # no route of the app matched
        pass
    context = raw_event.get("requestContext") or {}
    if context.get("resourcePath"):
        return str(context["resourcePath"])
    return str(raw_event.get("routeKey") or "").rpartition(" ")[2] or "$default"


def problem(status: int, kind: str, detail: str, **extensions: Any) -> Response[str]:
    body = {"type": f"urn:meterline:problem:{kind}", "title": HTTPStatus(status).phrase, "status": status,
            "detail": detail, **extensions}
    return Response(status_code=status, content_type=PROBLEM_JSON, body=json.dumps(body))
