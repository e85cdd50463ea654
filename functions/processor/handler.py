"""The events-table stream consumer (DynamoDB Streams -> Lambda, partial batch failures).

The batch is processed by meterline.processing.stream_batch: a record that cannot be decoded is a batch
item failure; if the derived writes fail the invocation raises, so Lambda retries (and bisects) the batch.

Whatever the outcome, an invocation handed records that waited longer than the lag policy allows
reports the oldest one's arrival (domain/processing_lag.py): exporters hold windows while it is behind.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from meterline.bootstrap import processing_lag_store
from meterline.domain.timeutil import now_ms
from meterline.observability import event_handler, logger
from meterline.processing.event_indexing import oldest_arrival_ms
from meterline.processing.stream_batch import process_stream_batch
from meterline.settings import lag_policy


@event_handler
def handler(event: dict[str, Any], context: LambdaContext) -> Mapping[str, Any]:
    records: list[dict[str, Any]] = event.get("Records") or []
    try:
        response = process_stream_batch(records, context)
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
