"""The local stack creates the usage-export resources the handlers' environment names, and wires the
report schedules and the two queues to the exporter and the sender."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from meterline_local.stack import EXPORTER_FUNCTION_ARN, SCHEDULER_ROLE_ARN, LocalConfig, LocalStack

CONTRACT = {
    "SCHEDULE_GROUP_NAME", "EXPORTER_FUNCTION_ARN", "SCHEDULER_ROLE_ARN", "EXPORT_QUEUE_URL",
    "DELIVERY_QUEUE_URL", "DELIVERY_DLQ_URL", "SIGNING_KEY_ID", "METERLINE_WEBHOOK_ALLOW_LOOPBACK",
    "METERLINE_WEBHOOK_MAX_ATTEMPTS", "METERLINE_WEBHOOK_BACKOFF_BASE_SECONDS",
    "METERLINE_WEBHOOK_BACKOFF_MAX_SECONDS", "METERLINE_WEBHOOK_TIMEOUT_SECONDS", "METERLINE_EXPORT_SETTLE_SECONDS",
}


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    saved = dict(os.environ)  # the stack sets the handlers' environment in this process
    stack = LocalStack(LocalConfig(port=0, meters_file=None, queue_visibility_timeout_s=1))
    try:
        yield stack.start()
    finally:
        stack.stop()
        os.environ.clear()
        os.environ.update(saved)
        from meterline.aws.clients import reset_clients

        reset_clients()


def test_the_export_environment_names_resources_that_exist(stack: LocalStack) -> None:
    env = {name: os.environ[name] for name in CONTRACT}
    assert env["EXPORTER_FUNCTION_ARN"] == EXPORTER_FUNCTION_ARN
    assert env["SCHEDULER_ROLE_ARN"] == SCHEDULER_ROLE_ARN
    assert env["METERLINE_WEBHOOK_ALLOW_LOOPBACK"] == "true"
    assert env["METERLINE_WEBHOOK_MAX_ATTEMPTS"] == "4" and env["METERLINE_EXPORT_SETTLE_SECONDS"] == "5"
    assert (env["METERLINE_WEBHOOK_BACKOFF_BASE_SECONDS"], env["METERLINE_WEBHOOK_BACKOFF_MAX_SECONDS"]) == ("1", "3")

    sqs = boto3.client("sqs", region_name="us-east-1")
    for queue, dlq in ((env["EXPORT_QUEUE_URL"], stack.exports.export_dlq_url),
                       (env["DELIVERY_QUEUE_URL"], env["DELIVERY_DLQ_URL"])):
        attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        assert json.loads(attributes["RedrivePolicy"]) == {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3}
        assert attributes["VisibilityTimeout"] == "1"

    kms = boto3.client("kms", region_name="us-east-1")
    context = {"namespace": "default", "report": "r"}
    blob = kms.encrypt(KeyId=env["SIGNING_KEY_ID"], Plaintext=b"whsec_x", EncryptionContext=context)["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"] == b"whsec_x"

    scheduler = boto3.client("scheduler", region_name="us-east-1")
    assert scheduler.get_schedule_group(Name=env["SCHEDULE_GROUP_NAME"])["State"] == "ACTIVE"


def test_schedules_and_queues_reach_the_exporter_and_the_sender(stack: LocalStack) -> None:
    received: dict[str, list[Any]] = {"exporter": [], "sender": [], "sender (dead letters)": []}
    every = threading.Event()

    def fake(name: str) -> Any:
        def invoke(event: dict[str, Any]) -> dict[str, Any]:
            received[name].append(event)
            if all(received.values()):
                every.set()
            return {"batchItemFailures": []}
        return invoke

    # Stand-ins for the real handlers: this test is about the wiring.
    stack.scheduler.targets[EXPORTER_FUNCTION_ARN] = fake("exporter")
    # the sender also takes what the delivery queue dead-letters (to end those deliveries as failed)
    assert stack.dead_letter_poller.invoke == stack.delivery_poller.invoke == stack.functions["sender"].invoke
    assert stack.dead_letter_poller.queue_url == os.environ["DELIVERY_DLQ_URL"]
    stack.delivery_poller.invoke = fake("sender")
    stack.dead_letter_poller.invoke = fake("sender (dead letters)")
    boto3.client("scheduler", region_name="us-east-1").create_schedule(
        Name="wiring", GroupName=os.environ["SCHEDULE_GROUP_NAME"], ScheduleExpression="rate(1 minute)",
        StartDate=datetime.now(UTC) + timedelta(seconds=1), FlexibleTimeWindow={"Mode": "OFF"},
        Target={"Arn": EXPORTER_FUNCTION_ARN, "RoleArn": SCHEDULER_ROLE_ARN, "Input": '{"report": "wiring"}'},
    )
    sqs = boto3.client("sqs", region_name="us-east-1")
    sqs.send_message(QueueUrl=os.environ["DELIVERY_QUEUE_URL"], MessageBody='{"delivery": 1}')
    sqs.send_message(QueueUrl=os.environ["DELIVERY_DLQ_URL"], MessageBody='{"delivery": 2}')
    assert every.wait(10)
    assert received["exporter"] == [{"report": "wiring"}]
    assert [r["body"] for r in received["sender"][0]["Records"]] == ['{"delivery": 1}']
    [dead_letter] = received["sender (dead letters)"][0]["Records"]
    assert dead_letter["body"] == '{"delivery": 2}'
    assert dead_letter["eventSourceARN"].rsplit(":", 1)[-1] == os.environ["DELIVERY_DLQ_URL"].rsplit("/", 1)[-1]
