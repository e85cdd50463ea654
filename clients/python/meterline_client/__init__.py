"""Meter usage into Meterline (or OpenMeter) from Python: `Meterline` sends CloudEvents in the background and
reads entitlements; `meterline_client.gateway` meters a Powertools API; `meterline_client.openai` meters
OpenAI completions."""

from meterline_client.client import Meterline
from meterline_client.entitlements import EntitlementValue
from meterline_client.errors import (
    EventsRejectedError,
    FlushTimeoutError,
    MeterlineAPIError,
    MeterlineError,
    MeterlineUnavailableError,
)

__all__ = [
    "EntitlementValue",
    "EventsRejectedError",
    "FlushTimeoutError",
    "Meterline",
    "MeterlineAPIError",
    "MeterlineError",
    "MeterlineUnavailableError",
]
