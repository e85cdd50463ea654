"""One batch of events-table stream records, processed: decode the new events (a record that cannot be
decoded is a batch item failure), then write their counting rows together (for an
event too old for its quarter to be re-folded, a recount request of its hour instead of rows). The
processor runs it on what Lambda hands over; the replay function on a batch read back from the stream
after the mapping gave up on it. Every derived write is idempotent under redelivery (docs/architecture.md,
"Exactly-once counting"), so running a batch again, whole or in part, changes nothing."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from meterline.bootstrap import usage_store
from meterline.domain.events import StoredEvent
from meterline.domain.meters import MeterCatalog
from meterline.domain.timeutil import HOUR_MS, floor_to, now_ms
from meterline.observability import logger
from meterline.processing.counting import count_events, counters_for
from meterline.processing.event_indexing import batch_id, decode_insert
from meterline.services.meter_source import meter_catalog
from meterline.settings import compaction_timing
from meterline.storage.usage_store import UsageStore

_processor = BatchProcessor(event_type=EventType.DynamoDBStreams, raise_on_entire_batch_failure=False)


def process_stream_batch(records: list[dict[str, Any]], context: LambdaContext) -> Mapping[str, Any]:
    """Lambda's response for the batch: {"batchItemFailures": [...]}. Raises when the derived writes fail,
    so the whole batch is tried again."""
    decoded: list[StoredEvent] = []

    def decode(record: DynamoDBRecord) -> None:
        stored = decode_insert(record.raw_event)
        if stored is not None:
            decoded.append(stored)

    with _processor(records=records, handler=decode, lambda_context=context):
        _processor.process()
    now = now_ms()
    refold_from = usage_store().retention.refold_from_ms(now)
    too_old: list[StoredEvent] = []
    countable: list[StoredEvent] = []
    for event in decoded:
        (too_old if refold_from is not None and event.time_ms < refold_from else countable).append(event)
    batch = batch_id(records) if records else ""
    recounts = request_recounts(too_old, meter_catalog, usage_store(), batch, now) if too_old else 0
    counted = (count_events(countable, meter_catalog, usage_store(), batch, now, compaction_timing())
               if countable else None)
    response = _processor.response()
    logger.info("stream batch", extra={"records": len(records), "events": len(decoded),
                                       "rows": counted.rows if counted else 0,
                                       "raw_pages": counted.pages if counted else 0, "recount_requests": recounts,
                                       "failed": len(response["batchItemFailures"])})
    return response


def request_recounts(events: Sequence[StoredEvent], catalogs: Callable[[str], MeterCatalog], store: UsageStore,
                     batch: str, now_ms: int) -> int:
    """Ask for a recount of each (namespace, UTC hour) of `events` that some meter counts, instead of
    counting them: they are too old for their quarters to be re-folded from raw rows, some of which may have
    expired (Retention.refold_from_ms), so rows of their own would make the compactor fold a short quarter,
    hour and day. The backfill function recounts those hours from the events table (rewriting every raw row
    of the hour), and the compactor re-folds them. Returns the number of requests written."""
    hours = {(event.namespace, floor_to(event.time_ms, HOUR_MS)) for event in events
             if counters_for(catalogs(event.namespace)).get(event.type)}
    return store.put_recount_requests(hours, batch, now_ms) if hours else 0
