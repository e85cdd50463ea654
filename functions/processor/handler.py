"""The events-table stream consumer (DynamoDB Streams -> Lambda, partial batch failures).

Each record is decoded on its own (a record that cannot be decoded is reported as a batch item
failure); the batch's derived writes (event index pages, counting rows and manifests) are then made
together. If those fail the invocation raises, so Lambda retries (and bisects) the batch; every
derived write is idempotent under redelivery (see docs/architecture.md, "Exactly-once counting").

Whatever the outcome, an invocation handed records that waited longer than the lag policy allows
reports the oldest one's arrival (domain/processing_lag.py): exporters hold windows while it is behind.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from meterline.bootstrap import processing_lag_store, usage_store
from meterline.domain.events import StoredEvent
from meterline.domain.timeutil import now_ms
from meterline.observability import event_handler, logger
from meterline.processing.counting import count_events
from meterline.processing.event_indexing import batch_id, decode_insert, index_events, oldest_arrival_ms
from meterline.services.meter_source import meter_catalog
from meterline.settings import compaction_timing, lag_policy

processor = BatchProcessor(event_type=EventType.DynamoDBStreams, raise_on_entire_batch_failure=False)


@event_handler
def handler(event: dict[str, Any], context: LambdaContext) -> Mapping[str, Any]:
    records: list[dict[str, Any]] = event.get("Records") or []
    try:
        response = _process(records, context)
    except Exception:
        _report_lag(records)
        raise
    _report_lag(records)
    return response


def _report_lag(records: list[dict[str, Any]]) -> None:
    oldest = oldest_arrival_ms(records)
    sample = lag_policy().sample(oldest, now_ms()) if oldest is not None else None
    if sample is None:
        return
    logger.warning("stream processing is behind", extra={"oldest_arrival_ms": sample.oldest_arrival_ms})
    try:
        processing_lag_store().record(sample)
    except Exception:  # noqa: BLE001 - never hides the batch's own outcome; exporters then see no lag
        logger.exception("could not record the processing lag")


def _process(records: list[dict[str, Any]], context: LambdaContext) -> Mapping[str, Any]:
    decoded: list[StoredEvent] = []

    def decode(record: DynamoDBRecord) -> None:
        stored = decode_insert(record.raw_event)
        if stored is not None:
            decoded.append(stored)

    with processor(records=records, handler=decode, lambda_context=context):
        processor.process()
    now = now_ms()
    pages = index_events(records, decoded, usage_store(), now) if records else 0
    counted = (count_events(decoded, meter_catalog, usage_store(), batch_id(records), now, compaction_timing())
               if decoded else None)
    response = processor.response()
    logger.info("stream batch", extra={"records": len(records), "events": len(decoded), "index_pages": pages,
                                       "rows": counted.rows if counted else 0,
                                       "raw_pages": counted.pages if counted else 0,
                                       "failed": len(response["batchItemFailures"])})
    return response
