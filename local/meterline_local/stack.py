"""The embedded local stack: DynamoDB Local (a child process) for the tables and the events stream,
tables from the shared table specs, the HTTP functions behind the local gateway, the stream poller
feeding the processor, and usage exports: moto's SQS queues, KMS key and Scheduler group (in process),
a scheduler thread firing report schedules into the exporter, and SQS pollers feeding the exporter and
the webhook sender.

State lives in a data directory (DynamoDB Local's database, the stream checkpoints and the signing key)
or, with `data_dir=None`, in memory. What moto holds is rebuilt on each start: the schedules from the
stored reports, the key from the data directory; messages queued when the stack stopped are lost.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meterline.settings import LOCAL_STREAM_BATCH_SIZE
from meterline_local.engine import DataDirectory, DynamoDBLocal, EngineError, port_is_free
from meterline_local.lambda_runtime import LocalFunction

if TYPE_CHECKING:
    from meterline.storage.tables import TableSpec

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
    # Where DynamoDB Local keeps the tables, the stream checkpoints and the signing key; None: in memory.
    data_dir: Path | None = None
    namespace: str = "default"
    # Require API keys (`meterline keys create --data-dir ...`), as a deployed stack does; off: every
    # request acts in `namespace`.
    auth: bool = False
    retention_days: int = 400
    function_concurrency: int = 4
    stream_batch_size: int = LOCAL_STREAM_BATCH_SIZE
    stream_max_retries: int | None = None  # as the stack's mapping: retry until a record is 20 h old
    table_prefix: str = "meterline-local"
    # Counting: the compactor folds a quarter-hour `grace` after it ends; locally within seconds.
    compaction_interval_s: float = 2.0
    compaction_grace_s: float = 10.0
    write_margin_s: float = 5.0
    # Usage exports (the AWS values are MeterlineProps'): a schedule fires `export_settle_s` after its
    # window closes; a webhook is tried `webhook_max_attempts` times, `webhook_backoff_base_s` apart at
    # first, growing up to `webhook_backoff_max_s`. Webhooks to loopback addresses are allowed locally.
    export_settle_s: int = 5
    # The stream processor reports itself behind when a batch's oldest record waited over
    # `processing_lag_report_s` (arrival times are whole seconds); exports look back
    # `processing_lag_lookback_s` for such reports (the poller retries a failing batch within it).
    processing_lag_report_s: float = 3
    processing_lag_lookback_s: float = 2
    export_max_hold_s: int = 3600
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


def table_name(config: LocalConfig, spec: TableSpec) -> str:
    """The local name of a table (a meterline.storage.tables spec)."""
    return f"{config.table_prefix}-{spec.logical_name.lower()}"


def prepare_environment(config: LocalConfig, dynamodb_url: str) -> dict[str, str]:
    """Environment the handlers read, as the CDK stack sets it for each Lambda. The AWS SDK's own
    service endpoint variables send DynamoDB and its stream to DynamoDB Local; the handlers' code does
    not know it runs locally."""
    from meterline.storage.tables import ALL_TABLES

    env = {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_ENDPOINT_URL_DYNAMODB": dynamodb_url,
        "AWS_ENDPOINT_URL_DYNAMODB_STREAMS": dynamodb_url,
        **{spec.env_var: table_name(config, spec) for spec in ALL_TABLES},
        "METERLINE_DEFAULT_NAMESPACE": config.namespace,
        "METERLINE_AUTH": "api-key" if config.auth else "none",
        "METERLINE_RETENTION_DAYS": str(config.retention_days),
        "METERLINE_COMPACTION_GRACE_SECONDS": str(config.compaction_grace_s),
        "METERLINE_WRITE_MARGIN_SECONDS": str(config.write_margin_s),
        "METERLINE_METER_CACHE_SECONDS": "1",  # meters changed through the API apply within a second
        "SCHEDULE_GROUP_NAME": f"{config.table_prefix}-reports",
        "EXPORTER_FUNCTION_ARN": EXPORTER_FUNCTION_ARN,
        "SCHEDULER_ROLE_ARN": SCHEDULER_ROLE_ARN,
        "METERLINE_EXPORT_SETTLE_SECONDS": str(config.export_settle_s),
        "METERLINE_EXPORT_BACKFILL_WAIT_SECONDS": str(config.export_backfill_wait_s),
        "METERLINE_EXPORT_MAX_HOLD_SECONDS": str(config.export_max_hold_s),
        "METERLINE_PROCESSING_LAG_REPORT_SECONDS": str(config.processing_lag_report_s),
        "METERLINE_PROCESSING_LAG_LOOKBACK_SECONDS": str(config.processing_lag_lookback_s),
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
    return env


def ensure_tables(client: Any, env: dict[str, str]) -> tuple[str, set[str]]:
    """Create the tables the engine lacks (from the one set of table specs) and check the ones it has.
    Returns the events stream's ARN and the logical names of the tables created."""
    from meterline.storage.tables import ALL_TABLES

    existing: set[str] = set()
    for page in client.get_paginator("list_tables").paginate():
        existing.update(page["TableNames"])
    stream_arn = None
    created: set[str] = set()
    for spec in ALL_TABLES:
        name = env[spec.env_var]
        if name in existing:
            description = client.describe_table(TableName=name)["Table"]
            if description["KeySchema"] != spec.key_schema() or (
                    spec.stream_view_type and not description.get("LatestStreamArn")):
                raise EngineError(f"table {name} in the data directory does not have the keys and stream this "
                                  "version of Meterline needs: move the data directory away or use another")
            have = {index["IndexName"] for index in description.get("GlobalSecondaryIndexes", [])}
            for index in spec.indexes:  # data directories made before the index existed gain it
                if index.name not in have:
                    client.update_table(TableName=name, AttributeDefinitions=spec.attribute_definitions(),
                                        GlobalSecondaryIndexUpdates=[{"Create": spec.index_request(index)}])
        else:
            description = client.create_table(**spec.create_table_request(name))["TableDescription"]
            created.add(spec.logical_name)
            if spec.ttl_attribute:
                client.update_time_to_live(
                    TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": spec.ttl_attribute}
                )
        if spec.stream_view_type:
            stream_arn = description["LatestStreamArn"]
    assert stream_arn is not None, "no table has a stream"
    return stream_arn, created


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


def create_export_resources(config: LocalConfig, schedule_group: str, saved_key: Path | None) -> ExportResources:
    """The queues (each with a dead-letter queue, as the CDK stack has them), the signing key (the one
    saved in the data directory, if any) and the schedule group of usage exports, in moto."""
    import boto3

    from meterline_local.moto_services import durable_kms_key

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
    key_arn = durable_kms_key(key["KeyMetadata"]["Arn"], saved_key)
    boto3.client("scheduler", region_name=REGION).create_schedule_group(Name=schedule_group)
    return ExportResources(export_url, export_dlq_url, delivery_url, delivery_dlq_url, key_arn)


class LocalStack:
    # How long stop() waits for the threads in all (a busy compactor run is abandoned, not awaited).
    STOP_WAIT_S = 3.0

    def __init__(self, config: LocalConfig) -> None:
        self.config = config
        self.engine: DynamoDBLocal | None = None
        self.data: DataDirectory | None = None
        self.gateway: Any = None
        self.poller: Any = None  # the events stream's
        self.exports: ExportResources | None = None
        self.scheduler: Any = None
        self.export_poller: Any = None
        self.delivery_poller: Any = None
        self.dead_letter_poller: Any = None  # the delivery dead-letter queue's, into the sender too
        self._mock: Any = None
        self._saved_environment: dict[str, str | None] | None = None
        self._server_thread: threading.Thread | None = None
        self._compactor_thread: threading.Thread | None = None
        self._backfill_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.functions: dict[str, LocalFunction] = {}

    @property
    def url(self) -> str:
        host, port = self.gateway.server_address[:2]
        return f"http://{host}:{port}"

    def _set_environment(self, env: dict[str, str]) -> None:
        """Set the handlers' variables in this process; stop() puts the previous values back."""
        if self._saved_environment is None:
            self._saved_environment = {}
        for name, value in env.items():
            self._saved_environment.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    def _restore_environment(self) -> None:
        for name, value in (self._saved_environment or {}).items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_environment = None

    def start(self) -> LocalStack:
        declared_meters: list[Any] = []
        if self.config.meters_file is not None:
            from meterline.domain.meters import load_meters_file

            declared_meters = load_meters_file(self.config.meters_file)  # fail fast on a bad config file
        if self.config.port and not port_is_free(self.config.host, self.config.port):
            raise EngineError(f"port {self.config.port} is in use: stop what listens there or pass --port")
        if self.config.data_dir is not None:
            self.data = DataDirectory(self.config.data_dir)
            self.data.acquire()
        self.engine = DynamoDBLocal(self.data.database if self.data else None).start()
        if self.data is not None:
            self.data.publish_endpoint(self.engine.endpoint_url)
        env = prepare_environment(self.config, self.engine.endpoint_url)
        self._set_environment(env)

        from moto import mock_aws

        from meterline_local.moto_services import serialize_moto_requests

        self._mock = mock_aws()  # SQS, KMS and Scheduler; DynamoDB requests pass through to the engine
        self._mock.start()
        serialize_moto_requests()

        import boto3

        from meterline import bootstrap
        from meterline.aws.clients import reset_clients

        reset_clients()  # clients made before this moto started would miss it
        bootstrap.reset()  # stores and services built from another environment (tests) would too
        from meterline.storage.tables import EVENTS_TABLE

        stream_arn, created = ensure_tables(self.engine.client(), env)
        self._seed_meters(declared_meters, events_exist=EVENTS_TABLE.logical_name not in created)

        from functions.routes import (
            AUTHORIZER,
            BACKFILL_MODULE,
            COMPACTOR_MODULE,
            EXPORTER_MODULE,
            HTTP_FUNCTIONS,
            PROCESSOR_MODULE,
            SENDER_MODULE,
        )
        from meterline_local.http_gateway import LocalAuthorizer, LocalGateway, Route
        from meterline_local.scheduler import LocalScheduler
        from meterline_local.sqs_poller import SqsPoller, SqsSettings
        from meterline_local.stream_poller import ShardCheckpoints, StreamPoller, StreamSettings

        self.exports = create_export_resources(self.config, env["SCHEDULE_GROUP_NAME"],
                                               self.data.path / "signing-key.json" if self.data else None)
        self._set_environment(self.exports.environment)
        from meterline_local.moto_services import portal_secret

        self._set_environment({"PORTAL_SECRET_ARN": portal_secret(self.data.path / "portal-secret" if self.data
                                                                  else None)})
        self._restore_schedules()

        routes = []
        for spec in HTTP_FUNCTIONS:
            function = self._function(spec.name, spec.module, self.config.function_concurrency)
            routes.extend(Route(method, path, function) for method, path in spec.routes)
        processor = self._function("processor", PROCESSOR_MODULE, concurrency=1)  # ParallelizationFactor 1

        authorizer = None
        if self.config.auth:
            authorizer = LocalAuthorizer(self._function(AUTHORIZER.name, AUTHORIZER.module,
                                                        self.config.function_concurrency).invoke)
        self.gateway = LocalGateway((self.config.host, self.config.port), routes, authorizer)
        self._server_thread = threading.Thread(target=self.gateway.serve_forever, name="gateway", daemon=True)
        self._server_thread.start()

        self.poller = StreamPoller(
            self.engine.client("dynamodbstreams"),
            stream_arn,
            processor.invoke,
            StreamSettings(batch_size=self.config.stream_batch_size, max_retries=self.config.stream_max_retries),
            region=REGION,
            checkpoints=ShardCheckpoints(stream_arn, self.data.checkpoints if self.data else None),
        )
        self.poller.start()

        # EventBridge Scheduler runs the compactor every minute on AWS; here a thread runs it often.
        compactor = self._function("compactor", COMPACTOR_MODULE, concurrency=1)
        self._compactor_thread = threading.Thread(target=self._run_compactor, args=(compactor,), name="compactor",
                                                  daemon=True)
        self._compactor_thread.start()
        # ...and the backfill function, apart from it, as on AWS.
        backfill = self._function("backfill", BACKFILL_MODULE, concurrency=1)
        self._backfill_thread = threading.Thread(target=self._run_compactor, args=(backfill,), name="backfill",
                                                 daemon=True)
        self._backfill_thread.start()

        # Usage exports: report schedules fire into the exporter, which also takes manual runs from the
        # export queue; the sender takes the deliveries, and what SQS dead-letters of them. Batch sizes as in
        # infra/exports.py.
        exporter = self._function("exporter", EXPORTER_MODULE, self.config.function_concurrency)
        sender = self._function("sender", SENDER_MODULE, self.config.function_concurrency)
        sqs = boto3.client("sqs", region_name=REGION)
        self.scheduler = LocalScheduler(boto3.client("scheduler", region_name=REGION), env["SCHEDULE_GROUP_NAME"],
                                        {EXPORTER_FUNCTION_ARN: exporter.invoke})
        self.export_poller = SqsPoller(sqs, self.exports.export_queue_url, exporter.invoke,
                                       SqsSettings(batch_size=1), region=REGION, name="export-poller")
        self.delivery_poller = SqsPoller(sqs, self.exports.delivery_queue_url, sender.invoke,
                                         SqsSettings(batch_size=10), region=REGION, name="delivery-poller")
        self.dead_letter_poller = SqsPoller(sqs, self.exports.delivery_dlq_url, sender.invoke,
                                            SqsSettings(batch_size=10), region=REGION, name="dead-letter-poller")
        for thread in (self.scheduler, self.export_poller, self.delivery_poller, self.dead_letter_poller):
            thread.start()
        return self

    def _function(self, name: str, module: str, concurrency: int) -> LocalFunction:
        function = LocalFunction(name, module, concurrency)
        function.warm()
        self.functions[name] = function
        return function

    def _run_compactor(self, function: Any) -> None:
        """Invoke a scheduled function (the compactor, the backfill) every compaction interval."""
        while not self._stopping.wait(self.config.compaction_interval_s):
            try:
                function.invoke({"source": "local.schedule"})
            except Exception:
                if not self._stopping.is_set():
                    log.exception("%s run failed", function.name)

    def _seed_meters(self, meters: list[Any], events_exist: bool) -> None:
        """The meters of the YAML file become stored meters of the default namespace, as if created
        through the API: those whose slug is new are created, existing ones are left as they are. Into
        a new events table they come with nothing to backfill."""
        if not meters:
            return
        from meterline import bootstrap
        from meterline.domain.timeutil import now_ms
        from meterline.services.meters import seed_meters

        created = seed_meters(bootstrap.meters_store(), self.config.namespace, meters, now_ms(), events_exist)
        log.info("seeded %d of %d meters from %s", len(created), len(meters), self.config.meters_file)

    def _restore_schedules(self) -> None:
        """moto's Scheduler starts empty: give every stored report its schedule again."""
        from meterline import bootstrap
        from meterline.domain.timeutil import now_ms
        from meterline.services.reports import restore_schedules

        restored = restore_schedules(bootstrap.reports_context(), now_ms())
        if restored:
            log.info("restored the schedules of %d reports", restored)

    def stop(self) -> None:
        """Stop within a few seconds whatever the threads are doing: they are told to stop, given
        STOP_WAIT_S in all, and then the engine goes (a compactor run still busy fails and is retried by
        the next start)."""
        self._stopping.set()
        threads = [self.scheduler, self.export_poller, self.delivery_poller, self.dead_letter_poller, self.poller]
        for thread in threads:
            if thread is not None:
                thread.stop()
        if self.gateway is not None:
            self.gateway.shutdown()
            self.gateway.server_close()
        deadline = time.monotonic() + self.STOP_WAIT_S
        for thread in [*threads, self._compactor_thread, self._backfill_thread]:
            if thread is not None and thread.is_alive():
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if self.engine is not None:
            self.engine.stop()
        if self._mock is not None:
            self._mock.stop()
            self._mock = None
        if self.data is not None:
            self.data.release()
        self._restore_environment()
        from meterline import bootstrap
        from meterline.aws.clients import reset_clients

        reset_clients()  # the cached clients point at the engine just stopped
        bootstrap.reset()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
