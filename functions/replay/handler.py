"""Replays stream batches the processor's mapping gave up on (its on-failure queue -> this function).

Each message names a shard and a sequence-number range; the records are read back from the stream and
processed exactly as the processor processes them (meterline.processing.stream_batch), which counts each
event once however often it is processed. Records the stream no longer holds (24 hours) cannot be
replayed: the message is reported as failed, so it stays on the queue (its age alarm fires) and the log
names what an operator recounts with `meterline recount`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Json

from meterline.aws.streams import RecordsExpired, StreamFailure, StreamReader
from meterline.observability import event_handler, logger
from meterline.processing.stream_batch import process_stream_batch


class StreamFailureRecord(SqsRecordModel):
    body: Json[StreamFailure]  # type: ignore[assignment]


class ReplayIncomplete(Exception):
    """Some replayed records failed again: the message is retried."""


processor = BatchProcessor(event_type=EventType.SQS, model=StreamFailureRecord, raise_on_entire_batch_failure=False)


@event_handler
def handler(event: dict[str, Any], context: LambdaContext) -> Mapping[str, Any]:
    def replay(record: StreamFailureRecord) -> None:
        info = record.body.batch
        where = {"shard": info.shard_id, "from_sequence": info.start_sequence_number,
                 "to_sequence": info.end_sequence_number, "first_arrival": info.first_arrival.isoformat(),
                 "last_arrival": info.last_arrival.isoformat(), "batch_size": info.batch_size}
        try:
            records = StreamReader().batch(info, os.environ.get("AWS_REGION", "us-east-1"))
        except RecordsExpired:
            logger.error("the stream no longer holds a batch that was given up: recount the namespaces written "
                         "to between its arrival times (meterline recount)", extra=where)
            raise
        response = process_stream_batch(records, context)
        if response["batchItemFailures"]:
            raise ReplayIncomplete(f"{len(response['batchItemFailures'])} records failed again")
        logger.info("replayed a given-up stream batch", extra={**where, "records": len(records)})

    return process_partial_response(event, replay, processor, context)
