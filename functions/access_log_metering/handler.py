"""Subscribed to a metered API Gateway stage's access log group (infra/metering.py `ApiMetering`):
CloudWatch Logs hands over batches of log lines (`{"awslogs": {"data": base64(gzip(json))}}`), and
each request with a metered status becomes one usage event per meter.

CloudWatch Logs invokes asynchronously: an error (storage unavailable) makes Lambda try the batch
again, then sends it to the failure queue; events are keyed by request id, so a retry never counts twice.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.data_classes import CloudWatchLogsEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from meterline.bootstrap import access_log_meterer
from meterline.domain.timeutil import now_ms
from meterline.observability import event_handler, logger

DATA_MESSAGE = "DATA_MESSAGE"  # the other kind, CONTROL_MESSAGE, is CloudWatch checking it can deliver
# A batch may hold thousands of lines: log how many were skipped, and only the first few of them.
LOGGED_EXAMPLES = 20


@event_handler
@event_source(data_class=CloudWatchLogsEvent)
def handler(event: CloudWatchLogsEvent, context: LambdaContext) -> dict[str, Any]:
    batch = event.parse_logs_data()
    if batch.message_type != DATA_MESSAGE:
        return {"metered": 0}
    outcome = access_log_meterer().meter((log.message for log in batch.log_events), now_ms())
    if outcome.without_subject:
        logger.warning("requests without a subject were not metered",
                       extra={"log_group": batch.log_group, "count": len(outcome.without_subject),
                              "request_ids": outcome.without_subject[:LOGGED_EXAMPLES]})
    if outcome.unreadable:
        logger.error("access log lines could not be metered",
                     extra={"log_group": batch.log_group, "count": len(outcome.unreadable),
                            "reasons": outcome.unreadable[:LOGGED_EXAMPLES]})
    logger.info("access logs metered", extra={"log_group": batch.log_group, "lines": outcome.lines,
                                              "metered": outcome.metered, "stored": outcome.stored,
                                              "duplicates": outcome.duplicates, "other_status": outcome.other_status})
    return {"metered": outcome.metered, "stored": outcome.stored, "duplicates": outcome.duplicates,
            "withoutSubject": len(outcome.without_subject), "unreadable": len(outcome.unreadable)}
