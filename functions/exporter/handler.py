"""The exporter: invoked by a report's EventBridge schedule ({"namespace", "report", "reportId"}) to
export the windows that closed, or by the export-request queue (SQS, partial batch failures) to run a
manually requested window."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from meterline.bootstrap import exporter
from meterline.domain.exports import ExportRequest
from meterline.domain.timeutil import now_ms

logger = Logger(service="meterline")
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def _requested(record: SQSRecord) -> None:
    request = ExportRequest.model_validate_json(record.body)
    outcome, run = exporter().handle_request(request, now_ms())
    logger.info("manual export", extra={"report": request.report, "run": request.run_id, "outcome": outcome,
                                        "status": run.status if run else None})


def handler(event: dict[str, Any], context: LambdaContext) -> Mapping[str, Any]:
    if "Records" in event:
        with processor(records=event["Records"], handler=_requested, lambda_context=context):
            processor.process()
        return processor.response()
    runs = exporter().run_scheduled(event["namespace"], event["report"], event["reportId"], now_ms())
    logger.info("scheduled export", extra={"report": event["report"],
                                           "windows": [(r.trigger.value, r.window_start_ms) for r in runs]})
    return {"runs": [run.id for run in runs]}
