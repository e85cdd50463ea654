"""A local stand-in for Lambda's DynamoDB Streams event source mapping.

It reads the stream with the DynamoDB Streams API (DynamoDB Local's in the local stack, moto's in
small tests) and invokes the processor with Lambda's
event shape and semantics: batches of up to `batch_size` records in order per shard, a
`batchItemFailures` response checkpoints before the first failed record and retries from it, an
invocation error bisects the batch (BisectBatchOnFunctionError) or retries it whole, and a batch that
exhausts `max_retries` (by default: none, as the stack's mapping retries until a record is older than
`max_record_age_s`) goes to the on-failure destination (kept in `failed_batches` and logged).

Shards are read parents first, as Lambda does. Where each shard stands (the last record handed over
for good, or that the shard is finished) is a `ShardCheckpoints`, kept in a file in the local stack's
data directory: a restarted poller resumes after the last checkpointed record, so it neither skips
records nor hands over more than the batch that was in flight (which counting absorbs, as it absorbs
any redelivery).

Tests can hand it a `FaultPlan` to reproduce what AWS does to a stream consumer: an invocation that
fails after some of its DynamoDB writes landed, one that dies between writes (a timeout after partial
success), a response that reports records as failed after they were processed, and batches delivered
again after they succeeded. Faults wrap the invocation; the Lambda semantics above stay as they are.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from meterline.aws.streams import lambda_record
from meterline.processing.event_indexing import oldest_arrival_ms
from meterline.settings import LOCAL_STREAM_BATCH_SIZE
from meterline.storage.events_store import is_manifest

log = logging.getLogger("dev.stream")

Invoke = Callable[[dict[str, Any]], Any]


@dataclass
class StreamSettings:
    batch_size: int = LOCAL_STREAM_BATCH_SIZE
    max_retries: int | None = None  # None: until the batch's oldest record is `max_record_age_s` old
    max_record_age_s: float = 72_000
    bisect_on_error: bool = True
    poll_interval_s: float = 0.05
    retry_delay_s: float = 0.02
    max_retry_delay_s: float = 0.5


@dataclass
class PollerStats:
    invocations: int = 0
    records_delivered: int = 0
    retries: int = 0
    bisects: int = 0
    failed_batches: list[list[dict[str, Any]]] = field(default_factory=list)
    # with a FaultPlan: DynamoDB writes sent by each invocation, faults injected, redelivered batches
    writes: list[int] = field(default_factory=list)
    faults_injected: int = 0
    redeliveries: int = 0


# --- fault injection ---------------------------------------------------------------------------

WRITE_OPERATIONS = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})
REDELIVERY_SHAPES = ("whole", "first_half", "second_half", "shifted")


class InjectedWriteError(ClientError):
    """A write refused by an injected fault (as DynamoDB answers with a 500): it was not applied."""

    def __init__(self, operation: str, position: int) -> None:
        super().__init__({"Error": {"Code": "InternalServerError",
                                    "Message": f"injected fault: write {position} of the invocation refused"}},
                         operation)


class InvocationCrashed(BaseException):  # noqa: N818 - named for what happened, like KeyboardInterrupt
    """An injected crash: the function died right after a write landed (a timeout or a killed process
    after partial success). A BaseException, so no `except Exception` in the function can swallow it,
    as nothing in a dead process can; the poller treats it as a function error."""


@dataclass(frozen=True)
class FaultPlan:
    """Faults injected into processor invocations (tests only; a poller without a plan injects none).

    Write positions count the DynamoDB write calls (PutItem, UpdateItem, DeleteItem, BatchWriteItem,
    TransactWriteItems) an invocation sends through `client`, from 1:

    - `fail_after_writes=k`: writes 1..k land; every later write of the invocation raises
      `InjectedWriteError` before it is sent, so the invocation fails part-way (k=0: before any write).
    - `crash_after_write=k`: write k lands, then the invocation dies (`InvocationCrashed`) as if it
      timed out before hearing the answer.
    - `report_failures_from=i`: an invocation that returns reports its records from position i (0-based)
      on as failed, although it processed them; the poller retries them from there.

    Those apply to the poller's invocations numbered in `invocations` (1-based, first tries, retries,
    bisected halves and redeliveries alike; None: every invocation).

    - `redeliver`: after each batch has been delivered (succeeded or not), deliver it again in these
      shapes, in order: "whole", "first_half", "second_half", or "shifted" (its second half and the
      first half of the next batch). Lambda's delivery is at-least-once.

    `client` is the boto3 client the processor writes through: by default Meterline's process-wide
    DynamoDB client. Write hooks are registered on its event system only during an invocation, so
    nothing else may write through it meanwhile (true in tests; the local stack passes no plan).
    """

    fail_after_writes: int | None = None
    crash_after_write: int | None = None
    report_failures_from: int | None = None
    invocations: frozenset[int] | None = frozenset({1})
    redeliver: tuple[str, ...] = ()
    client: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.fail_after_writes is not None and self.fail_after_writes < 0:
            raise ValueError("fail_after_writes must be >= 0")
        if self.crash_after_write is not None and self.crash_after_write < 1:
            raise ValueError("crash_after_write must be >= 1 (write positions count from 1)")
        if self.report_failures_from is not None and self.report_failures_from < 0:
            raise ValueError("report_failures_from must be >= 0")
        unknown = [shape for shape in self.redeliver if shape not in REDELIVERY_SHAPES]
        if unknown:
            raise ValueError(f"unknown redelivery shapes {unknown}; use {REDELIVERY_SHAPES}")

    def applies_to(self, invocation: int) -> bool:
        return self.invocations is None or invocation in self.invocations

    def write_client(self) -> Any:
        if self.client is not None:
            return self.client
        from meterline.storage.dynamo import dynamodb_client

        return dynamodb_client()


def redelivery(shape: str, records: list[dict[str, Any]], start: int, size: int) -> list[dict[str, Any]]:
    """The run of records a redelivery of the batch records[start:start + size] hands over again."""
    batch = records[start:start + size]
    half = max(1, len(batch) // 2)
    if shape == "whole":
        return batch
    if shape == "first_half":
        return batch[:half]
    if shape == "second_half":
        return batch[half:] or batch
    return records[start + half:start + len(batch) + half]  # "shifted"


class _WriteFaults:
    """Counts an invocation's DynamoDB writes through botocore's event hooks and injects its faults."""

    _ids = itertools.count()

    def __init__(self, client: Any, fail_after: int | None, crash_after: int | None) -> None:
        self.events = client.meta.events
        self.fail_after = fail_after
        self.crash_after = crash_after
        self.writes = 0
        self.injected = 0
        self._lock = threading.Lock()
        self._id = f"meterline-fault-plan-{next(self._ids)}"

    def __enter__(self) -> _WriteFaults:
        self.events.register("before-call.dynamodb", self._before_call, unique_id=self._id + "-before")
        self.events.register("after-call.dynamodb", self._after_call, unique_id=self._id + "-after")
        return self

    def __exit__(self, *exc: object) -> None:
        self.events.unregister("before-call.dynamodb", unique_id=self._id + "-before")
        self.events.unregister("after-call.dynamodb", unique_id=self._id + "-after")

    def _before_call(self, event_name: str, **_: Any) -> None:
        operation = event_name.rpartition(".")[2]
        if operation not in WRITE_OPERATIONS:
            return
        with self._lock:
            if self.fail_after is not None and self.writes >= self.fail_after:
                self.injected += 1
                raise InjectedWriteError(operation, self.writes + 1)
            self.writes += 1

    def _after_call(self, event_name: str, **_: Any) -> None:
        if event_name.rpartition(".")[2] not in WRITE_OPERATIONS:
            return
        with self._lock:
            if self.crash_after is not None and self.writes == self.crash_after and not self.injected:
                self.injected += 1
                raise InvocationCrashed(f"injected crash after write {self.writes} of the invocation landed")


class ShardCheckpoints:
    """Per shard of one stream: the sequence number of the last record handed over for good, and
    whether the shard is finished (closed and read to its end). Kept in `path` (rewritten atomically on
    each change) or, without a path, in memory."""

    def __init__(self, stream_arn: str, path: Path | None = None) -> None:
        self.stream_arn = stream_arn
        self.path = path
        self._shards: dict[str, dict[str, Any]] = {}
        if path is not None and path.exists():
            try:
                saved = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise ValueError(f"stream checkpoints in {path} are unreadable ({exc}); "
                                 "move the data directory away or start with --in-memory") from exc
            # Checkpoints of another stream (a table created anew) do not apply.
            if saved.get("streamArn") == stream_arn:
                self._shards = saved.get("shards", {})

    def after(self, shard_id: str) -> str | None:
        return self._shards.get(shard_id, {}).get("after")

    def finished(self, shard_id: str) -> bool:
        return bool(self._shards.get(shard_id, {}).get("finished"))

    def advance(self, shard_id: str, sequence_number: str) -> None:
        self._shards.setdefault(shard_id, {})["after"] = sequence_number
        self._save()

    def finish(self, shard_id: str) -> None:
        self._shards.setdefault(shard_id, {})["finished"] = True
        self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"streamArn": self.stream_arn, "shards": self._shards}))
        os.replace(temporary, self.path)


class StreamPoller(threading.Thread):
    def __init__(self, streams_client: Any, stream_arn: str, invoke: Invoke,
                 settings: StreamSettings | None = None, region: str = "us-east-1",
                 faults: FaultPlan | None = None, checkpoints: ShardCheckpoints | None = None) -> None:
        super().__init__(name="stream-poller", daemon=True)
        self.client = streams_client
        self.stream_arn = stream_arn
        self.invoke = invoke
        self.settings = settings or StreamSettings()
        self.region = region
        self.faults = faults
        self.stats = PollerStats()
        self.checkpoints = checkpoints or ShardCheckpoints(stream_arn)
        self._stop_event = threading.Event()
        self._iterators: dict[str, str] = {}  # open iterators of the shards being read
        self._parents: dict[str, str | None] = {}
        self._idle = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until a poll found nothing new (used by tests and benchmarks)."""
        self._idle.clear()
        return self._idle.wait(timeout)

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                delivered = self.poll_once()
            except Exception:
                log.exception("stream poll failed")
                delivered = 0
            if delivered == 0:
                self._idle.set()
                self._stop_event.wait(self.settings.poll_interval_s)

    def poll_once(self) -> int:
        """Read every readable shard once and deliver what it had. Returns the number of records read."""
        total = 0
        for shard_id in self._readable_shards():
            if self._stop_event.is_set():
                break
            response = self._get_records(shard_id)
            if response is None:
                continue
            read = [lambda_record(r, self.stream_arn, self.region) for r in response.get("Records", [])]
            total += len(read)
            # as the deployed mapping's filter: the time index's manifests never reach the processor
            records = [r for r in read if not is_manifest(r["dynamodb"].get("NewImage", {}))]
            delivered = self.deliver_records(
                records, on_batch_done=lambda last, shard=shard_id: self.checkpoints.advance(
                    shard, last["dynamodb"]["SequenceNumber"]))
            if delivered < len(records):  # stopping: the rest is read again after a restart
                break
            if read:  # a page that ends in filtered records is done with too
                self.checkpoints.advance(shard_id, read[-1]["dynamodb"]["SequenceNumber"])
            next_iterator = response.get("NextShardIterator")
            if next_iterator:
                self._iterators[shard_id] = next_iterator
            else:  # a closed shard read to its end: its children may be read now
                del self._iterators[shard_id]
                self.checkpoints.finish(shard_id)
        return total

    def deliver_records(self, records: list[dict[str, Any]],
                        on_batch_done: Callable[[dict[str, Any]], None] | None = None) -> int:
        """Deliver a shard's records in order, in batches of `batch_size` (and redeliver each batch as the
        fault plan says); `on_batch_done` gets the last record of each batch once it is done with. Stops
        between batches when the poller is stopped; returns how many records were done with."""
        size = self.settings.batch_size
        done = 0
        for start in range(0, len(records), size):
            if self._stop_event.is_set():
                break
            batch = records[start:start + size]
            if not self.deliver(batch):
                break
            for shape in self.faults.redeliver if self.faults else ():
                self.stats.redeliveries += 1
                self.deliver(redelivery(shape, records, start, size))
            done += len(batch)
            if on_batch_done is not None:
                on_batch_done(batch[-1])
        return done

    def _get_records(self, shard_id: str) -> dict[str, Any] | None:
        """The next page of a shard. An iterator expires after 15 minutes, and DynamoDB Local calls one
        taken at the horizon of an empty shard "trimmed" once records arrive: either way the iterator is
        opened again after the checkpoint and asked once more."""
        for attempt in range(2):
            try:
                return self.client.get_records(ShardIterator=self._iterators[shard_id], Limit=1000)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code not in ("ExpiredIteratorException", "TrimmedDataAccessException") or attempt:
                    raise
                iterator = self._open_iterator(shard_id)
                if iterator is None:
                    del self._iterators[shard_id]
                    return None
                self._iterators[shard_id] = iterator
        return None

    def _describe_shards(self) -> None:
        request: dict[str, Any] = {"StreamArn": self.stream_arn}
        while True:
            description = self.client.describe_stream(**request)["StreamDescription"]
            for shard in description.get("Shards", []):
                self._parents.setdefault(shard["ShardId"], shard.get("ParentShardId"))
            last = description.get("LastEvaluatedShardId")
            if not last:
                return
            request["ExclusiveStartShardId"] = last

    def _readable_shards(self) -> list[str]:
        """The shards to read now: unfinished ones whose parent is finished or gone (trimmed), each with
        an iterator after its checkpoint (from its oldest record if it has none)."""
        self._describe_shards()
        readable = []
        for shard_id, parent in self._parents.items():
            if self.checkpoints.finished(shard_id):
                continue
            if parent in self._parents and not self.checkpoints.finished(parent):
                continue
            if shard_id not in self._iterators:
                iterator = self._open_iterator(shard_id)
                if iterator is None:
                    continue
                self._iterators[shard_id] = iterator
            readable.append(shard_id)
        return readable

    def _open_iterator(self, shard_id: str) -> str | None:
        after = self.checkpoints.after(shard_id)
        request = {"StreamArn": self.stream_arn, "ShardId": shard_id}
        try:
            if after is not None:
                return self.client.get_shard_iterator(**request, ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                                                      SequenceNumber=after)["ShardIterator"]
            return self.client.get_shard_iterator(**request, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code == "TrimmedDataAccessException":
                # The stream keeps records 24 hours; a stack stopped longer cannot count what it missed
                # from the stream. Read on from the oldest record there is and say so.
                log.error("shard %s: records after %s are no longer on the stream (kept 24 h); events stored "
                          "in between are not counted", shard_id, after)
                return self.client.get_shard_iterator(**request, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            if code == "ResourceNotFoundException":  # the shard expired meanwhile
                self.checkpoints.finish(shard_id)
                return None
            raise

    def deliver(self, batch: list[dict[str, Any]]) -> bool:
        """Deliver one batch until every record is processed or sent to the on-failure destination.
        Returns False if the poller was stopped first (the batch is then not done with)."""
        pending: deque[list[dict[str, Any]]] = deque([batch])
        while pending:
            records = pending.popleft()
            attempts = 0
            while records:
                if self._stop_event.is_set():
                    return False
                self.stats.invocations += 1
                try:
                    response = self._invoke(records)
                except (Exception, InvocationCrashed) as exc:
                    log.warning("processor failed on %d records: %s", len(records), exc)
                    if self.settings.bisect_on_error and len(records) > 1:
                        self.stats.bisects += 1
                        half = len(records) // 2
                        pending.appendleft(records[half:])
                        pending.appendleft(records[:half])
                        break
                    attempts += 1
                    if not self._may_retry(records, attempts):
                        break
                    continue
                remaining = self._after_checkpoint(records, response)
                self.stats.records_delivered += len(records) - len(remaining)
                records = remaining
                if records:
                    attempts += 1
                    if not self._may_retry(records, attempts):
                        break
        return True

    def _invoke(self, records: list[dict[str, Any]]) -> Any:
        plan = self.faults
        if plan is None:
            return self.invoke({"Records": records})
        faulted = plan.applies_to(self.stats.invocations)
        hook = _WriteFaults(plan.write_client(), plan.fail_after_writes if faulted else None,
                            plan.crash_after_write if faulted else None)
        try:
            with hook:
                response = self.invoke({"Records": records})
        finally:
            self.stats.writes.append(hook.writes)
            self.stats.faults_injected += hook.injected
        if faulted and plan.report_failures_from is not None and plan.report_failures_from < len(records):
            self.stats.faults_injected += 1
            reported = list((response or {}).get("batchItemFailures") or []) if isinstance(response, dict) else []
            reported += [{"itemIdentifier": r["dynamodb"]["SequenceNumber"]}
                         for r in records[plan.report_failures_from:]]
            response = {"batchItemFailures": reported}
        return response

    def _after_checkpoint(self, records: list[dict[str, Any]], response: Any) -> list[dict[str, Any]]:
        """Records still to process after a response: none on success; from the first reported failure
        on; all of them if the response names a record Lambda cannot find (as Lambda treats it)."""
        failures = (response or {}).get("batchItemFailures") if isinstance(response, dict) else None
        if not failures:
            return []
        positions = {r["dynamodb"]["SequenceNumber"]: i for i, r in enumerate(records)}
        try:
            first = min(positions[f["itemIdentifier"]] for f in failures)
        except (KeyError, TypeError):
            return records
        return records[first:]

    def _may_retry(self, records: list[dict[str, Any]], attempts: int) -> bool:
        limit = self.settings.max_retries
        oldest_ms = oldest_arrival_ms(records)
        too_old = oldest_ms is not None and time.time() * 1000 - oldest_ms > self.settings.max_record_age_s * 1000
        if (limit is not None and attempts > limit) or too_old:
            log.error("batch of %d records given up after %d retries; sent to the on-failure destination",
                      len(records), attempts - 1)
            self.stats.failed_batches.append(records)
            return False
        self.stats.retries += 1
        time.sleep(min(self.settings.max_retry_delay_s, self.settings.retry_delay_s * attempts))
        return True
