"""Access-log metering: the requests a metered API Gateway stage logged become usage events, stored
through the same ingest path as POST /api/v1/events (no HTTP hop).

Each event's id is its request's id (meterline.domain.access_logs), so a log batch delivered again
stores nothing new. A request without a subject is never metered: there is nobody to bill.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson
from pydantic import ValidationError

from meterline.domain.access_logs import AccessLogMeteringConfig, AccessLogRecord
from meterline.domain.events import BATCH, CloudEvent, validate_events
from meterline.errors import MeterlineError
from meterline.services.ingest import ingest
from meterline.storage.events_store import EventsStore


@dataclass
class AccessLogOutcome:
    """What became of one batch of access log lines."""

    lines: int = 0
    metered: int = 0  # requests that became events
    stored: int = 0  # events stored now
    duplicates: int = 0  # events stored before (a redelivered batch)
    other_status: int = 0  # requests whose status is not metered
    without_subject: list[str] = field(default_factory=list)  # ids of requests with nobody to bill
    unreadable: list[str] = field(default_factory=list)  # why a line could not be metered


class AccessLogMeterer:
    def __init__(self, store: EventsStore, config: AccessLogMeteringConfig) -> None:
        self.store = store
        self.config = config

    def meter(self, lines: Iterable[str], received_ms: int) -> AccessLogOutcome:
        """Store the events of every metered request among `lines`; raises StorageUnavailable if a
        write failed (metering the same lines again is then safe)."""
        outcome = AccessLogOutcome()
        events: list[CloudEvent] = []
        for line in lines:
            outcome.lines += 1
            try:
                record = AccessLogRecord.model_validate_json(line)
            except ValidationError as error:
                outcome.unreadable.append(_unreadable(error))
                continue
            if record.status not in self.config.status_codes:
                outcome.other_status += 1
                continue
            if record.subject is None:
                outcome.without_subject.append(record.request_id)
                continue
            raw = list(record.events(self.config))
            try:
                # one request at a time: a bad one (a subject too long for a key) spoils no other
                events.extend(validate_events(raw, BATCH, len(orjson.dumps(raw)), received_ms))
            except MeterlineError as error:
                why = "; ".join(f"{e.field} {e.reason}" for e in error.errors) or str(error)
                outcome.unreadable.append(f"request {record.request_id}: {why}")
                continue
            outcome.metered += 1
        if events:
            result = ingest(self.store, self.config.namespace, events, received_ms)
            outcome.stored, outcome.duplicates = result.stored, result.duplicates
        return outcome


def _unreadable(error: ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"not a metered access log line: {where + ' ' if where else ''}{first['msg']}".strip()
