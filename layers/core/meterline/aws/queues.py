"""The two SQS queues of usage exports: export requests (manual runs, consumed by the exporter) and
webhook deliveries (one message per subject, consumed by the sender), plus the deliveries' dead-letter
queue, where the sender puts a delivery after its last failed attempt."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from meterline.aws.clients import AwsAdapter
from meterline.domain.exports import DeliveryMessage, ExportRequest
from meterline.settings import required_env

MAX_DELAY_SECONDS = 900  # SQS's limit on DelaySeconds


class ExportQueues(AwsAdapter):
    service = "sqs"

    def request_export(self, request: ExportRequest, delay_seconds: int = 0) -> None:
        self.client.send_message(QueueUrl=required_env("EXPORT_QUEUE_URL", "the export request queue"),
                                 MessageBody=request.body(),
                                 DelaySeconds=max(0, min(MAX_DELAY_SECONDS, delay_seconds)))

    def enqueue_deliveries(self, messages: Sequence[DeliveryMessage]) -> None:
        url = required_env("DELIVERY_QUEUE_URL", "the webhook delivery queue")
        for start in range(0, len(messages), 10):
            entries = [{"Id": str(i), "MessageBody": m.body()}
                       for i, m in enumerate(messages[start:start + 10])]
            for _ in range(5):
                failed = self.client.send_message_batch(QueueUrl=url, Entries=entries).get("Failed") or []
                if not failed:
                    break
                retry = {f["Id"] for f in failed}
                entries = [e for e in entries if e["Id"] in retry]
            else:
                raise RuntimeError(f"SQS refused {len(entries)} webhook deliveries: {failed[0].get('Message')}")

    def retry_delivery(self, message: DeliveryMessage, delay_seconds: int) -> None:
        self.client.send_message(QueueUrl=required_env("DELIVERY_QUEUE_URL", "the webhook delivery queue"),
                                 MessageBody=message.body(),
                                 DelaySeconds=max(0, min(MAX_DELAY_SECONDS, delay_seconds)))

    def dead_letter(self, message: DeliveryMessage, error: str | None, status_code: int | None) -> None:
        """The message as it was last tried, with why its last attempt failed."""
        body = {**message.model_dump(by_alias=True, mode="json"), "error": error, "lastResponseStatus": status_code}
        self.client.send_message(QueueUrl=required_env("DELIVERY_DLQ_URL", "the delivery dead-letter queue"),
                                 MessageBody=orjson.dumps(body).decode())
