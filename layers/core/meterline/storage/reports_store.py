"""Usage export reports, their runs, deliveries and window claims, in the catalog table.

Layout (namespace `ns`, report id `rid` — runs hang off the id, so a report re-created under the same slug
starts a fresh history):
- report:   pk "{ns}#report", sk "slug#{slug}": `report` (the API shape, JSON), `id`, `version` (every
            replace increments and is conditioned on it), `secret` (the signing secret, KMS ciphertext).
- run:      pk "{ns}#report#{rid}#runs", sk "run#{runId}" — run ids are ULIDs, so the partition read
            backwards lists runs newest first.
- delivery: same pk, sk "run#{runId}#d#{subject}": one per subject of the run.
- claim:    pk "{ns}#report#{rid}#windows", sk the window start (15 digits of epoch ms): written with the
            scheduled run in one transaction, conditioned on not existing, so a window runs at most once.
Runs, deliveries and claims expire (TTL `expiresAt`).
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from meterline.domain.exports import Delivery, DeliveryStatus, Run, RunPhase, Trigger
from meterline.domain.processing_lag import Completeness
from meterline.domain.reports import Report
from meterline.domain.timeutil import DAY_S
from meterline.storage.dynamo import BATCH_WRITE_ITEMS, TableAdapter, concurrently
from meterline.storage.tables import CATALOG_TABLE

# DynamoDB's limit on the items of one TransactWriteItems.
MAX_TRANSACTION_ITEMS = 100


@dataclass(frozen=True)
class Finish:
    """How one delivery ended: its key, outcome and last attempt (ReportsStore.finish_deliveries)."""

    namespace: str
    report_id: str
    run_id: str
    subject: str
    succeeded: bool
    attempt: int
    status_code: int | None
    error: str | None

    @property
    def run(self) -> tuple[str, str, str]:
        return self.namespace, self.report_id, self.run_id

    @property
    def key(self) -> tuple[str, str, str, str]:
        return *self.run, self.subject


def reports_partition(namespace: str) -> str:
    return f"{namespace}#report"


def report_key(namespace: str, slug: str) -> dict[str, Any]:
    return {"pk": {"S": reports_partition(namespace)}, "sk": {"S": f"slug#{slug}"}}


def runs_partition(namespace: str, report_id: str) -> str:
    return f"{namespace}#report#{report_id}#runs"


def run_key(namespace: str, report_id: str, run_id: str) -> dict[str, Any]:
    return {"pk": {"S": runs_partition(namespace, report_id)}, "sk": {"S": f"run#{run_id}"}}


def delivery_key(namespace: str, report_id: str, run_id: str, subject: str) -> dict[str, Any]:
    return {"pk": {"S": runs_partition(namespace, report_id)}, "sk": {"S": f"run#{run_id}#d#{subject}"}}


def claims_partition(namespace: str, report_id: str) -> str:
    return f"{namespace}#report#{report_id}#windows"


@dataclass(frozen=True)
class StoredReport:
    report: Report
    version: int
    secret: bytes  # ciphertext
    # The secret before the last rotation and until when deliveries are also signed with it.
    previous_secret: bytes | None = None
    previous_until_ms: int = 0
    # The endpoint's headers (JSON), encrypted like the secret; None: none, or a report stored before
    # headers were encrypted (its report JSON then holds them).
    headers: bytes | None = None

    @property
    def id(self) -> str:
        """A stored report always has its id."""
        assert self.report.id is not None
        return self.report.id


def _stored_report(item: dict[str, Any]) -> StoredReport:
    return StoredReport(Report.model_validate(orjson.loads(item["report"]["S"])), int(item["version"]["N"]),
                        item["secret"]["B"], item.get("previousSecret", {}).get("B"),
                        int(item.get("previousSecretUntil", {}).get("N", 0)), item.get("headers", {}).get("B"))


def _n(item: dict[str, Any], name: str) -> int | None:
    return int(item[name]["N"]) if name in item else None


def _s(item: dict[str, Any], name: str) -> str | None:
    return item[name]["S"] if name in item else None


def _run(item: dict[str, Any]) -> Run:
    return Run(
        id=item["runId"]["S"],
        report_id=item["reportId"]["S"],
        window_start_ms=int(item["windowStart"]["N"]),
        window_end_ms=int(item["windowEnd"]["N"]),
        trigger=Trigger(item["trigger"]["S"]),
        phase=RunPhase(item["phase"]["S"]),
        requested_ms=int(item["requestedAt"]["N"]),
        started_ms=_n(item, "startedAt"),
        exported_ms=_n(item, "exportedAt"),
        subjects=_n(item, "subjects") or 0,
        succeeded=_n(item, "succeeded") or 0,
        failed=_n(item, "failed") or 0,
        error=_s(item, "error"),
        completeness=Completeness(item["completeness"]["S"]) if "completeness" in item else None,
    )


def _delivery(item: dict[str, Any]) -> Delivery:
    return Delivery(
        subject=item["subject"]["S"],
        webhook_id=item["webhookId"]["S"],
        status=DeliveryStatus(item["status"]["S"]),
        attempts=_n(item, "attempts") or 0,
        last_status_code=_n(item, "lastStatus"),
        last_error=_s(item, "lastError"),
        last_attempt_ms=_n(item, "lastAttemptAt"),
        finished_ms=_n(item, "finishedAt"),
    )


class ReportsStore(TableAdapter):
    spec = CATALOG_TABLE

    def __init__(self, client: Any = None, table: str | None = None, *, run_retention_days: int = 90) -> None:
        super().__init__(client, table)
        self.run_retention_s = run_retention_days * DAY_S

    def _expires(self, now_ms: int) -> dict[str, Any]:
        return {"N": str(now_ms // 1000 + self.run_retention_s)}

    # --- reports ---------------------------------------------------------------------------------------

    def _report_item(self, namespace: str, report: Report, version: int, secret: bytes,
                     previous: tuple[bytes | None, int] = (None, 0), headers: bytes | None = None) -> dict[str, Any]:
        assert report.id is not None, "a stored report needs an id"
        item = {
            **report_key(namespace, report.slug),
            "id": {"S": report.id},
            "version": {"N": str(version)},
            "report": {"S": orjson.dumps(report.to_api()).decode()},
            "secret": {"B": secret},
        }
        if previous[0] is not None:
            item["previousSecret"], item["previousSecretUntil"] = {"B": previous[0]}, {"N": str(previous[1])}
        if headers is not None:
            item["headers"] = {"B": headers}
        return item

    def create(self, namespace: str, report: Report, secret: bytes, headers: bytes | None = None) -> bool:
        """False (nothing written) if the namespace already has a report with this slug."""
        try:
            self.client.put_item(TableName=self.table, Item=self._report_item(namespace, report, 1, secret,
                                                                                headers=headers),
                                 ConditionExpression="attribute_not_exists(pk)")
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def get(self, namespace: str, slug: str) -> StoredReport | None:
        item = self.client.get_item(TableName=self.table, Key=report_key(namespace, slug),
                                    ConsistentRead=True).get("Item")
        return _stored_report(item) if item else None

    def list(self, namespace: str) -> list[StoredReport]:
        return [_stored_report(item) for item in self.query_items({
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :slug)",
            "ExpressionAttributeValues": {":pk": {"S": reports_partition(namespace)}, ":slug": {"S": "slug#"}},
            "ConsistentRead": True,
        })]

    def take_manual_run(self, namespace: str, hour_ms: int, limit: int) -> bool:
        """Count one manual run in the namespace's UTC hour; False (nothing counted) when `limit` runs
        were counted already. The counter item expires after a day."""
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"pk": {"S": f"{namespace}#runquota"}, "sk": {"S": str(hour_ms)}},
                UpdateExpression="ADD runs :one SET expiresAt = :expires",
                ConditionExpression="attribute_not_exists(runs) OR runs < :limit",
                ExpressionAttributeValues={":one": {"N": "1"}, ":limit": {"N": str(limit)},
                                           ":expires": {"N": str(hour_ms // 1000 + DAY_S)}},
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def all_reports(self) -> builtins.list[tuple[str, StoredReport]]:
        """Every report of every namespace (a Scan: the catalog is small; used when schedules are rebuilt)."""
        items = self.scan_items({"ConsistentRead": True, "FilterExpression": "begins_with(sk, :slug)",
                                 "ExpressionAttributeValues": {":slug": {"S": "slug#"}}})
        return [(item["pk"]["S"][: -len("#report")], _stored_report(item))
                for item in items if item["pk"]["S"].endswith("#report")]

    def replace(self, namespace: str, stored: StoredReport, report: Report, secret: bytes | None = None,
                previous_until_ms: int = 0, headers: bytes | None | bool = True) -> bool:
        """Replace the version the caller read; False if it changed (or was deleted) since. A new `secret`
        keeps the one it replaces as the previous secret until `previous_until_ms`. `headers`: new
        encrypted headers, None for none, True (the default) to keep the stored ones."""
        previous = ((stored.secret, previous_until_ms) if secret is not None
                    else (stored.previous_secret, stored.previous_until_ms))
        kept = stored.headers if headers is True else headers
        item = self._report_item(namespace, report, stored.version + 1, secret or stored.secret, previous,
                                 kept if isinstance(kept, bytes) else None)
        try:
            self.client.put_item(TableName=self.table, Item=item,
                                 ConditionExpression="version = :v AND id = :id",
                                 ExpressionAttributeValues={":v": {"N": str(stored.version)},
                                                            ":id": {"S": stored.report.id}})
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def delete(self, namespace: str, slug: str, report_id: str) -> bool:
        try:
            self.client.delete_item(TableName=self.table, Key=report_key(namespace, slug),
                                    ConditionExpression="id = :id",
                                    ExpressionAttributeValues={":id": {"S": report_id}})
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    # --- runs ------------------------------------------------------------------------------------------

    def _run_item(self, namespace: str, run: Run) -> dict[str, Any]:
        item = {
            **run_key(namespace, run.report_id, run.id),
            "runId": {"S": run.id},
            "reportId": {"S": run.report_id},
            "windowStart": {"N": str(run.window_start_ms)},
            "windowEnd": {"N": str(run.window_end_ms)},
            "trigger": {"S": run.trigger.value},
            "phase": {"S": run.phase.value},
            "requestedAt": {"N": str(run.requested_ms)},
            "expiresAt": self._expires(run.requested_ms),
        }
        if run.started_ms is not None:
            item["startedAt"] = {"N": str(run.started_ms)}
        return item

    def claim_window(self, namespace: str, run: Run) -> bool:
        """Record a scheduled run of its window, unless the window already has one (then False)."""
        claim = {
            "pk": {"S": claims_partition(namespace, run.report_id)},
            "sk": {"S": f"{run.window_start_ms:015d}"},
            "runId": {"S": run.id},
            "expiresAt": self._expires(run.requested_ms),
        }
        return not self._transact_refused([
            {"Put": {"TableName": self.table, "Item": claim, "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Put": {"TableName": self.table, "Item": self._run_item(namespace, run)}},
        ], 1)

    def last_claim(self, namespace: str, report_id: str) -> tuple[int, str] | None:
        """(window start, run id) of the latest window a scheduled run has claimed."""
        items = self.client.query(
            TableName=self.table, KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": claims_partition(namespace, report_id)}},
            ScanIndexForward=False, Limit=1, ConsistentRead=True,
        ).get("Items", [])
        return (int(items[0]["sk"]["S"]), items[0]["runId"]["S"]) if items else None

    def create_run(self, namespace: str, run: Run) -> None:
        self.client.put_item(TableName=self.table, Item=self._run_item(namespace, run),
                             ConditionExpression="attribute_not_exists(pk)")

    def get_run(self, namespace: str, report_id: str, run_id: str) -> Run | None:
        item = self.client.get_item(TableName=self.table, Key=run_key(namespace, report_id, run_id),
                                    ConsistentRead=True).get("Item")
        return _run(item) if item else None

    def start_run(self, namespace: str, run: Run, now_ms: int, stale_before_ms: int) -> bool:
        """Move a run to running: from pending or waiting, or from running when its exporter started before
        `stale_before_ms` (it crashed or timed out; this invocation takes over). False otherwise."""
        try:
            self.client.update_item(
                TableName=self.table, Key=run_key(namespace, run.report_id, run.id),
                UpdateExpression="SET phase = :running, startedAt = :now",
                ConditionExpression="phase IN (:pending, :waiting) OR (phase = :running AND startedAt < :stale)",
                ExpressionAttributeValues={":running": {"S": RunPhase.RUNNING.value}, ":now": {"N": str(now_ms)},
                                           ":pending": {"S": RunPhase.PENDING.value},
                                           ":waiting": {"S": RunPhase.WAITING.value},
                                           ":stale": {"N": str(stale_before_ms)}},
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        run.phase, run.started_ms = RunPhase.RUNNING, now_ms
        return True

    def end_export(self, namespace: str, run: Run, *, subjects: int, now_ms: int, error: str | None = None,
                   completeness: Completeness | None = None) -> None:
        """The exporter's last word on a run: delivering `subjects` webhooks (final or provisional numbers),
        or failed with `error`."""
        values: dict[str, Any] = {":phase": {"S": (RunPhase.FAILED if error else RunPhase.DELIVERING).value},
                                  ":subjects": {"N": str(subjects)}, ":now": {"N": str(now_ms)}}
        update = "SET phase = :phase, subjects = :subjects, exportedAt = :now"
        if completeness is not None:
            update += ", completeness = :completeness"
            values[":completeness"] = {"S": completeness.value}
            run.completeness = completeness
        if error:
            update += ", #error = :error"
            values[":error"] = {"S": error[:1000]}
        self.client.update_item(
            TableName=self.table, Key=run_key(namespace, run.report_id, run.id), UpdateExpression=update,
            ExpressionAttributeValues=values, **({"ExpressionAttributeNames": {"#error": "error"}} if error else {}),
        )

    def list_runs(self, namespace: str, report_id: str, limit: int) -> builtins.list[Run]:
        """The newest `limit` runs with their deliveries. Deliveries sort after their run's item, so
        reading backwards meets them first."""
        runs: builtins.list[Run] = []
        deliveries: builtins.list[Delivery] = []
        request: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": runs_partition(namespace, report_id)}},
            "ScanIndexForward": False,
        }
        for item in self.query_items(request):
            if "#d#" in item["sk"]["S"]:
                deliveries.append(_delivery(item))
                continue
            run = _run(item)
            run.deliveries, deliveries = deliveries, []
            runs.append(run)
            if len(runs) == limit:
                break
        return runs

    # --- deliveries ------------------------------------------------------------------------------------

    def delivery_subjects(self, namespace: str, run: Run) -> set[str]:
        return {item["subject"]["S"] for item in self.query_items({
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": {"S": runs_partition(namespace, run.report_id)},
                                          ":prefix": {"S": f"run#{run.id}#d#"}},
            "ProjectionExpression": "subject",
            "ConsistentRead": True,
        })}

    def add_deliveries(self, namespace: str, run: Run, deliveries: Iterable[Delivery], now_ms: int) -> None:
        items = [{
            **delivery_key(namespace, run.report_id, run.id, d.subject),
            "subject": {"S": d.subject},
            "webhookId": {"S": d.webhook_id},
            "status": {"S": d.status.value},
            "attempts": {"N": "0"},
            "expiresAt": self._expires(now_ms),
        } for d in deliveries]
        concurrently(self.put_batch, [items[i:i + BATCH_WRITE_ITEMS] for i in range(0, len(items), BATCH_WRITE_ITEMS)])

    def get_delivery(self, namespace: str, report_id: str, run_id: str, subject: str) -> Delivery | None:
        item = self.client.get_item(TableName=self.table, Key=delivery_key(namespace, report_id, run_id, subject),
                                    ConsistentRead=True).get("Item")
        return _delivery(item) if item else None

    def record_attempt(self, namespace: str, report_id: str, run_id: str, subject: str, *, attempt: int,
                       status_code: int | None, error: str | None, now_ms: int) -> bool:
        """A failed attempt that will be retried. False if the delivery has already ended."""
        names, values, update = self._attempt_update(attempt, status_code, error, now_ms)
        values[":retrying"] = {"S": DeliveryStatus.RETRYING.value}
        try:
            self.client.update_item(
                TableName=self.table, Key=delivery_key(namespace, report_id, run_id, subject),
                UpdateExpression=update + ", #status = :retrying",
                ConditionExpression="attribute_exists(pk) AND NOT #status IN (:succeeded, :failed)",
                ExpressionAttributeNames=names, ExpressionAttributeValues=values,
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def finish_delivery(self, namespace: str, report_id: str, run_id: str, subject: str, *, succeeded: bool,
                        attempt: int, status_code: int | None, error: str | None, now_ms: int) -> bool:
        """End a delivery and count it on its run, in one transaction: a redelivered message cannot count
        twice. False if it had already ended."""
        return bool(self.finish_deliveries([Finish(namespace, report_id, run_id, subject, succeeded, attempt,
                                                   status_code, error)], now_ms))

    def finish_deliveries(self, finishes: builtins.list[Finish], now_ms: int) -> set[int]:
        """End several deliveries and count them on their runs, in as few transactions as fit (a
        transaction of up to 100 items: the deliveries, then one counter update per run), so that a batch of
        N deliveries of one run costs 2(N + 1) write units instead of 4N. A delivery that has already ended
        (a redelivered message) cancels the transaction: it is left out and the rest written again; of two
        finishes of one delivery, the first counts. Returns the positions in `finishes` of those ended here."""
        ended: set[int] = set()
        first: dict[tuple[str, str, str, str], int] = {}
        for position, finish in enumerate(finishes):  # a transaction takes one operation per item
            first.setdefault(finish.key, position)
        pending = sorted(first.values())
        while pending:
            chunk: builtins.list[int] = []
            runs: set[tuple[str, str, str]] = set()
            for position in pending:
                run = finishes[position].run
                if len(chunk) + 1 + len(runs | {run}) > MAX_TRANSACTION_ITEMS:
                    break
                chunk.append(position)
                runs.add(run)
            pending = pending[len(chunk):]
            while chunk:
                items = [{"Update": self._finish_update(finishes[position], now_ms)} for position in chunk]
                counts: dict[tuple[str, str, str], list[int]] = {}
                for position in chunk:
                    tally = counts.setdefault(finishes[position].run, [0, 0])
                    tally[0 if finishes[position].succeeded else 1] += 1
                items.extend({"Update": self._count_update(run, succeeded, failed)}
                             for run, (succeeded, failed) in counts.items())
                refused = self._transact_refused(items, len(chunk))
                if not refused:
                    ended.update(chunk)
                    break
                chunk = [position for i, position in enumerate(chunk) if i not in refused]
        return ended

    def _finish_update(self, finish: Finish, now_ms: int) -> dict[str, Any]:
        names, values, update = self._attempt_update(finish.attempt, finish.status_code, finish.error, now_ms)
        outcome = DeliveryStatus.SUCCEEDED if finish.succeeded else DeliveryStatus.FAILED
        values[":outcome"] = {"S": outcome.value}
        return {
            "TableName": self.table,
            "Key": delivery_key(*finish.key),
            "UpdateExpression": update + ", #status = :outcome, finishedAt = :now",
            "ConditionExpression": "attribute_exists(pk) AND NOT #status IN (:succeeded, :failed)",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }

    def _count_update(self, run: tuple[str, str, str], succeeded: int, failed: int) -> dict[str, Any]:
        counts = {name: count for name, count in (("succeeded", succeeded), ("failed", failed)) if count}
        return {
            "TableName": self.table,
            "Key": run_key(*run),
            "UpdateExpression": "ADD " + ", ".join(f"{name} :{name}" for name in counts),
            "ExpressionAttributeValues": {f":{name}": {"N": str(count)} for name, count in counts.items()},
        }

    @staticmethod
    def _attempt_update(attempt: int, status_code: int | None, error: str | None, now_ms: int
                        ) -> tuple[dict[str, str], dict[str, Any], str]:
        names = {"#status": "status"}
        values: dict[str, Any] = {
            ":attempts": {"N": str(attempt)}, ":now": {"N": str(now_ms)},
            ":succeeded": {"S": DeliveryStatus.SUCCEEDED.value}, ":failed": {"S": DeliveryStatus.FAILED.value},
        }
        sets = ["attempts = :attempts", "lastAttemptAt = :now"]
        removes = []
        if status_code is None:
            removes.append("lastStatus")
        else:
            sets.append("lastStatus = :code")
            values[":code"] = {"N": str(status_code)}
        if error is None:
            removes.append("lastError")
        else:
            sets.append("lastError = :error")
            values[":error"] = {"S": error[:1000]}
        update = "SET " + ", ".join(sets)
        # REMOVE must come after every SET clause; callers append ", #status = ..." to the SET list.
        if removes:
            update = "REMOVE " + ", ".join(removes) + " " + update
        return names, values, update

    # --- plumbing --------------------------------------------------------------------------------------

    def _transact_refused(self, items: builtins.list[dict[str, Any]], conditioned: int) -> set[int]:
        """Write `items` in one transaction. Returns the positions, among its first `conditioned` items,
        of those whose condition failed (nothing was written then), or an empty set (all written); any
        other cancellation is raised."""
        try:
            self.client.transact_write_items(TransactItems=items)
        except self.client.exceptions.TransactionCanceledException as exc:
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            refused = {i for i, code in enumerate(reasons[:conditioned]) if code == "ConditionalCheckFailed"}
            if refused:
                return refused
            raise
        return set()

