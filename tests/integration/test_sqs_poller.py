"""The local SQS event source mapping reproduces Lambda's: event shape, partial batch responses, and
redelivery after the visibility timeout until the queue's RedrivePolicy dead-letters a message."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from meterline_local.sqs_poller import SqsPoller, SqsSettings

VISIBILITY_S = 1


@pytest.fixture
def queues() -> Iterator[tuple[Any, str, str]]:
    """A queue whose messages go to its DLQ on their third receive; yields (client, queue, dlq) URLs."""
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        dlq = sqs.create_queue(QueueName="work-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queue = sqs.create_queue(QueueName="work", Attributes={
            "VisibilityTimeout": str(VISIBILITY_S),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}),
        })["QueueUrl"]
        yield sqs, queue, dlq


def count(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def bodies(event: dict[str, Any]) -> list[str]:
    return [record["body"] for record in event["Records"]]


def send(sqs: Any, url: str, *messages: str) -> None:
    for body in messages:
        sqs.send_message(QueueUrl=url, MessageBody=body)


def test_records_have_lambdas_shape_and_succeeded_messages_are_deleted(queues: tuple[Any, str, str]) -> None:
    sqs, queue, _ = queues
    events: list[dict[str, Any]] = []
    sqs.send_message(QueueUrl=queue, MessageBody='{"n": 1}', MessageAttributes={
        "kind": {"DataType": "String", "StringValue": "usage"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
    })
    poller = SqsPoller(sqs, queue, lambda event: events.append(event) or {"batchItemFailures": []})
    assert poller.poll_once() == 1

    (record,) = events[0]["Records"]
    assert record["body"] == '{"n": 1}'
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == "arn:aws:sqs:us-east-1:123456789012:work"
    assert record["awsRegion"] == "us-east-1"
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert {"SentTimestamp", "ApproximateFirstReceiveTimestamp"} <= set(record["attributes"])
    assert record["messageAttributes"]["kind"] == {"dataType": "String", "stringValue": "usage",
                                                   "stringListValues": [], "binaryListValues": []}
    assert record["messageAttributes"]["blob"]["binaryValue"] == "AAE="
    assert record["md5OfBody"] and record["messageId"] and record["receiptHandle"]
    assert count(sqs, queue) == 0


def test_batch_item_failures_stay_and_come_back_after_the_visibility_timeout(queues: tuple[Any, str, str]) -> None:
    sqs, queue, _ = queues
    send(sqs, queue, "a", "b", "c")
    events: list[dict[str, Any]] = []

    def fail_b(event: dict[str, Any]) -> dict[str, Any]:
        events.append(event)
        return {"batchItemFailures": [{"itemIdentifier": r["messageId"]}
                                      for r in event["Records"] if r["body"] == "b"]}

    poller = SqsPoller(sqs, queue, fail_b)
    assert poller.poll_once() == 3
    assert sorted(bodies(events[0])) == ["a", "b", "c"]
    assert count(sqs, queue) == 1
    assert poller.poll_once() == 0  # invisible until the visibility timeout passes
    time.sleep(VISIBILITY_S + 0.1)
    assert poller.poll_once() == 1
    assert bodies(events[1]) == ["b"] and events[1]["Records"][0]["attributes"]["ApproximateReceiveCount"] == "2"


def test_an_unknown_item_identifier_fails_the_whole_batch(queues: tuple[Any, str, str]) -> None:
    sqs, queue, _ = queues
    send(sqs, queue, "a", "b")
    poller = SqsPoller(sqs, queue, lambda event: {"batchItemFailures": [{"itemIdentifier": "not-in-batch"}]})
    assert poller.poll_once() == 2
    assert count(sqs, queue) == 2


def test_a_failing_function_leaves_the_batch_until_the_redrive_policy_dead_letters_it(
        queues: tuple[Any, str, str]) -> None:
    sqs, queue, dlq = queues
    send(sqs, queue, "poison")
    calls: list[dict[str, Any]] = []

    def crash(event: dict[str, Any]) -> None:
        calls.append(event)
        raise RuntimeError("boom")

    poller = SqsPoller(sqs, queue, crash, SqsSettings(batch_size=5))
    for _ in range(3):
        poller.poll_once()
        time.sleep(VISIBILITY_S + 0.1)
    assert len(calls) == 2  # maxReceiveCount 2: the third receive moves it to the DLQ instead
    assert count(sqs, queue) == 0
    (moved,) = sqs.receive_message(QueueUrl=dlq)["Messages"]
    assert moved["Body"] == "poison"


def test_batch_size_limits_each_invocation(queues: tuple[Any, str, str]) -> None:
    sqs, queue, _ = queues
    send(sqs, queue, *"abcde")
    sizes: list[int] = []
    poller = SqsPoller(sqs, queue, lambda event: sizes.append(len(event["Records"])), SqsSettings(batch_size=2))
    while poller.poll_once():
        pass
    assert sizes == [2, 2, 1] and count(sqs, queue) == 0
    with pytest.raises(ValueError):
        SqsSettings(batch_size=11)


def test_the_thread_delivers_delayed_messages_when_due_and_stops(queues: tuple[Any, str, str]) -> None:
    sqs, queue, _ = queues
    delivered = threading.Event()
    received_at: list[float] = []

    def record(event: dict[str, Any]) -> None:
        received_at.append(time.monotonic())
        delivered.set()

    poller = SqsPoller(sqs, queue, record, SqsSettings(poll_interval_s=0.05))
    poller.start()
    try:
        sent_at = time.monotonic()
        sqs.send_message(QueueUrl=queue, MessageBody="later", DelaySeconds=1)
        assert delivered.wait(5)
        assert received_at[0] - sent_at >= 0.9  # DelaySeconds, as the sender's backoff uses it
    finally:
        poller.stop()
        poller.join(timeout=5)
    assert not poller.is_alive()
    assert count(sqs, queue) == 0
