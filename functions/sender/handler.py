"""The webhook sender: consumes the delivery queue (SQS, partial batch failures) and POSTs each signed
usage webhook; failures are re-queued with backoff by the sender itself (see meterline.services.exports),
so a batch item fails only on an unexpected error, and SQS's redrive then dead-letters it."""

from __future__ import annotations

from typing import Any

import orjson
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from meterline.aws.queues import ExportQueues
from meterline.domain.timeutil import now_ms
from meterline.services.exports import WebhookSender
from meterline.settings import export_settings
from meterline.storage.reports_store import ReportsStore
from meterline.webhooks import EndpointPolicy, RetryPolicy

logger = Logger(service="meterline")
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
_sender: WebhookSender | None = None


def sender() -> WebhookSender:
    global _sender
    if _sender is None:
        _sender = WebhookSender(
            reports=ReportsStore(run_retention_days=export_settings().run_retention_days), queues=ExportQueues(),
            retry=RetryPolicy.from_env(), endpoint_policy=EndpointPolicy.from_env(),
        )
    return _sender


def _deliver(record: SQSRecord) -> None:
    message = orjson.loads(record.body)
    outcome = sender().deliver(message, now_ms())
    logger.info("webhook delivery", extra={"report": message.get("report"), "run": message.get("runId"),
                                           "webhook_id": message.get("webhookId"), "attempt": message.get("attempt"),
                                           "outcome": outcome})


def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    with processor(records=event.get("Records") or [], handler=_deliver, lambda_context=context):
        processor.process()
    return processor.response()
