"""API Gateway access logs as usage (infra/metering.py `ApiMetering`): the JSON line a metered stage
logs for each request, what is metered, and the events one logged request becomes.

The log format and the parser below are one contract: infra builds the stage's format from
`access_log_format`, the access-log metering function reads lines back with `AccessLogRecord`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr, field_validator

from meterline.domain.timeutil import format_ms
from meterline.settings import NAMESPACE_RULE, is_namespace

# The access-log metering function's configuration (AccessLogMeteringConfig as JSON), set by infra.
ACCESS_LOG_METERING_ENV = "METERLINE_ACCESS_LOG_METERING"
DEFAULT_EVENT_SOURCE = "api-gateway"
DEFAULT_STATUS_CODES = "200-299"
# What API Gateway logs for a $context variable that has no value.
ABSENT = "-"

# A $context variable that can stand inside a JSON string of the log format.
SUBJECT_PATH = re.compile(r"^\$context\.[^\s\"\\]+$")
_STATUS_PART = re.compile(r"^\s*(\d{3})\s*(?:-\s*(\d{3})\s*)?$")


class ApiKind(StrEnum):
    HTTP = "http"  # API Gateway HTTP API (apigatewayv2)
    REST = "rest"  # API Gateway REST API


def access_log_format(kind: ApiKind, subject_path: str) -> dict[str, str]:
    """The stage's access log line: one JSON object per request with only what metering needs (no
    headers, no IP address). `subject_path` is the $context variable naming the caller."""
    if not SUBJECT_PATH.match(subject_path):
        raise ValueError(f"subject {subject_path!r} must be a $context variable, e.g. $context.authorizer.claims.sub")
    return {
        "requestId": "$context.requestId",
        "requestTimeEpoch": "$context.requestTimeEpoch",  # milliseconds, for HTTP and REST APIs alike
        "httpMethod": "$context.httpMethod",
        # the route template, never the raw path (an HTTP API's route key also names the method)
        "route": "$context.routeKey" if kind is ApiKind.HTTP else "$context.resourcePath",
        "status": "$context.status",
        "responseLatency": "$context.responseLatency",
        "subject": subject_path,
    }


@dataclass(frozen=True)
class StatusCodes:
    """Which response statuses are metered, as the gateway policy writes them: "200-299,304"."""

    ranges: tuple[tuple[int, int], ...]

    @classmethod
    def parse(cls, text: str) -> StatusCodes:
        ranges = []
        for part in text.split(","):
            match = _STATUS_PART.match(part)
            if not match:
                raise ValueError(f"{part.strip()!r} is not a status code or a range of them (e.g. 200-299,304)")
            low = int(match.group(1))
            high = int(match.group(2) or low)
            if not 100 <= low <= high <= 599:
                raise ValueError(f"{part.strip()!r} must be status codes from 100 to 599, the lower one first")
            ranges.append((low, high))
        return cls(tuple(ranges))

    def __contains__(self, status: int) -> bool:
        return any(low <= status <= high for low, high in self.ranges)


class GatewayMeter(BaseModel):
    """What each metered request is counted as: a CloudEvent `type` and the `data` every event carries
    (besides the request's method, route, status and duration)."""

    model_config = ConfigDict(extra="forbid")

    type: Annotated[StrictStr, Field(min_length=1)]
    data: dict[str, Any] = Field(default_factory=dict)


def _namespace(value: str) -> str:
    if not is_namespace(value):
        raise ValueError(f"must match {NAMESPACE_RULE}")
    return value


def _status_codes(value: str) -> str:
    StatusCodes.parse(value)
    return value


class AccessLogMeteringConfig(BaseModel):
    """What one metered stage counts, and where: set by `ApiMetering`, read by its function."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    namespace: Annotated[str, BeforeValidator(_namespace)]
    meters: list[GatewayMeter] = Field(min_length=1)
    meter_on_status_codes: Annotated[str, BeforeValidator(_status_codes)] = Field(DEFAULT_STATUS_CODES,
                                                                                  alias="meterOnStatusCodes")
    event_source: Annotated[StrictStr, Field(min_length=1)] = Field(DEFAULT_EVENT_SOURCE, alias="eventSource")

    @field_validator("meters")
    @classmethod
    def _distinct_types(cls, meters: list[GatewayMeter]) -> list[GatewayMeter]:
        # a request's events are told apart by their type (see event_id)
        types = [meter.type for meter in meters]
        if len(set(types)) != len(types):
            raise ValueError("each meter needs a type of its own")
        return meters

    @cached_property
    def status_codes(self) -> StatusCodes:
        return StatusCodes.parse(self.meter_on_status_codes)

    def event_id(self, request_id: str, meter: GatewayMeter) -> str:
        """The request id, so a redelivered log line is the same event again; with several meters, suffixed
        with the meter's type, because (source, id) is the idempotency key and each meter's event must count."""
        return request_id if len(self.meters) == 1 else f"{request_id}-{meter.type}"


def _present(value: Any) -> Any:
    return None if value in (ABSENT, "") else value


class AccessLogRecord(BaseModel):
    """One line of a metered stage's access log (the values are logged as JSON strings)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    request_id: Annotated[str, Field(min_length=1)] = Field(alias="requestId")
    request_time_ms: int = Field(alias="requestTimeEpoch")
    method: str = Field(alias="httpMethod")
    route_key: str = Field(alias="route")
    status: int
    latency_ms: Annotated[int | None, BeforeValidator(_present)] = Field(None, alias="responseLatency")
    subject: Annotated[str | None, BeforeValidator(_present)] = None

    @property
    def route(self) -> str:
        """The route template: an HTTP API's route key ("GET /items/{id}", "ANY /{proxy+}") without its
        method, as a REST API logs it; "$default" as it is."""
        _, _, path = self.route_key.partition(" ")
        return path if path.startswith("/") else self.route_key

    def events(self, config: AccessLogMeteringConfig) -> Iterator[dict[str, Any]]:
        """The CloudEvents (as POST /api/v1/events takes them) of this request: one per meter."""
        facts: dict[str, Any] = {"method": self.method, "route": self.route, "status": self.status}
        if self.latency_ms is not None:
            facts["duration_seconds"] = self.latency_ms / 1000
        for meter in config.meters:
            yield {"specversion": "1.0", "id": config.event_id(self.request_id, meter),
                   "source": config.event_source, "type": meter.type, "subject": self.subject,
                   "time": format_ms(self.request_time_ms), "data": {**facts, **meter.data}}
