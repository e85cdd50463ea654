"""Scheduled every minute: recount the hours the stream processor asked for (events too old to count
themselves), move pending meter backfills forward, each a recount of its meter over its
namespace's events read through the event time index, and stop early enough to stay inside the timeout;
the next run resumes from the next hour. A function of its own, so folding never waits on a backfill.

Must not run concurrently with itself (reserved concurrency 1).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from meterline.bootstrap import backfill_worker
from meterline.domain.timeutil import now_ms
from meterline.observability import event_handler, logger

# Leave this much of the invocation's time unused: a step stops between hours once less is left.
SAFETY_MS = 20_000


@event_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    filled = backfill_worker().run(now_ms(), out_of_time=lambda: context.get_remaining_time_in_millis() < SAFETY_MS)
    if filled.hours:
        logger.info("backfill", extra={"hours": filled.hours, "events": filled.events,
                                       "completed": filled.completed, "recounted": filled.recounted})
    return {"hours": filled.hours, "events": filled.events, "completed": filled.completed,
            "recounted": filled.recounted}
