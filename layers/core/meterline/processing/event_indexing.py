"""Reading a batch of events-table stream records: the new events they carry, the batch's identity and
how old its oldest record is."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from meterline.domain.events import StoredEvent
from meterline.storage.events_store import is_manifest, stored_event_from_item


def decode_insert(record: dict[str, Any]) -> StoredEvent | None:
    """The event a stream record inserted, or None for records that carry no new event
    (REMOVE from TTL expiry, a MODIFY, which Meterline never makes, or a time-index manifest)."""
    if record.get("eventName") != "INSERT" or is_manifest(record["dynamodb"]["NewImage"]):
        return None
    return stored_event_from_item(record["dynamodb"]["NewImage"])


def batch_id(records: Sequence[dict[str, Any]]) -> str:
    """Stable for a given run of records, so a redelivered identical batch overwrites its own pages."""
    first, last = records[0]["dynamodb"]["SequenceNumber"], records[-1]["dynamodb"]["SequenceNumber"]
    digest = hashlib.blake2b(f"{records[0].get('eventSourceARN')}|{first}|{last}".encode(), digest_size=6)
    return f"{first}-{digest.hexdigest()}"


def oldest_arrival_ms(records: Sequence[dict[str, Any]]) -> int | None:
    """When the batch's oldest record reached the stream (stream records carry whole seconds)."""
    arrivals = [record["dynamodb"].get("ApproximateCreationDateTime") for record in records]
    known = [float(arrival) for arrival in arrivals if arrival is not None]
    return int(min(known) * 1000) if known else None

