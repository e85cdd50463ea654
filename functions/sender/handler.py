"""The webhook sender: consumes the delivery queue (SQS, partial batch failures) and POSTs each signed
usage webhook; failures are re-queued with backoff by the sender itself (see meterline.services.exports),
so a batch item fails only on an unexpected error, and SQS's redrive then dead-letters it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Json

from meterline.bootstrap import webhook_sender
from meterline.domain.exports import DeliveryMessage
from meterline.domain.timeutil import now_ms
from meterline.observability import event_handler, logger


class DeliveryRecord(SqsRecordModel):
    body: Json[DeliveryMessage]  # type: ignore[assignment]


processor = BatchProcessor(event_type=EventType.SQS, model=DeliveryRecord, raise_on_entire_batch_failure=False)


def _deliver(record: DeliveryRecord) -> None:
    message = record.body
    outcome = webhook_sender().deliver(message, now_ms())
    logger.info("webhook delivery", extra={"report": message.report, "run": message.run_id,
                                           "webhook_id": message.webhook_id, "attempt": message.attempt,
                                           "outcome": outcome})


@event_handler
def handler(event: dict[str, Any], context: LambdaContext) -> Mapping[str, Any]:
    return process_partial_response({"Records": event.get("Records") or []}, _deliver, processor, context)
