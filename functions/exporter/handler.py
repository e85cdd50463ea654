"""The exporter: invoked by a report's EventBridge schedule ({"namespace", "report", "reportId"}) to
export the windows that closed, or by the export-request queue (SQS, partial batch failures) to run a
manually requested window."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Json

from meterline.bootstrap import exporter
from meterline.domain.exports import ExportRequest
from meterline.domain.timeutil import now_ms
from meterline.observability import event_handler, logger


class ExportRequestRecord(SqsRecordModel):
    body: Json[ExportRequest]  # type: ignore[assignment]


processor = BatchProcessor(event_type=EventType.SQS, model=ExportRequestRecord, raise_on_entire_batch_failure=False)


def _requested(record: ExportRequestRecord) -> None:
    request = record.body
    outcome, run = exporter().handle_request(request, now_ms())
    logger.info("manual export", extra={"report": request.report, "run": request.run_id, "outcome": outcome,
                                        "status": run.status if run else None})


@event_handler
def handler(event: dict[str, Any], context: LambdaContext) -> Mapping[str, Any]:
    if "Records" in event:
        return process_partial_response(event, _requested, processor, context)
    runs = exporter().run_scheduled(event["namespace"], event["report"], event["reportId"], now_ms())
    logger.info("scheduled export", extra={"report": event["report"],
                                           "windows": [(r.trigger.value, r.window_start_ms) for r in runs]})
    return {"runs": [run.id for run in runs]}
