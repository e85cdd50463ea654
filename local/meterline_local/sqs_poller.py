"""A local stand-in for Lambda's SQS event source mapping.

It receives batches of up to `batch_size` messages from one queue (moto) and invokes the function with
Lambda's SQS event shape. With ReportBatchItemFailures semantics: the messages the response names in
`batchItemFailures` stay on the queue, the others are deleted; a response naming a message that was
not in the batch, or an invocation that raises, leaves the whole batch. What stays reappears after the
queue's visibility timeout, and the queue's RedrivePolicy moves a message received `maxReceiveCount`
times to its dead-letter queue, as in AWS.

moto answers a long poll (WaitTimeSeconds > 0) by blocking inside the request, and the local stack
runs one moto request at a time (moto_services.serialize_moto_requests), so a long poll would stall the
other queue, KMS and Scheduler calls: the poller asks without waiting and sleeps `poll_interval_s`
between empty answers.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("dev.sqs")

Invoke = Callable[[dict[str, Any]], Any]
MAX_RECEIVE = 10  # SQS hands out at most 10 messages per ReceiveMessage


@dataclass(frozen=True)
class SqsSettings:
    batch_size: int = 10
    poll_interval_s: float = 0.1

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= MAX_RECEIVE:
            # Lambda's larger SQS batches need a batching window, which the local stack has no use for.
            raise ValueError(f"batch_size must be between 1 and {MAX_RECEIVE}")


def lambda_message_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """SQS message attributes in the shape Lambda hands to a function (binary values base64)."""
    converted = {}
    for name, value in attributes.items():
        entry: dict[str, Any] = {"dataType": value["DataType"], "stringListValues": [], "binaryListValues": []}
        if "StringValue" in value:
            entry["stringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            entry["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
        converted[name] = entry
    return converted


def lambda_record(message: dict[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """A ReceiveMessage message in the shape Lambda hands to a function."""
    record = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": lambda_message_attributes(message.get("MessageAttributes", {})),
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def failed_message_ids(batch: list[dict[str, Any]], response: Any) -> set[str]:
    """The messages of `batch` to leave on the queue after `response` (Lambda's rules for
    ReportBatchItemFailures: an identifier that is not a message of the batch fails the whole batch)."""
    failures = response.get("batchItemFailures") if isinstance(response, dict) else None
    if not failures:
        return set()
    batch_ids = {record["messageId"] for record in batch}
    try:
        failed = {failure["itemIdentifier"] for failure in failures}
    except (KeyError, TypeError):
        return batch_ids
    return failed if failed <= batch_ids else batch_ids


class SqsPoller(threading.Thread):
    def __init__(self, sqs_client: Any, queue_url: str, invoke: Invoke, settings: SqsSettings | None = None,
                 region: str = "us-east-1", name: str = "sqs-poller") -> None:
        super().__init__(name=name, daemon=True)
        self.client = sqs_client
        self.queue_url = queue_url
        self.invoke = invoke
        self.settings = settings or SqsSettings()
        self.region = region
        self.invocations = 0
        self._queue_arn: str | None = None
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    @property
    def queue_arn(self) -> str:
        if self._queue_arn is None:
            self._queue_arn = self.client.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=["QueueArn"]
            )["Attributes"]["QueueArn"]
        return self._queue_arn

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                received = self.poll_once()
            except Exception:
                log.exception("polling %s failed", self.queue_url)
                received = 0
            if received == 0:
                self._stop_event.wait(self.settings.poll_interval_s)

    def poll_once(self) -> int:
        """Receive one batch and deliver it. Returns the number of messages received."""
        messages = self.client.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=self.settings.batch_size,
            WaitTimeSeconds=0,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if messages:
            self.deliver([lambda_record(m, self.queue_arn, self.region) for m in messages])
        return len(messages)

    def deliver(self, batch: list[dict[str, Any]]) -> None:
        self.invocations += 1
        try:
            response = self.invoke({"Records": batch})
        except Exception as exc:
            log.warning("function failed on %d messages of %s (they reappear after the visibility timeout): %s",
                        len(batch), self.queue_arn.rpartition(":")[2], exc)
            return
        failed = failed_message_ids(batch, response)
        done = [record for record in batch if record["messageId"] not in failed]
        if done:
            self.client.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": r["receiptHandle"]} for i, r in enumerate(done)],
            )
