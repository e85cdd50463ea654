"""The webhook sender: consumes the delivery queue (SQS, partial batch failures) and POSTs each signed
usage webhook; failures are re-queued with backoff by the sender itself (see meterline.services.exports),
so a batch item fails only on an unexpected error, and SQS's redrive then dead-letters it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from meterline.bootstrap import webhook_sender
from meterline.domain.timeutil import now_ms

logger = Logger(service="meterline")
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def _deliver(record: SQSRecord) -> None:
    message = orjson.loads(record.body)
    outcome = webhook_sender().deliver(message, now_ms())
    logger.info("webhook delivery", extra={"report": message.get("report"), "run": message.get("runId"),
                                           "webhook_id": message.get("webhookId"), "attempt": message.get("attempt"),
                                           "outcome": outcome})


def handler(event: dict[str, Any], context: LambdaContext) -> Mapping[str, Any]:
    with processor(records=event.get("Records") or [], handler=_deliver, lambda_context=context):
        processor.process()
    return processor.response()
