"""Shared fixtures. Every test runs with fake AWS credentials; tests get fresh tables built from the same
TableSpecs the CDK stack and the local stack use: in moto (fast, for small data), or in DynamoDB Local
(the local stack's engine) where a test asks for it with `@pytest.mark.parametrize("aws",
["dynamodb_local"], indirect=True)`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

# Property tests check outcomes, not speed: on a shared, loaded machine an example may take longer than
# hypothesis's default 200 ms deadline (seen at a load of 10 on 2 cores), which is noise, not a failure.
settings.register_profile("meterline", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("meterline")

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_METERS = REPO_ROOT / "examples" / "meters.yaml"

os.environ.update(
    {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
        "EVENTS_TABLE": "test-events",
        "USAGE_TABLE": "test-usage",
        "CATALOG_TABLE": "test-catalog",
        "METERLINE_METERS_FILE": str(EXAMPLE_METERS),
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "POWERTOOLS_SERVICE_NAME": "meterline",
        # The fixtures' events are dated 2024, now long past: keep every resolution as long as events, so
        # their MINUTE windows and off-hour edges stay answerable. The 35-day defaults (meterline.settings
        # FINE_RETENTION_DAYS) are tested where they matter: tests/unit/test_settings_retention.py,
        # tests/integration/test_fine_retention.py, tests/integration/test_late_recount.py.
        "METERLINE_MINUTE_RETENTION_DAYS": "400",
        "METERLINE_QUARTER_RETENTION_DAYS": "400",
    }
)


@pytest.fixture(scope="session")
def dynamodb_local() -> Iterator[Any]:
    """One in-memory DynamoDB Local per test process, started on first use."""
    from meterline_local.engine import DynamoDBLocal

    engine = DynamoDBLocal(None).start()
    yield engine
    engine.stop()


@pytest.fixture
def aws(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The Meterline tables, new and empty, in moto (by default) or in DynamoDB Local (param
    "dynamodb_local"); yields a DynamoDB client. With DynamoDB Local, the AWS SDK's endpoint variables
    send every DynamoDB and Streams client of the test to it, as in the local stack."""
    import boto3

    from meterline import bootstrap
    from meterline.aws.clients import reset_clients
    from meterline.storage.tables import ALL_TABLES

    bootstrap.reset()  # nothing built for another test's tables or engine
    engine = getattr(request, "param", "moto")
    if engine == "dynamodb_local":
        server = request.getfixturevalue("dynamodb_local")
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", server.endpoint_url)
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB_STREAMS", server.endpoint_url)
        reset_clients()
        client = boto3.client("dynamodb", region_name="us-east-1")
        existing = set(client.list_tables()["TableNames"])
        for spec in ALL_TABLES:
            name = os.environ[spec.env_var]
            if name in existing:
                client.delete_table(TableName=name)
            client.create_table(**spec.create_table_request(name))
        yield client
        reset_clients()
        return
    assert engine == "moto", f"unknown engine {engine}"
    from moto import mock_aws

    from meterline_local.moto_services import serialize_moto_requests

    with mock_aws():
        serialize_moto_requests()
        client = boto3.client("dynamodb", region_name="us-east-1")
        for spec in ALL_TABLES:
            client.create_table(**spec.create_table_request(os.environ[spec.env_var]))
        yield client


def scan_all(client: Any, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table}
    while True:
        page = client.scan(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def scan_events(client: Any, table: str) -> list[dict[str, Any]]:
    """The event items of the events table (not the manifests of its time index)."""
    from meterline.storage.events_store import is_manifest

    return [item for item in scan_all(client, table) if not is_manifest(item)]


def stream_records(table: str) -> list[dict[str, Any]]:
    """Every record on the table's stream so far, in the shape Lambda delivers."""
    import boto3

    from meterline.aws.streams import lambda_record

    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    streams = boto3.client("dynamodbstreams", region_name="us-east-1")
    arn = dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    records: list[dict[str, Any]] = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"],
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while iterator:
            page = streams.get_records(ShardIterator=iterator, Limit=1000)
            records.extend(lambda_record(r, arn, "us-east-1") for r in page["Records"])
            if not page["Records"]:
                break
            iterator = page.get("NextShardIterator")
    return records


def cloud_event(i: int | str = 1, **overrides: Any) -> dict[str, Any]:
    """A valid event of the example `tokens_total` meter."""
    event = {
        "specversion": "1.0",
        "type": "prompt",
        "id": f"evt-{i}",
        "time": "2024-01-01T00:00:00.001Z",
        "source": "chat-app",
        "subject": "customer-1",
        "data": {"tokens": "123456", "model": "gpt4-turbo", "type": "output"},
    }
    event.update(overrides)
    return event


def lambda_context(name: str = "test") -> Any:
    """A Lambda context object, as the runtime passes one (the local stack's)."""
    from meterline_local.lambda_runtime import LocalLambdaContext

    return LocalLambdaContext(name)
