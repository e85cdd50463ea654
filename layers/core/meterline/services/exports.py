"""Running usage exports (the exporter Lambda) and delivering their webhooks (the sender Lambda).

Exporter: a scheduled invocation exports every window of the report that closed since the last one it
exported (catching up at most `catch_up_windows`, oldest first), each claimed by a conditional write so
a window runs at most once however often the schedule fires; a manual run exports the window it was
given. A window is exported once the stream processor is past its end (domain/processing_lag.py): until
then its run waits, and a request to try again is queued with a delay; after `max_hold_ms` it is exported
anyway, marked provisional (as is a manual run of a window that has not ended, exported at once).
Exporting = one usage query (grouped by subject and the report's keys), the report's filters, one
delivery record and one queued message per subject.

Sender: POSTs one subject's webhook; a failure is re-queued with a backoff delay until the retry policy
gives up, then the message goes to the dead-letter queue and the delivery counts as failed on its run.
An attempt is started only while the invocation has time for all of it (the webhook's hard deadline and
the records around it); otherwise the message is put back on the queue untried, as a new message (a
message handed back as a failure would count a receive each time, and three crowded invocations would
dead-letter a delivery never tried). A message SQS itself
dead-letters (the sender crashed or timed out on it every time it was received) comes back to the sender
from the dead-letter queue, which ends its delivery as failed.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import orjson

from meterline.aws.queues import ExportQueues
from meterline.aws.signing_secrets import SigningSecrets
from meterline.domain.exports import Delivery, DeliveryMessage, ExportRequest, Run, RunPhase, Trigger, webhook_id
from meterline.domain.meters import BackfillState, Meter
from meterline.domain.processing_lag import Completeness, LagPolicy, LagSample, Readiness, readiness
from meterline.domain.query_plan import UsageQuery
from meterline.domain.reports import (
    SUBJECT,
    Report,
    Window,
    WindowGrid,
    closed_windows,
    filtered_usage,
    group_keys,
    webhook_payload,
)
from meterline.services.meters import new_ulid
from meterline.services.reports import endpoint_headers
from meterline.services.usage_query import UsageReader
from meterline.settings import ExportSettings
from meterline.storage.meters_store import MetersStore
from meterline.storage.processing_store import ProcessingLagStore
from meterline.storage.reports_store import Finish, ReportsStore, StoredReport
from meterline.storage.usage_store import UsageStore
from meterline.webhooks import DEADLINE_MARGIN_SECONDS, EndpointPolicy, RetryPolicy, post_webhook

# A run still "running" this long after its exporter started is taken over by a redelivered request
# (the exporter's timeout is 5 minutes).
STALE_RUN_MS = 10 * 60_000
# SQS messages are limited to 256 KiB; a larger webhook body is refused (and reported) rather than sent.
MAX_MESSAGE_BYTES = 250_000
# What an attempt needs besides the POST itself: reading the delivery, the report and its secrets, and
# recording the outcome (a few DynamoDB, KMS and SQS calls, retried by the SDK when throttled).
RECORDING_ALLOWANCE_SECONDS = 1.5
DEAD_LETTERED = "dead-lettered: the sender failed on it (crashed or timed out) every time"
# A postponed message comes back this much later, to an invocation with time to spare.
POSTPONE_DELAY_SECONDS = 1


class CountingIncomplete(Exception):
    """The report's meter is still being backfilled, or the stream processor may not be past the
    window's end: retry the export `delay_seconds` later."""

    def __init__(self, reason: str, delay_seconds: int) -> None:
        super().__init__(reason)
        self.delay_seconds = delay_seconds


class NoTimeForAttempt(Exception):
    """The invocation has too little time left for one more attempt: SQS delivers the message again later
    (it is not an attempt: nothing was sent or recorded)."""


@dataclass
class Exporter:
    reports: ReportsStore
    meters: MetersStore
    usage: UsageStore
    queues: ExportQueues
    settings: ExportSettings
    lag: ProcessingLagStore
    lag_policy: LagPolicy

    def _lag_samples(self, now_ms: int) -> list[LagSample]:
        return self.lag.samples(self.lag_policy.samples_since(now_ms))

    def _completeness(self, window_end_ms: int, now_ms: int, samples: list[LagSample]) -> Completeness | Readiness:
        """FINAL when processing is past the window's end, PROVISIONAL once the window has waited the longest
        hold, else the Readiness saying when to ask again."""
        ready = readiness(window_end_ms, now_ms, samples, self.lag_policy)
        if ready.final:
            return Completeness.FINAL
        if now_ms - window_end_ms >= self.lag_policy.settle_ms + self.settings.max_hold_ms:
            return Completeness.PROVISIONAL
        return ready

    def run_scheduled(self, namespace: str, slug: str, report_id: str, now_ms: int) -> list[Run]:
        """A schedule fired: export the windows that closed since the last export. Returns the runs made."""
        stored = self.reports.get(namespace, slug)
        if stored is None or stored.report.id != report_id:
            return []  # the report was deleted (or re-created): this firing belonged to the old one
        report = stored.report
        meter = self._meter(namespace, report)
        if _backfilling(meter):
            return []  # the windows stay unclaimed: the first firing after the backfill catches them up
        runs = []
        samples = self._lag_samples(now_ms)
        last = self.reports.last_claim(namespace, report_id)
        if last is not None:
            # An exporter that died mid-run (a timeout) left its run "running": take it over once stale.
            stuck = self.reports.get_run(namespace, report_id, last[1])
            if (stuck is not None and stuck.phase is RunPhase.RUNNING
                    and self.reports.start_run(namespace, stuck, now_ms, stale_before_ms=now_ms - STALE_RUN_MS)):
                completeness = self._completeness(stuck.window_end_ms, now_ms, samples)
                self._export(namespace, report, meter, stuck, now_ms, resumed=True,
                             completeness=completeness if isinstance(completeness, Completeness)
                             else Completeness.PROVISIONAL)
                runs.append(stuck)
        windows = closed_windows(WindowGrid.of(report), now_ms, created_ms=report.created_ms,
                                 last_start_ms=last[0] if last else None, bound=self.settings.catch_up_windows)
        for position, window in enumerate(windows):
            trigger = Trigger.SCHEDULE if position == len(windows) - 1 else Trigger.CATCH_UP
            completeness = self._completeness(window.end_ms, now_ms, samples)
            ready = isinstance(completeness, Completeness)
            run = Run(id=new_ulid(), report_id=report_id, window_start_ms=window.start_ms,
                      window_end_ms=window.end_ms, trigger=trigger,
                      phase=RunPhase.RUNNING if ready else RunPhase.WAITING,
                      requested_ms=now_ms, started_ms=now_ms if ready else None)
            if not self.reports.claim_window(namespace, run):  # a duplicate firing already has it
                continue
            if isinstance(completeness, Completeness):
                self._export(namespace, report, meter, run, now_ms, resumed=False, completeness=completeness)
            else:
                self.queues.request_export(ExportRequest(namespace=namespace, report=slug, report_id=report_id,
                                                         run_id=run.id),
                                           delay_seconds=_delay_seconds(completeness.retry_at_ms, now_ms))
            runs.append(run)
        return runs

    def handle_request(self, request: ExportRequest, now_ms: int) -> tuple[str, Run | None]:
        """A manual run's request from the queue: ("exported", run), ("skipped", None) when there was
        nothing (left) to do, or ("waiting", None) while the report's meter backfills: then the request
        is queued again for later, as a new message, so waiting never uses up the queue's receive count
        (which dead-letters requests that keep crashing)."""
        try:
            run = self.run_requested(request.namespace, request.report_id, request.run_id, request.report, now_ms)
        except CountingIncomplete as waiting:
            self.queues.request_export(request, delay_seconds=waiting.delay_seconds)
            return "waiting", None
        return ("exported", run) if run is not None else ("skipped", None)

    def run_requested(self, namespace: str, report_id: str, run_id: str, slug: str, now_ms: int) -> Run | None:
        """A manual run's request arrived (possibly again): export its window unless already done."""
        run = self.reports.get_run(namespace, report_id, run_id)
        if run is None:
            return None
        resumed = run.phase is RunPhase.RUNNING
        stored = self.reports.get(namespace, slug)
        meter = self._meter(namespace, stored.report) if stored is not None else None
        if _backfilling(meter):
            assert stored is not None
            raise CountingIncomplete(f"meter {stored.report.meter_id_or_slug!r} is still backfilling; "
                                     "the request is retried", self.settings.backfill_wait_seconds)
        live = stored is not None and stored.report.id == report_id
        if not live or (run.trigger is Trigger.MANUAL and now_ms < run.window_end_ms):
            # a window that has not ended yet is exported as counted so far, when asked for
            completeness: Completeness | Readiness = Completeness.PROVISIONAL
        else:
            completeness = self._completeness(run.window_end_ms, now_ms, self._lag_samples(now_ms))
        if isinstance(completeness, Readiness) and run.phase is not RunPhase.RUNNING:
            raise CountingIncomplete("the stream processor may not be past the window's end; the request is "
                                     "retried", _delay_seconds(completeness.retry_at_ms, now_ms))
        if not self.reports.start_run(namespace, run, now_ms, stale_before_ms=now_ms - STALE_RUN_MS):
            return None
        if stored is None or stored.report.id != report_id:
            self.reports.end_export(namespace, run, subjects=0, now_ms=now_ms, error="the report was deleted")
            return run
        self._export(namespace, stored.report, meter, run, now_ms, resumed=resumed,
                     completeness=completeness if isinstance(completeness, Completeness) else Completeness.PROVISIONAL)
        return run

    def _meter(self, namespace: str, report: Report) -> Meter | None:
        found = self.meters.find(namespace, report.meter_id_or_slug)
        return found.meter if found else None

    def _export(self, namespace: str, report: Report, meter: Meter | None, run: Run, now_ms: int, *,
                resumed: bool, completeness: Completeness) -> None:
        if meter is None:
            self.reports.end_export(namespace, run, subjects=0, now_ms=now_ms,
                                    error=f"meter {report.meter_id_or_slug!r} no longer exists")
            return
        window = Window(run.window_start_ms, run.window_end_ms)
        try:
            query = UsageQuery(from_ms=window.start_ms, to_ms=window.end_ms, time_zone=report.query.window_time_zone,
                               group_by=[SUBJECT, *group_keys(report)])
            usage = filtered_usage(report, UsageReader(self.usage).query(namespace, meter, query, now_ms))
            known = self.reports.delivery_subjects(namespace, run) if resumed else set()
            deliveries = [Delivery(subject, webhook_id(run.id, subject)) for subject in sorted(usage)]
            self.reports.add_deliveries(namespace, run, [d for d in deliveries if d.subject not in known], now_ms)
            messages: list[DeliveryMessage] = []
            oversized: list[DeliveryMessage] = []
            for delivery in deliveries:
                message = DeliveryMessage(
                    namespace=namespace, report=report.slug, report_id=run.report_id, run_id=run.id,
                    subject=delivery.subject, webhook_id=delivery.webhook_id, attempt=1,
                    payload=webhook_payload(report, meter, window, delivery.subject, usage[delivery.subject],
                                            completeness),
                )
                too_big = len(message.body().encode()) > MAX_MESSAGE_BYTES
                (oversized if too_big else messages).append(message)
            self.queues.enqueue_deliveries(messages)
            self.reports.end_export(namespace, run, subjects=len(deliveries), now_ms=now_ms,
                                    completeness=completeness)
            for message in oversized:
                self.reports.finish_delivery(
                    namespace, run.report_id, run.id, message.subject, succeeded=False, attempt=0,
                    status_code=None, error=f"the webhook body exceeds {MAX_MESSAGE_BYTES} bytes", now_ms=now_ms)
        except Exception as exc:
            # Recorded so the run history says what happened; the window can be re-run manually.
            self.reports.end_export(namespace, run, subjects=0, now_ms=now_ms, error=f"export failed: {exc}")
            raise


def _delay_seconds(retry_at_ms: int, now_ms: int) -> int:
    """Until `retry_at_ms`, in whole seconds (the queue caps a delay at SQS's 15 minutes: a longer wait
    takes several hops)."""
    return max(1, -(-(retry_at_ms - now_ms) // 1000))


def _backfilling(meter: Meter | None) -> bool:
    """A meter whose backfill has not finished would export partial numbers."""
    backfill = meter.backfill if meter else None
    return backfill is not None and backfill.status in (BackfillState.PENDING, BackfillState.RUNNING)


@dataclass
class WebhookSender:
    reports: ReportsStore
    queues: ExportQueues
    retry: RetryPolicy
    endpoint_policy: EndpointPolicy
    secrets: SigningSecrets = field(default_factory=SigningSecrets)
    # Decrypted secrets (current, previous) per (report id, report version): a rotation bumps the version.
    _secrets: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Inside batch(): the successful deliveries to record at its end, and the reports read so far.
    _succeeded: list[Finish] | None = None
    _reports: dict[tuple[str, str], StoredReport | None] = field(default_factory=dict)

    @contextlib.contextmanager
    def batch(self, clock: Callable[[], int]) -> Iterator[None]:
        """One invocation's messages: each report is read once, and the successful deliveries are ended
        and counted together when the batch is done (ReportsStore.finish_deliveries: 2(N + 1) write units
        instead of 4N). Failures are recorded at once (a dead-lettered one must be ended before the dead-
        letter queue's consumer sees it). If recording the successes fails, so does the invocation: SQS
        delivers the messages again, and their receivers get the same webhook ids again."""
        self._succeeded, self._reports = [], {}
        try:
            yield
            self.reports.finish_deliveries(self._succeeded, clock())
        finally:
            self._succeeded, self._reports = None, {}

    def _report(self, namespace: str, slug: str) -> StoredReport | None:
        if self._succeeded is None:
            return self.reports.get(namespace, slug)
        if (namespace, slug) not in self._reports:
            self._reports[(namespace, slug)] = self.reports.get(namespace, slug)
        return self._reports[(namespace, slug)]

    @property
    def attempt_budget_ms(self) -> int:
        """The most one attempt can take: the webhook's timeout, the margin its deadline allows, and the
        reads and writes around it."""
        seconds = self.retry.timeout_seconds + DEADLINE_MARGIN_SECONDS + RECORDING_ALLOWANCE_SECONDS
        return int(seconds * 1000)

    def deliver(self, message: DeliveryMessage, now_ms: int, remaining_ms: int | None = None) -> str:
        """Attempt one delivery. Returns what happened: succeeded, retrying, failed or duplicate. With
        `remaining_ms` (the invocation's time left) below `attempt_budget_ms`, raises NoTimeForAttempt
        before doing anything, so one slow receiver cannot make the rest of a batch time the function out."""
        if remaining_ms is not None and remaining_ms < self.attempt_budget_ms:
            raise NoTimeForAttempt(f"{remaining_ms} ms left, an attempt may take {self.attempt_budget_ms} ms")
        key = (message.namespace, message.report_id, message.run_id, message.subject)
        if self._succeeded is not None and any(key == finish.key for finish in self._succeeded):
            return "duplicate"  # twice in one batch: it succeeded a moment ago
        delivery = self.reports.get_delivery(*key)
        if delivery is None or delivery.status.terminal:
            return "duplicate"  # redelivered after it ended (or its run expired)
        stored = self._report(message.namespace, message.report)
        if stored is None or stored.report.id != message.report_id:
            self.reports.finish_delivery(*key, succeeded=False, attempt=message.attempt, status_code=None,
                                         error="the report was deleted", now_ms=now_ms)
            return "failed"
        attempt = post_webhook(
            stored.report.endpoint.url, orjson.dumps(message.payload), webhook_id=message.webhook_id,
            secret=self._secrets_for(message.namespace, stored, now_ms),
            headers=endpoint_headers(self.secrets, message.namespace, stored),
            policy=self.endpoint_policy, timeout_s=self.retry.timeout_seconds,
        )
        if attempt.ok:
            if self._succeeded is not None:
                self._succeeded.append(Finish(*key, succeeded=True, attempt=message.attempt,
                                              status_code=attempt.status_code, error=None))
            else:
                self.reports.finish_delivery(*key, succeeded=True, attempt=message.attempt,
                                             status_code=attempt.status_code, error=None, now_ms=now_ms)
            return "succeeded"
        if self.retry.gives_up_after(message.attempt):
            # Ended before it is dead-lettered: the sender, consuming the dead-letter queue too, must find it
            # ended (fail_dead_lettered) and leave its last error as it is.
            self.reports.finish_delivery(*key, succeeded=False, attempt=message.attempt,
                                         status_code=attempt.status_code, error=attempt.error, now_ms=now_ms)
            self.queues.dead_letter(message, attempt.error, attempt.status_code)
            return "failed"
        self.reports.record_attempt(*key, attempt=message.attempt, status_code=attempt.status_code,
                                    error=attempt.error, now_ms=now_ms)
        self.queues.retry_delivery(message.model_copy(update={"attempt": message.attempt + 1}),
                                   self.retry.delay_seconds(message.attempt))
        return "retrying"

    def postpone(self, message: DeliveryMessage) -> None:
        """Put a message this invocation has no time for back on the queue, untried and as it was."""
        self.queues.retry_delivery(message, POSTPONE_DELAY_SECONDS)

    def fail_dead_lettered(self, message: DeliveryMessage, now_ms: int) -> str:
        """A message from the delivery dead-letter queue: end its delivery as failed unless it has ended
        (the sender dead-letters a delivery itself after ending it; SQS's redrive moves one the sender
        never got through). Nothing is posted, and the attempts recorded so far stay. Returns failed or
        duplicate."""
        key = (message.namespace, message.report_id, message.run_id, message.subject)
        delivery = self.reports.get_delivery(*key)
        if delivery is None or delivery.status.terminal:
            return "duplicate"
        ended = self.reports.finish_delivery(*key, succeeded=False, attempt=delivery.attempts,
                                             status_code=delivery.last_status_code, error=DEAD_LETTERED,
                                             now_ms=now_ms)
        return "failed" if ended else "duplicate"

    def _secrets_for(self, namespace: str, stored: StoredReport, now_ms: int) -> list[str]:
        """The current secret, and the previous one while a rotation's grace period lasts."""
        report_id = stored.report.id
        assert report_id is not None
        with self._lock:
            cached = self._secrets.get((report_id, stored.version))
        if cached is None:
            cached = [self.secrets.decrypt(namespace, report_id, stored.secret)]
            if stored.previous_secret is not None:
                cached.append(self.secrets.decrypt(namespace, report_id, stored.previous_secret))
            with self._lock:
                self._secrets[(report_id, stored.version)] = cached
        return cached if now_ms < stored.previous_until_ms else cached[:1]
