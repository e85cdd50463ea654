"""Scheduled every minute: fold raw counting rows into quarter-hour, hour and day slots, and report how
far behind schedule the compactor is (a metric). (Backfills run in a function of their own.)

Must not run concurrently with itself (reserved concurrency 1); each run stops early enough to stay
inside its timeout, and the next run continues where it stopped.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from meterline.bootstrap import compactor
from meterline.domain.timeutil import now_ms
from meterline.observability import logger, metered_handler, metrics
from meterline.services.compaction import LAG_METRIC

# Leave this much of the invocation's time unused, so a run never times out half-way through a step.
SAFETY_MS = 20_000


@metered_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    now = now_ms()
    report = compactor().run(now)
    while not report.caught_up and context.get_remaining_time_in_millis() > SAFETY_MS:
        report = compactor().run(now)
    horizons = report.horizons.named() if report.horizons else {}
    # One datapoint per run: how far the compactor is behind its schedule. infra/monitoring.py alarms on
    # it, also when it is missing (the compactor stopped running).
    metrics.add_metric(name=LAG_METRIC, unit=MetricUnit.Seconds, value=report.lag_ms / 1000)
    logger.info("compaction", extra={"quarters": report.quarters, "hours": report.hours, "days": report.days,
                                     "late_quarters": report.late_quarters, "units": report.units,
                                     "slot_writes": report.slot_writes, "caught_up": report.caught_up,
                                     "lag_ms": report.lag_ms, **horizons})
    return {"caughtUp": report.caught_up, **horizons}
