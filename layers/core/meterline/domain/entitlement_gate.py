"""The entitlement authorizer's rules (infra/metering.py `EntitlementAuthorizer`): which features a
caller must have access to, in which namespace, and where in a request its subject is.

API Gateway caches an authorizer's answer by its identity source, so the subject's source is the
identity source: the answer depends on the subject alone, never on the route.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from meterline.domain.features import FEATURE_KEY_PATTERN, MAX_KEY_LENGTH
from meterline.settings import NAMESPACE_RULE, is_namespace

# The entitlement authorizer's configuration (EntitlementGateConfig as JSON), set by infra.
ENTITLEMENT_GATE_ENV = "METERLINE_ENTITLEMENT_GATE"

_SOURCE = re.compile(r"^\$request\.(header|querystring)\.([A-Za-z0-9!#$%&'*+.^_`|~-]+)$")


@dataclass(frozen=True)
class SubjectSource:
    """A request header or query string parameter naming the subject, written as an HTTP API identity
    source: `$request.header.X-Customer-Id` or `$request.querystring.customer`."""

    location: Literal["header", "querystring"]
    name: str

    @classmethod
    def parse(cls, text: str) -> SubjectSource:
        match = _SOURCE.match(text)
        if not match:
            raise ValueError(f"subject source {text!r} must be $request.header.<name> or $request.querystring.<name>")
        location: Literal["header", "querystring"] = "header" if match.group(1) == "header" else "querystring"
        return cls(location, match.group(2))

    @property
    def http_identity_source(self) -> str:
        return f"$request.{self.location}.{self.name}"

    @property
    def rest_identity_source(self) -> str:
        return f"method.request.{self.location}.{self.name}"

    def value_in(self, headers: Mapping[str, str] | None, query: Mapping[str, str] | None) -> str | None:
        """The subject in a REST API REQUEST authorizer event's headers or query string (headers match
        case-insensitively, as HTTP has it)."""
        if self.location == "querystring":
            return (query or {}).get(self.name) or None
        wanted = self.name.lower()
        return next((value for key, value in (headers or {}).items() if key.lower() == wanted and value), None)


def _namespace(value: str) -> str:
    if not is_namespace(value):
        raise ValueError(f"must match {NAMESPACE_RULE}")
    return value


def _subject_source(value: Any) -> str:
    return SubjectSource.parse(value).http_identity_source


FeatureKey = Annotated[str, Field(pattern=FEATURE_KEY_PATTERN, max_length=MAX_KEY_LENGTH)]


class EntitlementGateConfig(BaseModel):
    """Who gets through: a subject with access to every one of `required_entitlements` (feature keys)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    namespace: Annotated[str, BeforeValidator(_namespace)]
    required_entitlements: list[FeatureKey] = Field(min_length=1, alias="requiredEntitlements")
    subject_source: Annotated[str, BeforeValidator(_subject_source)] = Field(alias="subjectSource")

    @field_validator("required_entitlements")
    @classmethod
    def _once_each(cls, keys: list[str]) -> list[str]:
        return list(dict.fromkeys(keys))

    @property
    def subject(self) -> SubjectSource:
        return SubjectSource.parse(self.subject_source)
