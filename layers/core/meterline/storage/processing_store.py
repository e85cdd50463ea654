"""The stream processor's lag samples, in the usage table: pk = "processing#lag", sk = the minute
(ms, zero-padded), `oldest` = the earliest arrival time reported by a lagging invocation in that
minute. A day of samples is kept (TTL); exporters read the last few minutes with one Query."""

from __future__ import annotations

import contextlib
from typing import Any

from meterline.domain.processing_lag import LagSample
from meterline.domain.timeutil import DAY_S
from meterline.storage.dynamo import TableAdapter
from meterline.storage.tables import USAGE_TABLE

LAG_PARTITION = "processing#lag"


class ProcessingLagStore(TableAdapter):
    spec = USAGE_TABLE

    def record(self, sample: LagSample) -> None:
        """Keep the earliest arrival per minute: only a sample older than what is there is written."""
        # ConditionalCheckFailed: an earlier arrival is already reported for this minute.
        with contextlib.suppress(self.client.exceptions.ConditionalCheckFailedException):
            self.client.update_item(
                TableName=self.table,
                Key={"pk": {"S": LAG_PARTITION}, "sk": {"S": f"{sample.minute_ms:015d}"}},
                UpdateExpression="SET oldest = :oldest, expiresAt = :expires",
                ConditionExpression="attribute_not_exists(oldest) OR oldest > :oldest",
                ExpressionAttributeValues={":oldest": {"N": str(sample.oldest_arrival_ms)},
                                           ":expires": {"N": str(sample.minute_ms // 1000 + DAY_S)}},
            )

    def samples(self, since_minute_ms: int) -> list[LagSample]:
        items: list[dict[str, Any]] = list(self.query_items({
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :since AND :last",
            "ExpressionAttributeValues": {":pk": {"S": LAG_PARTITION}, ":since": {"S": f"{since_minute_ms:015d}"},
                                          ":last": {"S": "9" * 15}},
            "ConsistentRead": True,
        }))
        return [LagSample(int(item["sk"]["S"]), int(item["oldest"]["N"])) for item in items]
