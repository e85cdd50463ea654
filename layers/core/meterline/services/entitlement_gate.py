"""The entitlement authorizer's decision: may this subject use every required feature now?

Each feature's access is its entitlement value's `hasAccess`, computed by the same engine as
GET /api/v1/customers/{subject}/entitlements/{feature}/value (no HTTP hop). A subject without an
entitlement of a feature has no access to it; a value that cannot be computed denies too.
"""

from __future__ import annotations

from dataclasses import dataclass

from meterline.domain.entitlement_gate import EntitlementGateConfig
from meterline.domain.events import MAX_ATTRIBUTE_BYTES
from meterline.errors import MeterlineError
from meterline.services.entitlements import EntitlementsContext, ValueQuery, customer_value

NO_ACCESS = "no access"


@dataclass(frozen=True)
class GateDecision:
    subject: str | None
    denied: dict[str, str]  # each required feature the subject may not use, and why

    @property
    def allowed(self) -> bool:
        return not self.denied


class EntitlementGate:
    def __init__(self, entitlements: EntitlementsContext, config: EntitlementGateConfig) -> None:
        self.entitlements = entitlements
        self.config = config

    def decide(self, subject: str | None, now_ms: int) -> GateDecision:
        """`subject` None: the request named none (nobody to check, so nobody gets through)."""
        required = self.config.required_entitlements
        if not subject:
            return GateDecision(None, dict.fromkeys(required, "the request names no subject"))
        if len(subject.encode()) > MAX_ATTRIBUTE_BYTES:  # no event can name it, so no entitlement is its
            return GateDecision(subject, dict.fromkeys(required, f"the subject is longer than {MAX_ATTRIBUTE_BYTES} "
                                                                 "bytes"))
        denied = {}
        for feature_key in required:
            try:
                value = customer_value(self.entitlements, self.config.namespace, subject, feature_key, ValueQuery(),
                                       now_ms)
            except MeterlineError as error:  # e.g. the feature's meter was deleted: fail closed
                denied[feature_key] = f"no value: {error}"
                continue
            if not value["hasAccess"]:
                denied[feature_key] = NO_ACCESS
        return GateDecision(subject, denied)
