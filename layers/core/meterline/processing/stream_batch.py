"""One batch of events-table stream records, processed: decode the new events (a record that cannot be
decoded is a batch item failure), then write their event index pages and counting rows together. The
processor runs it on what Lambda hands over; the replay function on a batch read back from the stream
after the mapping gave up on it. Every derived write is idempotent under redelivery (docs/architecture.md,
"Exactly-once counting"), so running a batch again, whole or in part, changes nothing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from meterline.bootstrap import usage_store
from meterline.domain.events import StoredEvent
from meterline.domain.timeutil import now_ms
from meterline.observability import logger
from meterline.processing.counting import count_events
from meterline.processing.event_indexing import batch_id, decode_insert, index_events
from meterline.services.meter_source import meter_catalog
from meterline.settings import compaction_timing

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
    pages = index_events(records, decoded, usage_store(), now) if records else 0
    counted = (count_events(decoded, meter_catalog, usage_store(), batch_id(records), now, compaction_timing())
               if decoded else None)
    response = _processor.response()
    logger.info("stream batch", extra={"records": len(records), "events": len(decoded), "index_pages": pages,
                                       "rows": counted.rows if counted else 0,
                                       "raw_pages": counted.pages if counted else 0,
                                       "failed": len(response["batchItemFailures"])})
    return response
