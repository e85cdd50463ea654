"""Reading a DynamoDB stream back: the records of a batch the processor's mapping gave up on, named by the
message Lambda puts on the on-failure queue (a shard and a sequence-number range, not the records).
Records stay in the stream 24 hours; the mapping gives a batch up once it is 20 hours old, so a replay
has about 4 hours to read it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from meterline.aws.clients import AwsAdapter

# What DynamoDB Streams answers for records it no longer holds, or an iterator it can no longer serve.
EXPIRED_ERRORS = frozenset({"TrimmedDataAccessException", "ExpiredIteratorException", "ResourceNotFoundException"})


class StreamBatchInfo(BaseModel):
    """`DDBStreamBatchInfo` of an on-failure message."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    shard_id: str = Field(alias="shardId")
    start_sequence_number: str = Field(alias="startSequenceNumber")
    end_sequence_number: str = Field(alias="endSequenceNumber")
    first_arrival: datetime = Field(alias="approximateArrivalOfFirstRecord")
    last_arrival: datetime = Field(alias="approximateArrivalOfLastRecord")
    batch_size: int = Field(alias="batchSize")
    stream_arn: str = Field(alias="streamArn")

    def covers(self, sequence_number: str) -> bool:
        # Sequence numbers are decimal strings of varying length: compared as numbers.
        return int(self.start_sequence_number) <= int(sequence_number) <= int(self.end_sequence_number)


class StreamFailure(BaseModel):
    """An on-failure message of a DynamoDB stream mapping (the fields replay needs)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    batch: StreamBatchInfo = Field(alias="DDBStreamBatchInfo")


class RecordsExpired(Exception):
    """The stream no longer holds the batch's records: only a recount can restore what they counted."""


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


class StreamReader(AwsAdapter):
    service = "dynamodbstreams"

    def batch(self, info: StreamBatchInfo, region: str) -> list[dict[str, Any]]:
        """The batch's records, in order and in Lambda's shape. Raises RecordsExpired when the stream has
        dropped them (or the stream itself is gone)."""
        from botocore.exceptions import ClientError

        records: list[dict[str, Any]] = []
        try:
            iterator = self.client.get_shard_iterator(
                StreamArn=info.stream_arn, ShardId=info.shard_id, ShardIteratorType="AT_SEQUENCE_NUMBER",
                SequenceNumber=info.start_sequence_number)["ShardIterator"]
            while iterator:
                page = self.client.get_records(ShardIterator=iterator, Limit=1000)
                for record in page.get("Records", []):
                    if not info.covers(record["dynamodb"]["SequenceNumber"]):
                        return records
                    records.append(lambda_record(record, info.stream_arn, region))
                if not page.get("Records"):
                    return records  # the end of what the shard holds
                iterator = page.get("NextShardIterator")
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in EXPIRED_ERRORS:
                raise RecordsExpired(str(error)) from error
            raise
        return records
