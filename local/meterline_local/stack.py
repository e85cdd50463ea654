"""The embedded local stack: moto for DynamoDB and its stream, tables from the shared table specs,
the HTTP functions behind the local gateway, and the stream poller feeding the processor."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("dev")

REGION = "us-east-1"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_METERS_FILE = REPO_ROOT / "examples" / "meters.yaml"


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
        "POWERTOOLS_SERVICE_NAME": "meterline",
        "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
    }
    if config.meters_file is not None:
        env["METERLINE_METERS_FILE"] = str(config.meters_file)
    env.update(config.extra_env)
    os.environ.update(env)
    return env


class LocalStack:
    def __init__(self, config: LocalConfig) -> None:
        self.config = config
        self.gateway: Any = None
        self.poller: Any = None
        self._mock: Any = None
        self._server_thread: threading.Thread | None = None
        self._scheduler: threading.Thread | None = None
        self._stopping = threading.Event()
        self.functions: dict[str, Any] = {}

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

        from meterline.storage.dynamo import reset_client
        from meterline.storage.tables import ALL_TABLES

        reset_client()
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

        from functions.catalog import COMPACTOR_MODULE, HTTP_FUNCTIONS, PROCESSOR_MODULE
        from meterline_local.http_gateway import LocalGateway, Route
        from meterline_local.lambda_runtime import LocalFunction
        from meterline_local.stream_poller import StreamPoller, StreamSettings

        routes = []
        for spec in HTTP_FUNCTIONS:
            function = LocalFunction(spec.name, spec.module, self.config.function_concurrency)
            function.warm()
            self.functions[spec.name] = function
            routes.extend(Route(method, path, function) for method, path in spec.routes)
        processor = LocalFunction("processor", PROCESSOR_MODULE, concurrency=1)  # ParallelizationFactor 1
        processor.warm()
        self.functions["processor"] = processor

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
        compactor = LocalFunction("compactor", COMPACTOR_MODULE, concurrency=1)
        compactor.warm()
        self.functions["compactor"] = compactor
        self._scheduler = threading.Thread(target=self._run_compactor, args=(compactor,), name="compactor",
                                           daemon=True)
        self._scheduler.start()
        return self

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
        if self._scheduler is not None:
            self._scheduler.join(timeout=10)
        if self.poller is not None:
            self.poller.stop()
            self.poller.join(timeout=5)
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
