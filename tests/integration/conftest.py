"""Integration fixtures: meters live in the catalog table, so tests on moto get the example meters
(examples/meters.yaml, in the default namespace) seeded the way `meterline dev` seeds them. A module
that wants an empty catalog overrides `example_meters` with a fixture of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from meterline.domain.meters import Meter, load_meters_file
from meterline.services import meter_source
from meterline.services.meters import seed_meters
from meterline.storage.meters_store import MetersStore
from tests.conftest import EXAMPLE_METERS

SEEDED_AT_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z


@pytest.fixture(autouse=True)
def example_meters(request: pytest.FixtureRequest) -> Iterator[list[Meter]]:
    """With the `aws` fixture: the example meters, stored in the default namespace."""
    meter_source.invalidate()
    meters: list[Meter] = []
    if "aws" in request.fixturenames:
        request.getfixturevalue("aws")
        meters = load_meters_file(EXAMPLE_METERS)
        seed_meters(MetersStore(), "default", meters, SEEDED_AT_MS)
    yield meters
    meter_source.invalidate()


@pytest.fixture
def exports_aws(aws, monkeypatch):  # noqa: ANN001, ANN201 - fixtures
    """`aws` plus what usage exports need in moto: the KMS key of signing secrets, the schedule group,
    the export-request and delivery queues (with the delivery dead-letter queue), and their env vars.
    Handler-level caches are dropped so each test sees its own moto resources."""
    import boto3

    from meterline.aws.clients import reset_clients

    region = "us-east-1"
    sqs = boto3.client("sqs", region_name=region)
    urls = {name: sqs.create_queue(QueueName=name)["QueueUrl"] for name in ("export-requests", "deliveries", "dlq")}
    key_id = boto3.client("kms", region_name=region).create_key()["KeyMetadata"]["KeyId"]
    boto3.client("scheduler", region_name=region).create_schedule_group(Name="meterline-reports")
    env = {
        "SIGNING_KEY_ID": key_id,
        "SCHEDULE_GROUP_NAME": "meterline-reports",
        "EXPORTER_FUNCTION_ARN": "arn:aws:lambda:us-east-1:123456789012:function:exporter",
        "SCHEDULER_ROLE_ARN": "arn:aws:iam::123456789012:role/scheduler",
        "EXPORT_QUEUE_URL": urls["export-requests"],
        "DELIVERY_QUEUE_URL": urls["deliveries"],
        "DELIVERY_DLQ_URL": urls["dlq"],
        "METERLINE_WEBHOOK_ALLOW_LOOPBACK": "true",
        "METERLINE_WEBHOOK_MAX_ATTEMPTS": "3",
        "METERLINE_WEBHOOK_BACKOFF_BASE_SECONDS": "1",
        "METERLINE_WEBHOOK_BACKOFF_MAX_SECONDS": "1",
        "METERLINE_WEBHOOK_TIMEOUT_SECONDS": "2",
        "METERLINE_EXPORT_SETTLE_SECONDS": "60",
        # exports are final 40 s after their window when the processor reports no lag
        "METERLINE_PROCESSING_LAG_REPORT_SECONDS": "10",
        "METERLINE_PROCESSING_LAG_LOOKBACK_SECONDS": "30",
        "METERLINE_EXPORT_BACKFILL_WAIT_SECONDS": "1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from meterline import bootstrap

    def reset() -> None:
        reset_clients()
        bootstrap.reset()

    reset()
    yield {"sqs": sqs, "queues": urls, "key_id": key_id}
    reset()
