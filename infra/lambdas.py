"""What every Meterline Lambda has in common, and what each one may touch.

One role per function with exactly the DynamoDB actions it needs (declared in TABLE_ACCESS, so a new
function without a declaration fails the synth instead of getting broad rights), its own log group
with retention, arm64, Python 3.12, JSON logs at the stage's log level, no X-Ray tracing, and the
two shared layers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.bundling import PYTHON_VERSION, REPO_ROOT, core_layer_code, dependency_layer_code
from infra.config import MeterlineProps
from meterline.storage.tables import EVENT_TIME_INDEX, TableSpec

RUNTIME = lambda_.Runtime.PYTHON_3_12
assert RUNTIME.name == f"python{PYTHON_VERSION}", "the runtime and the dependency layer's target must agree"
ARCHITECTURE = lambda_.Architecture.ARM_64
FUNCTIONS_DIR = REPO_ROOT / "functions"
HANDLER = "handler.handler"
SERVICE_NAME = "meterline"

_READ = ("dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query")

# The DynamoDB actions each function may perform, per table (by TableSpec.logical_name). Nothing else
# is granted on the tables (the processor's stream read comes from its event source mapping). Each
# function gets the name of exactly these tables in its environment (TableSpec.env_var).
TABLE_ACCESS: dict[str, dict[str, tuple[str, ...]]] = {
    # events by conditional PutItem; the request's time-index manifests by BatchWriteItem
    "ingest": {"Events": ("dynamodb:PutItem", "dynamodb:BatchWriteItem")},
    # reads a key by its id; records when it was last used
    "authorizer": {"Catalog": ("dynamodb:GetItem", "dynamodb:UpdateItem")},
    "api": {
        "Events": _READ,
        "Usage": _READ,
        # Meters are managed through the API (meterline.storage.meters_store).
        "Catalog": (*_READ, "dynamodb:PutItem", "dynamodb:DeleteItem"),
    },
    "processor": {
        # event index pages, raw counting rows and manifests (BatchWriteItem)
        "Usage": ("dynamodb:PutItem", "dynamodb:BatchWriteItem", "dynamodb:UpdateItem", "dynamodb:GetItem",
                  "dynamodb:Query"),
        "Catalog": _READ,  # the meters to count
    },
    "entitlements": {
        # features and entitlements: an item and its active-key guard, written together; grants; resets,
        # voids and balance snapshots update items (TransactWriteItems is authorized per item)
        "Catalog": (*_READ, "dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:UpdateItem"),
        "Usage": _READ,  # a metered entitlement's usage, through the usage query
    },
    "reports": {
        # reports (with their encrypted signing secrets) and manual runs; meters to check reports against
        "Catalog": (*_READ, "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"),
    },
    "exporter": {
        # runs, window claims (claim and run written with TransactWriteItems, which IAM authorizes per
        # item) and delivery records (BatchWriteItem)
        "Catalog": (*_READ, "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:BatchWriteItem"),
        "Usage": _READ,  # the report's usage query
    },
    "sender": {
        # delivery attempts; a finished delivery and its run's counts in one TransactWriteItems (updates only)
        "Catalog": (*_READ, "dynamodb:UpdateItem"),
    },
    "replay": {
        # a batch the processor's mapping gave up on, read back from the stream (granted on the stream in
        # infra/processing.py) and processed as the processor does
        "Usage": ("dynamodb:PutItem", "dynamodb:BatchWriteItem", "dynamodb:UpdateItem", "dynamodb:GetItem",
                  "dynamodb:Query"),
        "Catalog": _READ,
    },
    "compactor": {
        # reads raw rows and manifests, overwrites quarter and day slots and its state
        "Usage": (*_READ, "dynamodb:PutItem", "dynamodb:BatchWriteItem", "dynamodb:UpdateItem"),
        "Catalog": _READ,  # the meters to fold
    },
    "backfill": {
        # a namespace's manifests by hour (the EventTime index, INDEX_ACCESS), then manifests and events by key
        "Events": ("dynamodb:BatchGetItem",),
        # raw rows and work lists (BatchWriteItem), as the processor writes them; the recount requests the
        # processors write (Query their one partition, DeleteItem each served one, conditionally)
        "Usage": ("dynamodb:BatchWriteItem", "dynamodb:Query", "dynamodb:DeleteItem"),
        # the markers of due backfills and their meters; backfill progress and resume points
        "Catalog": (*_READ, "dynamodb:PutItem", "dynamodb:DeleteItem"),
    },
}

# The same, for the functions of the constructs beside Meterline (infra/metering.py).
GATEWAY_TABLE_ACCESS: dict[str, dict[str, tuple[str, ...]]] = {
    # ApiMetering: access-log requests become events, stored as the ingest function stores them (events by
    # PutItem, the request's time-index manifests by BatchWriteItem)
    "access_log_metering": {"Events": ("dynamodb:PutItem", "dynamodb:BatchWriteItem")},
    # EntitlementAuthorizer: read-only; entitlements, grants and meters, and a metered feature's usage
    # (its values keep no balance snapshots, see meterline.bootstrap.entitlement_gate)
    "entitlement_authorizer": {"Catalog": _READ, "Usage": _READ},
}


# The global secondary indexes each function may Query, per table (granted on that index alone).
INDEX_ACCESS: dict[str, dict[str, tuple[str, ...]]] = {
    "backfill": {"Events": (EVENT_TIME_INDEX.name,)},
}


@dataclass(frozen=True)
class FunctionSizing:
    memory_mb: int
    timeout: Duration


# Memory buys CPU in Lambda; 512 MB arm64 keeps a 100-event ingest well inside its budget.
# HTTP functions stay below API Gateway's 30 s integration timeout.
SIZING: dict[str, FunctionSizing] = {
    "ingest": FunctionSizing(512, Duration.seconds(15)),
    "api": FunctionSizing(512, Duration.seconds(15)),
    "processor": FunctionSizing(512, Duration.seconds(60)),
    "compactor": FunctionSizing(1024, Duration.seconds(300)),
    # One given-up batch (at most the mapping's batch size) per message, read back and processed; within
    # the write margin, as the processor.
    "replay": FunctionSizing(512, Duration.seconds(60)),
    "backfill": FunctionSizing(1024, Duration.seconds(120)),
    "reports": FunctionSizing(512, Duration.seconds(15)),
    # An export queries a whole window of a report's meter and enqueues a delivery per subject.
    "exporter": FunctionSizing(1024, Duration.seconds(300)),
    # A batch of webhooks, each POST bounded by its timeout (infra/exports.py).
    "sender": FunctionSizing(512, Duration.seconds(120)),
    # A CloudWatch Logs batch holds up to thousands of requests, written 32 at a time.
    "access_log_metering": FunctionSizing(512, Duration.seconds(60)),
    # API Gateway waits at most 10 s for an authorizer.
    "entitlement_authorizer": FunctionSizing(512, Duration.seconds(10)),
}
DEFAULT_SIZING = FunctionSizing(512, Duration.seconds(15))


# When the compactor folds a quarter-hour, and how long before that a stream batch must have decided
# its rows are on time (more than the processor's timeout; see meterline.settings.CompactionTiming).
COUNTING_TIMING = {"METERLINE_COMPACTION_GRACE_SECONDS": "180", "METERLINE_WRITE_MARGIN_SECONDS": "90"}
assert all(float(COUNTING_TIMING["METERLINE_WRITE_MARGIN_SECONDS"]) > SIZING[name].timeout.to_seconds()
           for name in ("processor", "replay")), "counting rows must land within the write margin"


def removal_policy(props: MeterlineProps) -> RemovalPolicy:
    return RemovalPolicy.RETAIN if props.production else RemovalPolicy.DESTROY


class SharedLayers(Construct):
    """The core package layer and the dependency layer, shared by every function."""

    def __init__(self, scope: Construct, construct_id: str, *, bundle_dependencies: bool = True) -> None:
        super().__init__(scope, construct_id)
        self.core = lambda_.LayerVersion(
            self, "Core",
            code=core_layer_code(),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[ARCHITECTURE],
            description="Meterline shared core (python/meterline)",
        )
        self.dependencies = lambda_.LayerVersion(
            self, "Dependencies",
            code=dependency_layer_code(bundle=bundle_dependencies),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[ARCHITECTURE],
            description="Meterline third-party packages (layers/deps/requirements.txt)",
        )

    @property
    def all(self) -> list[lambda_.ILayerVersion]:
        return [self.dependencies, self.core]


class MeterlineFunction(Construct):
    """One handler folder `functions/<name>/` as a Lambda with its own role and log group."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name: str,
        description: str,
        props: MeterlineProps,
        layers: SharedLayers,
        tables: Mapping[TableSpec, dynamodb.ITable],
        reserved_concurrency: int | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        declared = TABLE_ACCESS.get(name, GATEWAY_TABLE_ACCESS.get(name))
        if declared is None:
            raise ValueError(f"function {name!r} has no entry in infra.lambdas.TABLE_ACCESS: declare what it may touch")
        source = FUNCTIONS_DIR / name
        if not (source / "handler.py").is_file():
            raise ValueError(f"{source}/handler.py does not exist")
        sizing = SIZING.get(name, DEFAULT_SIZING)

        self.role = iam.Role(
            self, "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Meterline {name} function",
        )
        self.log_group = logs.LogGroup(
            self, "Logs",
            retention=props.log_retention,
            removal_policy=removal_policy(props),
        )
        self.log_group.grant_write(self.role)

        by_name = {spec.logical_name: (spec, table) for spec, table in tables.items()}
        unknown = set(declared) - set(by_name)
        if unknown:
            raise ValueError(f"TABLE_ACCESS[{name!r}] names tables that meterline.storage.tables does not define: "
                             f"{sorted(unknown)}")
        access = [(by_name[table][0], by_name[table][1], actions) for table, actions in declared.items()]

        environment = {
            **COUNTING_TIMING,
            "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
            "POWERTOOLS_LOG_LEVEL": props.log_level,
            "METERLINE_DEFAULT_NAMESPACE": props.default_namespace,
            "METERLINE_AUTH": props.auth,
            "METERLINE_JWT_NAMESPACE_CLAIM": props.jwt_namespace_claim,
            **({"METERLINE_JWT_SCOPE_CLAIM": props.jwt_scope_claim} if props.jwt_scope_claim else {}),
            "METERLINE_RETENTION_DAYS": str(props.retention_days),
        }
        for variable, days in (("METERLINE_MINUTE_RETENTION_DAYS", props.minute_retention_days),
                               ("METERLINE_QUARTER_RETENTION_DAYS", props.quarter_retention_days)):
            if days is not None:
                environment[variable] = str(days)
        for spec, table, _ in access:
            environment[spec.env_var] = table.table_name

        self.function = lambda_.Function(
            self, "Function",
            description=description,
            code=lambda_.Code.from_asset(str(source), exclude=["__pycache__", "*.pyc"]),
            handler=HANDLER,
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            memory_size=sizing.memory_mb,
            timeout=sizing.timeout,
            role=self.role,
            log_group=self.log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            application_log_level_v2=_APPLICATION_LOG_LEVEL[props.log_level],
            system_log_level_v2=lambda_.SystemLogLevel.WARN,
            tracing=lambda_.Tracing.DISABLED,  # docs/decisions.md, "No X-Ray tracing"
            layers=layers.all,
            environment=environment,
            reserved_concurrent_executions=reserved_concurrency,
        )
        for _, table, actions in access:
            # on the table only: Table.grant would add every index as "index/*"
            self.role.add_to_policy(iam.PolicyStatement(actions=list(actions), resources=[table.table_arn]))
        for table_name, indexes in INDEX_ACCESS.get(name, {}).items():
            table = by_name[table_name][1]
            self.role.add_to_policy(iam.PolicyStatement(
                actions=["dynamodb:Query"], resources=[f"{table.table_arn}/index/{index}" for index in indexes]))


_APPLICATION_LOG_LEVEL = {
    "DEBUG": lambda_.ApplicationLogLevel.DEBUG,
    "INFO": lambda_.ApplicationLogLevel.INFO,
    "WARNING": lambda_.ApplicationLogLevel.WARN,
    "ERROR": lambda_.ApplicationLogLevel.ERROR,
}
