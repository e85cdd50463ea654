"""The webhook sender: consumes the delivery queue (SQS, partial batch failures) and POSTs each signed
usage webhook; failures are re-queued with backoff by the sender itself (see meterline.services.exports),
so a batch item fails only on an unexpected error. A message the invocation has too little time left
for is not tried: it goes back on the queue as a new message (not as a failure, which would count a
receive toward the dead-letter queue). SQS's redrive policy
dead-letters a message the function failed on as a whole (crashed, timed out) too often; the sender also
consumes the dead-letter queue, where it ends those deliveries as failed."""

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
from meterline.services.exports import NoTimeForAttempt
from meterline.settings import required_env


class DeliveryRecord(SqsRecordModel):
    body: Json[DeliveryMessage]  # type: ignore[assignment]


processor = BatchProcessor(event_type=EventType.SQS, model=DeliveryRecord, raise_on_entire_batch_failure=False)


def _deliver(record: DeliveryRecord, lambda_context: LambdaContext) -> None:
    message = record.body
    log = {"report": message.report, "run": message.run_id, "webhook_id": message.webhook_id,
           "attempt": message.attempt}
    try:
        outcome = webhook_sender().deliver(message, now_ms(), lambda_context.get_remaining_time_in_millis())
    except NoTimeForAttempt as postponed:
        webhook_sender().postpone(message)
        logger.info("webhook delivery postponed", extra={**log, "reason": str(postponed)})
        return
    logger.info("webhook delivery", extra={**log, "outcome": outcome})


def _fail_dead_lettered(record: DeliveryRecord) -> None:
    message = record.body
    outcome = webhook_sender().fail_dead_lettered(message, now_ms())
    logger.warning("dead-lettered webhook delivery", extra={"report": message.report, "run": message.run_id,
                                                            "webhook_id": message.webhook_id, "outcome": outcome})


def _from_dead_letter_queue(records: list[dict[str, Any]]) -> bool:
    """A batch comes from one queue: the delivery queue, or (by its name) the delivery dead-letter queue."""
    if not records:
        return False
    dead_letter_queue = required_env("DELIVERY_DLQ_URL", "the delivery dead-letter queue").rstrip("/")
    return str(records[0].get("eventSourceARN", "")).rsplit(":", 1)[-1] == dead_letter_queue.rsplit("/", 1)[-1]


@event_handler
def handler(event: dict[str, Any], context: LambdaContext) -> Mapping[str, Any]:
    records = event.get("Records") or []
    if _from_dead_letter_queue(records):
        return process_partial_response({"Records": records}, _fail_dead_lettered, processor, context)
    with webhook_sender().batch(now_ms):
        return process_partial_response({"Records": records}, _deliver, processor, context)
