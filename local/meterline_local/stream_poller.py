"""A local stand-in for Lambda's DynamoDB Streams event source mapping.

It reads the stream with the DynamoDB Streams API (moto) and invokes the processor with Lambda's
event shape and semantics: batches of up to `batch_size` records in order per shard, a
`batchItemFailures` response checkpoints before the first failed record and retries from it, an
invocation error bisects the batch (BisectBatchOnFunctionError) or retries it whole, and a batch that
exhausts `max_retries` goes to the on-failure destination (kept in `failed_batches` and logged).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("dev.stream")

Invoke = Callable[[dict[str, Any]], Any]


@dataclass
class StreamSettings:
    batch_size: int = 100
    max_retries: int = 10
    bisect_on_error: bool = True
    poll_interval_s: float = 0.05
    retry_delay_s: float = 0.02


@dataclass
class PollerStats:
    invocations: int = 0
    records_delivered: int = 0
    retries: int = 0
    bisects: int = 0
    failed_batches: list[list[dict[str, Any]]] = field(default_factory=list)


def lambda_record(record: dict[str, Any], stream_arn: str, region: str) -> dict[str, Any]:
    """A Streams API record in the shape Lambda hands to a function."""
    dynamodb = dict(record["dynamodb"])
    created = dynamodb.get("ApproximateCreationDateTime")
    if created is not None and not isinstance(created, (int, float)):
        dynamodb["ApproximateCreationDateTime"] = int(created.timestamp())
    return {
        "eventID": record["eventID"],
        "eventName": record["eventName"],
        "eventVersion": record.get("eventVersion", "1.1"),
        "eventSource": "aws:dynamodb",
        "awsRegion": record.get("awsRegion", region),
        "dynamodb": dynamodb,
        "eventSourceARN": stream_arn,
    }


class StreamPoller(threading.Thread):
    def __init__(self, streams_client: Any, stream_arn: str, invoke: Invoke,
                 settings: StreamSettings | None = None, region: str = "us-east-1") -> None:
        super().__init__(name="stream-poller", daemon=True)
        self.client = streams_client
        self.stream_arn = stream_arn
        self.invoke = invoke
        self.settings = settings or StreamSettings()
        self.region = region
        self.stats = PollerStats()
        self._stop_event = threading.Event()
        self._iterators: dict[str, str | None] = {}
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
        """Read every shard once and deliver what it had. Returns the number of records read."""
        total = 0
        for shard_id in self._shards():
            iterator = self._iterators.get(shard_id)
            if iterator is None:
                continue
            response = self.client.get_records(ShardIterator=iterator, Limit=1000)
            self._iterators[shard_id] = response.get("NextShardIterator")
            records = [lambda_record(r, self.stream_arn, self.region) for r in response.get("Records", [])]
            total += len(records)
            for start in range(0, len(records), self.settings.batch_size):
                self.deliver(records[start:start + self.settings.batch_size])
        return total

    def _shards(self) -> list[str]:
        description = self.client.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]
        for shard in description.get("Shards", []):
            shard_id = shard["ShardId"]
            if shard_id not in self._iterators:
                self._iterators[shard_id] = self.client.get_shard_iterator(
                    StreamArn=self.stream_arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
        return list(self._iterators)

    def deliver(self, batch: list[dict[str, Any]]) -> None:
        """Deliver one batch until every record is processed or sent to the on-failure destination."""
        pending: deque[list[dict[str, Any]]] = deque([batch])
        while pending:
            records = pending.popleft()
            attempts = 0
            while records:
                self.stats.invocations += 1
                try:
                    response = self.invoke({"Records": records})
                except Exception as exc:
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
        if attempts > self.settings.max_retries:
            log.error("batch of %d records exhausted %d retries; sent to the on-failure destination",
                      len(records), self.settings.max_retries)
            self.stats.failed_batches.append(records)
            return False
        self.stats.retries += 1
        time.sleep(self.settings.retry_delay_s * attempts)
        return True
