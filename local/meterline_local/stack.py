"""The embedded local stack: moto for DynamoDB and its stream, tables from the shared table specs,
the HTTP functions behind the local gateway, the stream poller feeding the processor, and usage
exports: moto's SQS queues, KMS key and Scheduler group, a scheduler thread firing report schedules
into the exporter, and SQS pollers feeding the exporter and the webhook sender."""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meterline_local.lambda_runtime import LocalFunction

log = logging.getLogger("dev")

REGION = "us-east-1"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_METERS_FILE = REPO_ROOT / "examples" / "meters.yaml"
# Report schedules target the exporter by ARN and Scheduler assumes a role; neither exists in moto,
# the local scheduler maps this ARN to the local exporter.
LOCAL_ACCOUNT = "000000000000"
EXPORTER_FUNCTION_ARN = f"arn:aws:lambda:{REGION}:{LOCAL_ACCOUNT}:function:meterline-local-exporter"
SCHEDULER_ROLE_ARN = f"arn:aws:iam::{LOCAL_ACCOUNT}:role/meterline-local-scheduler"


@dataclass
class LocalConfig:
    host: str = "127.0.0.1"
    port: int = 8888
    meters_file: Path | None = DEFAULT_METERS_FILE
    namespace: str = "default"
    retention_days: int = 400
    function_concurrency: int = 4
    stream_batch_size: int = 100
    stream_max_retries: int = 10
    table_prefix: str = "meterline-local"
    # Counting: the compactor folds a quarter-hour `grace` after it ends; locally within seconds.
    compaction_interval_s: float = 2.0
    compaction_grace_s: float = 10.0
    write_margin_s: float = 5.0
    # Usage exports (the AWS values are MeterlineProps'): a schedule fires `export_settle_s` after its
    # window closes; a webhook is tried `webhook_max_attempts` times, `webhook_backoff_base_s` apart at
    # first, growing up to `webhook_backoff_max_s`. Webhooks to loopback addresses are allowed locally.
    export_settle_s: int = 2
    webhook_allow_loopback: bool = True
    webhook_max_attempts: int = 4
    webhook_backoff_base_s: int = 1
    webhook_backoff_max_s: int = 3
    webhook_timeout_s: int = 10
    # A manual run requested while its meter backfills is asked for again this much later.
    export_backfill_wait_s: int = 2
    # A message whose handler failed reappears after the visibility timeout; on its
    # `queue_max_receive_count`-th failure it moves to the dead-letter queue (3 as on AWS).
    queue_visibility_timeout_s: int = 3
    queue_max_receive_count: int = 3
    extra_env: dict[str, str] = field(default_factory=dict)


def _serialize_moto_calls() -> None:
    """DynamoDB applies a conditional write atomically; moto's in-process backend does not lock.
    Running one moto request at a time restores the atomicity concurrent ingestion relies on."""
    from moto.core.botocore_stubber import BotocoreStubber

    if getattr(BotocoreStubber.process_request, "_meterline_locked", False):
        return
    original = BotocoreStubber.process_request
    lock = threading.RLock()

    def locked(self: Any, request: Any) -> Any:
        with lock:
            return original(self, request)

    locked._meterline_locked = True  # type: ignore[attr-defined]
    BotocoreStubber.process_request = locked  # type: ignore[method-assign]


def prepare_environment(config: LocalConfig) -> dict[str, str]:
    """Environment the handlers read, as the CDK stack sets it for each Lambda."""
    from meterline.storage.tables import ALL_TABLES

    env = {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",  # moto's streams need it (see TOOLCHAIN.md)
        **{spec.env_var: f"{config.table_prefix}-{spec.logical_name.lower()}" for spec in ALL_TABLES},
        "METERLINE_DEFAULT_NAMESPACE": config.namespace,
        "METERLINE_RETENTION_DAYS": str(config.retention_days),
        "METERLINE_COMPACTION_GRACE_SECONDS": str(config.compaction_grace_s),
        "METERLINE_WRITE_MARGIN_SECONDS": str(config.write_margin_s),
        "METERLINE_METER_CACHE_SECONDS": "1",  # meters changed through the API apply within a second
        "SCHEDULE_GROUP_NAME": f"{config.table_prefix}-reports",
        "EXPORTER_FUNCTION_ARN": EXPORTER_FUNCTION_ARN,
        "SCHEDULER_ROLE_ARN": SCHEDULER_ROLE_ARN,
        "METERLINE_EXPORT_SETTLE_SECONDS": str(config.export_settle_s),
        "METERLINE_EXPORT_BACKFILL_WAIT_SECONDS": str(config.export_backfill_wait_s),
        "METERLINE_WEBHOOK_ALLOW_LOOPBACK": "true" if config.webhook_allow_loopback else "false",
        "METERLINE_WEBHOOK_MAX_ATTEMPTS": str(config.webhook_max_attempts),
        "METERLINE_WEBHOOK_BACKOFF_BASE_SECONDS": str(config.webhook_backoff_base_s),
        "METERLINE_WEBHOOK_BACKOFF_MAX_SECONDS": str(config.webhook_backoff_max_s),
        "METERLINE_WEBHOOK_TIMEOUT_SECONDS": str(config.webhook_timeout_s),
        "POWERTOOLS_SERVICE_NAME": "meterline",
        # No CloudWatch here: the compactor's lag metric would print a JSON line every 2 s.
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
    }
    if config.meters_file is not None:
        env["METERLINE_METERS_FILE"] = str(config.meters_file)
    env.update(config.extra_env)
    os.environ.update(env)
    return env


@dataclass(frozen=True)
class ExportResources:
    export_queue_url: str
    export_dlq_url: str
    delivery_queue_url: str
    delivery_dlq_url: str
    signing_key_id: str

    @property
    def environment(self) -> dict[str, str]:
        """The variables that name them for the handlers (the export DLQ is only read by people)."""
        return {
            "EXPORT_QUEUE_URL": self.export_queue_url,
            "DELIVERY_QUEUE_URL": self.delivery_queue_url,
            "DELIVERY_DLQ_URL": self.delivery_dlq_url,
            "SIGNING_KEY_ID": self.signing_key_id,
        }


def create_export_resources(config: LocalConfig, schedule_group: str) -> ExportResources:
    """The queues (each with a dead-letter queue, as the CDK stack has them), the signing key and the
    schedule group of usage exports, in moto."""
    import boto3

    sqs = boto3.client("sqs", region_name=REGION)

    def queue_with_dlq(name: str) -> tuple[str, str]:
        dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": config.queue_max_receive_count}
        url = sqs.create_queue(QueueName=name, Attributes={
            "VisibilityTimeout": str(config.queue_visibility_timeout_s), "RedrivePolicy": json.dumps(redrive),
        })["QueueUrl"]
        return url, dlq_url

    export_url, export_dlq_url = queue_with_dlq(f"{config.table_prefix}-export-requests")
    delivery_url, delivery_dlq_url = queue_with_dlq(f"{config.table_prefix}-deliveries")
    key = boto3.client("kms", region_name=REGION).create_key(Description="Meterline local report signing secrets")
    boto3.client("scheduler", region_name=REGION).create_schedule_group(Name=schedule_group)
    return ExportResources(export_url, export_dlq_url, delivery_url, delivery_dlq_url, key["KeyMetadata"]["Arn"])


class LocalStack:
    def __init__(self, config: LocalConfig) -> None:
        self.config = config
        self.gateway: Any = None
        self.poller: Any = None  # the events stream's
        self.exports: ExportResources | None = None
        self.scheduler: Any = None
        self.export_poller: Any = None
        self.delivery_poller: Any = None
        self._mock: Any = None
        self._server_thread: threading.Thread | None = None
        self._compactor_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.functions: dict[str, LocalFunction] = {}

    @property
    def url(self) -> str:
        host, port = self.gateway.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LocalStack:
        declared_meters: list[Any] = []
        if self.config.meters_file is not None:
            from meterline.domain.meters import load_meters_file

            declared_meters = load_meters_file(self.config.meters_file)  # fail fast on a bad config file
        env = prepare_environment(self.config)
        from moto import mock_aws

        self._mock = mock_aws()
        self._mock.start()
        _serialize_moto_calls()

        import boto3

        from meterline.aws.clients import reset_clients
        from meterline.storage.dynamo import reset_client
        from meterline.storage.tables import ALL_TABLES

        reset_client()
        reset_clients()  # SQS, KMS and Scheduler clients made before this moto started would miss it
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        stream_arn = None
        for spec in ALL_TABLES:
            name = env[spec.env_var]
            description = dynamodb.create_table(**spec.create_table_request(name))["TableDescription"]
            if spec.ttl_attribute:
                dynamodb.update_time_to_live(
                    TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": spec.ttl_attribute}
                )
            if spec.stream_view_type:
                stream_arn = description["LatestStreamArn"]
        self._seed_meters(declared_meters)

        from functions.catalog import (
            COMPACTOR_MODULE,
            EXPORTER_MODULE,
            HTTP_FUNCTIONS,
            PROCESSOR_MODULE,
            SENDER_MODULE,
        )
        from meterline_local.http_gateway import LocalGateway, Route
        from meterline_local.scheduler import LocalScheduler
        from meterline_local.sqs_poller import SqsPoller, SqsSettings
        from meterline_local.stream_poller import StreamPoller, StreamSettings

        self.exports = create_export_resources(self.config, env["SCHEDULE_GROUP_NAME"])
        env.update(self.exports.environment)
        os.environ.update(self.exports.environment)

        routes = []
        for spec in HTTP_FUNCTIONS:
            function = self._function(spec.name, spec.module, self.config.function_concurrency)
            routes.extend(Route(method, path, function) for method, path in spec.routes)
        processor = self._function("processor", PROCESSOR_MODULE, concurrency=1)  # ParallelizationFactor 1

        self.gateway = LocalGateway((self.config.host, self.config.port), routes)
        self._server_thread = threading.Thread(target=self.gateway.serve_forever, name="gateway", daemon=True)
        self._server_thread.start()

        assert stream_arn is not None
        self.poller = StreamPoller(
            boto3.client("dynamodbstreams", region_name=REGION),
            stream_arn,
            processor.invoke,
            StreamSettings(batch_size=self.config.stream_batch_size, max_retries=self.config.stream_max_retries),
            region=REGION,
        )
        self.poller.start()

        # EventBridge Scheduler runs the compactor every minute on AWS; here a thread runs it often.
        compactor = self._function("compactor", COMPACTOR_MODULE, concurrency=1)
        self._compactor_thread = threading.Thread(target=self._run_compactor, args=(compactor,), name="compactor",
                                                  daemon=True)
        self._compactor_thread.start()

        # Usage exports: report schedules fire into the exporter, which also takes manual runs from the
        # export queue; the sender takes the deliveries. Batch sizes as in infra/exports.py.
        exporter = self._function("exporter", EXPORTER_MODULE, self.config.function_concurrency)
        sender = self._function("sender", SENDER_MODULE, self.config.function_concurrency)
        sqs = boto3.client("sqs", region_name=REGION)
        self.scheduler = LocalScheduler(boto3.client("scheduler", region_name=REGION), env["SCHEDULE_GROUP_NAME"],
                                        {EXPORTER_FUNCTION_ARN: exporter.invoke})
        self.export_poller = SqsPoller(sqs, self.exports.export_queue_url, exporter.invoke,
                                       SqsSettings(batch_size=1), region=REGION, name="export-poller")
        self.delivery_poller = SqsPoller(sqs, self.exports.delivery_queue_url, sender.invoke,
                                         SqsSettings(batch_size=10), region=REGION, name="delivery-poller")
        for thread in (self.scheduler, self.export_poller, self.delivery_poller):
            thread.start()
        return self

    def _function(self, name: str, module: str, concurrency: int) -> LocalFunction:
        function = LocalFunction(name, module, concurrency)
        function.warm()
        self.functions[name] = function
        return function

    def _run_compactor(self, compactor: Any) -> None:
        while not self._stopping.wait(self.config.compaction_interval_s):
            try:
                compactor.invoke({"source": "local.schedule"})
            except Exception:
                log.exception("compactor run failed")

    def _seed_meters(self, meters: list[Any]) -> None:
        """The meters of the YAML file become stored meters of the default namespace, as if created
        through the API: those whose slug is new are created, existing ones are left as they are."""
        if not meters:
            return
        from meterline.domain.timeutil import now_ms
        from meterline.services.meters import seed_meters
        from meterline.storage.meters_store import MetersStore

        created = seed_meters(MetersStore(), self.config.namespace, meters, now_ms())
        log.info("seeded %d of %d meters from %s", len(created), len(meters), self.config.meters_file)

    def stop(self) -> None:
        self._stopping.set()
        threads = [self.scheduler, self.export_poller, self.delivery_poller, self.poller]
        for thread in threads:
            if thread is not None:
                thread.stop()
        for thread in [*threads, self._compactor_thread]:
            if thread is not None:
                thread.join(timeout=10)
        if self.gateway is not None:
            self.gateway.shutdown()
            self.gateway.server_close()
        if self._mock is not None:
            self._mock.stop()
            self._mock = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
