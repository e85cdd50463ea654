"""All-in cost per million events at 1, 4, 40 and 1,000 events/s, next to the floor (what storing an
event costs at the least), for bench/storage_cost.py.

Traffic: the benchmark workload (bench/workload.py: Zipf subjects, the example meters) at a steady rate,
in requests of REQUEST_EVENTS events, each sent when its last event happens, for SPAN_S of simulated time
(12 h, 3 h, 30 min, 3 min) ending at a UTC midnight, so that the span's last quarter, hour and day are
folded after it. Everything after ingestion runs the real Lambda handlers in simulated time, with the real
boto3 client against bench/dynamodb_stub.py (DynamoDB's semantics and billing: tests/fakes.py
CostModelDynamoDB):
- the events table's stream: STREAM_SHARDS shards (a new on-demand table is warm for 4,000 writes/s, i.e.
  at least four partitions, one shard each), records dealt to shards by key; per shard, Lambda gathers a
  batch for the batching window (infra default 5 s) or until it holds the batch size (1,000), and the
  processor handler gets it STREAM_DELAY_MS after it closes (the meter cache is the real one: 30 s of
  simulated time); the events' expiry (TTL deletes put REMOVE records on the stream, which the mapping's
  filter lets through) is assumed to reach the processor in batches like their inserts;
- the compactor handler every minute, and once more after the span to fold its last quarter, hour and
  day; the backfill handler every minute too, where backfills have a function of their own;
- the API-key authorizer for a request whenever API Gateway's 60-s cache of the key's answer has expired;
- one usage export report: tokens_total (every prompt event), hourly, grouped by model and type, one
  webhook per subject with usage in the hour: the exporter handler at each hour's end plus the settle
  delay, then the sender handler on its queued deliveries, the infra's batch size per invocation (the
  receiver is not called: its answer is WEBHOOK_RESPONSE_S of billed waiting per webhook).
Event puts and the time index's manifests are billed by putting the span's first INGEST_SAMPLE events
through EventsStore.put_new on an in-process cost model (their cost per event does not depend on the
rate); the ingest handler's CPU is measured on INGEST_CPU_REQUESTS requests through the stub.

A span shorter than a slot level's period (a day at every rate here; an hour at 40 and 1,000 events/s; a
quarter at 1,000) folds that level from part of its period. Its slot writes, reads and
storage are scaled to a whole period at steady traffic: by span / period x (expected distinct subjects in
a period / in the span), from the Zipf distribution (slots are per subject). The export (hourly) is scaled
the same way when the span is shorter than an hour. The sender runs on the first SENDER_SAMPLE_BATCHES
batches of each export; the rest are billed at the sampled cost per delivery (each does the same work).

Lambda: every invocation's CPU is measured (`time.process_time`: all threads) through real botocore; the
billed duration is CPU / vCPU share (memory / 1,769 MB, memory from infra/lambdas.py) + the DynamoDB round
trips on the invocation's longest chain of sequential calls (the invoking thread's calls plus the busiest
pool thread's, DDB_LATENCY_S each) + any webhook wait, rounded up to the millisecond. A CPU second here is
taken for a Lambda vCPU second. The compactor's run after the span is billed whole (its hour and day folds
are not scaled: a small over-estimate). Logs: what the handlers print at INFO, Lambda's platform records
and API Gateway's access log line.

Storage: every item (and index entry) the span's work leaves, billed as DynamoDB bills storage (its size
+ 100 bytes) from its first write until its TTL (`expiresAt`) plus TTL_DELETE_DELAY_DAYS; point-in-time
recovery on the items (not the global indexes) of the tables infra/storage.py gives it. Items that exist
once whatever the traffic (meters, the report, the API key, the compactor's state) are left out.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import math
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson

from bench.categories import CATALOG_TABLE, EVENTS_TABLE, USAGE_TABLE, category
from bench.dynamodb_stub import DynamoDBStub
from bench.workload import (
    FIRST_SEQUENCE,
    NAMESPACE,
    SUBJECTS,
    event_types,
    example_meters,
    generate,
    stream_record,
)
from meterline.settings import FINE_RETENTION_DAYS
from tests.fakes import DYNAMODB_ITEM_LIMIT, CostModelDynamoDB

ROOT = Path(__file__).resolve().parents[1]

RATES = (1, 4, 40, 1000)
HOUR_S, DAY_S = 3_600, 86_400
SPAN_S = {1: 12 * HOUR_S, 4: 3 * HOUR_S, 40: HOUR_S // 2, 1000: 180}
DAY_END_MS = 1_715_731_200_000  # 2024-05-15T00:00:00Z
QUARTER_MS, HOUR_MS, DAY_MS = 900_000, 3_600_000, 86_400_000
SEED = 20240515

REQUEST_EVENTS = 100
INGEST_SAMPLE = 20_000
INGEST_CPU_REQUESTS, INGEST_CPU_WARMUP = 30, 5
STREAM_SHARDS = 4
STREAM_DELAY_MS = 1_000
AUTHORIZER_CACHE_MS = 60_000
REPORT_METER = "tokens_total"
SENDER_SAMPLE_BATCHES = 20
WEBHOOK_RESPONSE_S = 0.1
# DynamoDB round trips from Lambda in the same region (the SDK's own work is measured, not assumed).
DDB_LATENCY_S = {"BatchWriteItem": 0.010, "BatchGetItem": 0.010, "TransactWriteItems": 0.010, "Query": 0.006,
                 "Scan": 0.008}
DDB_LATENCY_DEFAULT_S = 0.005
LAMBDA_MB_PER_VCPU = 1_769
TTL_DELETE_DELAY_DAYS = 2  # DynamoDB deletes expired items "typically within a few days"
PLATFORM_LOG_BYTES = 600  # Lambda's START/END/REPORT records (JSON log format) per invocation
ACCESS_LOG_BYTES = 450  # API Gateway's access log line (infra/api.py ACCESS_LOG_FORMAT) per request

# us-east-1 list prices
USD_PER_WRU = 0.625e-6
USD_PER_RRU = 0.125e-6
USD_PER_GB_MONTH = 0.25
USD_PITR_PER_GB_MONTH = 0.20
USD_PER_API_REQUEST = 1.00e-6
USD_PER_LAMBDA_REQUEST = 0.20e-6
USD_PER_GB_S = 0.0000133334  # arm64
USD_PER_SQS_REQUEST = 0.40e-6  # per 64 KB chunk of a request
USD_PER_SCHEDULE_INVOCATION = 1.00e-6
USD_PER_LOG_GB = 0.50
GB = 2**30
MONTH_MS = 730 * 3_600_000  # AWS bills GB-months of 730 hours

SLOT_PERIODS_MS = {"quarter_slots": QUARTER_MS, "hour_slots": HOUR_MS, "day_slots": DAY_MS}
COMPACTOR_PHASES = ("compactor", "tail")
FIXED_CATEGORIES = ("catalog_meters", "catalog_keys", "catalog_reports", "compaction_state")
EXPORT_PHASES = ("exporter", "sender")
COMPONENTS = ("writes", "reads", "storage", "pitr", "lambda_compute", "requests", "other")


# --- the deployed defaults, read from infra/ without importing CDK ---------------------------------------

def _module(path: str) -> ast.Module:
    return ast.parse((ROOT / path).read_text())


def _assignments(path: str) -> Iterator[tuple[str, ast.expr]]:
    """(name, value) of every `name = value` and `name: type = value` in a module."""
    for node in ast.walk(_module(path)):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            yield node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            yield node.target.id, node.value


def _constant(node: ast.AST | None) -> Any:
    if not isinstance(node, ast.Constant):
        raise ValueError(f"expected a literal, found {ast.dump(node) if node else None}")
    return node.value


@dataclass(frozen=True)
class Deployed:
    memory_mb: dict[str, int]
    default_memory_mb: int
    retention_days: int
    batching_window_s: int
    settle_s: int
    sender_batch: int
    pitr: dict[str, bool]  # table logical name -> point-in-time recovery

    def vcpu(self, function: str) -> float:
        return min(1.0, self.memory_mb.get(function, self.default_memory_mb) / LAMBDA_MB_PER_VCPU)

    def gb(self, function: str) -> float:
        return self.memory_mb.get(function, self.default_memory_mb) / 1024


def deployed() -> Deployed:
    """Memory sizes (infra/lambdas.py SIZING), retention and stream batching window (infra/config.py
    MeterlineProps), the export settle delay, the sender's batch size (infra/exports.py) and which tables
    keep point-in-time recovery (infra/storage.py)."""
    memory: dict[str, int] = {}
    default = None
    for name, value in _assignments("infra/lambdas.py"):
        if name == "SIZING" and isinstance(value, ast.Dict):
            for key, sizing in zip(value.keys, value.values, strict=True):
                assert isinstance(sizing, ast.Call)
                memory[_constant(key)] = _constant(sizing.args[0])
        if name == "DEFAULT_SIZING" and isinstance(value, ast.Call):
            default = _constant(value.args[0])
    props: dict[str, Any] = {}
    for node in ast.walk(_module("infra/config.py")):
        if isinstance(node, ast.ClassDef) and node.name == "MeterlineProps":
            props = {item.target.id: item.value for item in node.body
                     if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)}
    sender_batch = next(_constant(value) for name, value in _assignments("infra/exports.py")
                        if name == "SENDER_BATCH_SIZE")
    assert default is not None and memory, "infra/lambdas.py: SIZING and DEFAULT_SIZING not found"
    return Deployed(memory_mb=memory, default_memory_mb=default, retention_days=_constant(props["retention_days"]),
                    batching_window_s=_constant(props["stream_batching_window_seconds"]),
                    settle_s=_constant(props["export_settle_seconds"]), sender_batch=sender_batch,
                    pitr=point_in_time_recovery())


def point_in_time_recovery() -> dict[str, bool]:
    """Which tables infra/storage.py builds with point-in-time recovery: a `POINT_IN_TIME_RECOVERY` map of
    logical table names, or one literal `point_in_time_recovery_enabled` for every table."""
    tables = ("Events", "Usage", "Catalog")
    for name, value in _assignments("infra/storage.py"):
        if name == "POINT_IN_TIME_RECOVERY":
            found: dict[str, bool] = ast.literal_eval(value)
            return {table: bool(found.get(table, False)) for table in tables}
    for node in ast.walk(_module("infra/storage.py")):
        if isinstance(node, ast.keyword) and node.arg == "point_in_time_recovery_enabled":
            return dict.fromkeys(tables, bool(_constant(node.value)))
    raise ValueError("infra/storage.py: cannot tell which tables have point-in-time recovery")


TABLE_NAMES = {"Events": EVENTS_TABLE, "Usage": USAGE_TABLE, "Catalog": CATALOG_TABLE}


# --- distinct subjects --------------------------------------------------------------------------------

_ZIPF: list[float] = []


def distinct_subjects(events: float) -> float:
    """Expected number of distinct subjects among `events` workload events (Zipf, s = 1, over SUBJECTS)."""
    if not _ZIPF:
        harmonic = sum(1 / rank for rank in range(1, SUBJECTS + 1))
        _ZIPF.extend(1 / (rank * harmonic) for rank in range(1, SUBJECTS + 1))
    return sum(1 - math.exp(events * math.log1p(-p)) for p in _ZIPF)


def period_scale(rate: float, span_s: float, period_ms: int, share: float = 1.0) -> float:
    """What the work of one period costs per event at steady traffic, relative to its work done over the
    span alone: span / period x distinct subjects in a period / in the span (1 when the span covers
    whole periods). `share`: the fraction of events that count (a meter's event type)."""
    if span_s * 1000 >= period_ms:
        return 1.0
    in_span, in_period = rate * span_s * share, rate * period_ms / 1000 * share
    return span_s * 1000 / period_ms * distinct_subjects(in_period) / distinct_subjects(in_span)


# --- measuring invocations ----------------------------------------------------------------------------

class _CountingSink(io.TextIOBase):
    """Where the handlers' logs go while measured: counts the bytes CloudWatch Logs would ingest."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, text: str) -> int:
        self.bytes += len(text.encode())
        return len(text)

    def writable(self) -> bool:
        return True


def _per_function() -> defaultdict[str, float]:
    return defaultdict(float)


@dataclass
class Lambdas:
    """Per function: invocations, measured CPU seconds, billed GB-s, log bytes."""

    invocations: defaultdict[str, float] = field(default_factory=_per_function)
    cpu_s: defaultdict[str, float] = field(default_factory=_per_function)
    billed_gb_s: defaultdict[str, float] = field(default_factory=_per_function)
    log_bytes: defaultdict[str, float] = field(default_factory=_per_function)

    def scaled(self, function: str, factor: float) -> None:
        for counter in (self.invocations, self.cpu_s, self.billed_gb_s, self.log_bytes):
            counter[function] *= factor


class Harness:
    """Runs handlers as Lambda would, in simulated time, with the process-wide DynamoDB client pointed at
    the stub, and measures each invocation."""

    def __init__(self, settings: Deployed) -> None:
        self.settings = settings
        self.phase = "setup"
        self.clock_ms = 0
        self.latency: defaultdict[int, float] = defaultdict(float)
        self.sink = _CountingSink()
        self.lambdas = Lambdas()

    # botocore event hooks on the DynamoDB client
    def _headers(self, request: Any, **_: Any) -> None:
        request.headers["x-bench-phase"] = self.phase
        request.headers["x-bench-clock"] = str(self.clock_ms)

    def _round_trip(self, model: Any, **_: Any) -> None:
        self.latency[threading.get_ident()] += DDB_LATENCY_S.get(model.name, DDB_LATENCY_DEFAULT_S)

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-sign.dynamodb", self._headers)
        client.meta.events.register("before-call.dynamodb", self._round_trip)

    def invoke(self, function: str, phase: str, call: Callable[[], Any], wait_s: float = 0.0) -> Any:
        """One Lambda invocation of `function`: CPU measured, duration modeled (module docstring)."""
        self.phase = phase
        self.latency = defaultdict(float)
        self.sink.bytes = 0
        main = threading.get_ident()
        started = time.process_time()
        result = call()
        cpu = time.process_time() - started
        chain = self.latency.pop(main, 0.0) + max(self.latency.values(), default=0.0)
        billed_s = math.ceil((cpu / self.settings.vcpu(function) + chain + wait_s) * 1000) / 1000
        self.lambdas.invocations[function] += 1
        self.lambdas.cpu_s[function] += cpu
        self.lambdas.billed_gb_s[function] += billed_s * self.settings.gb(function)
        self.lambdas.log_bytes[function] += self.sink.bytes + PLATFORM_LOG_BYTES
        return result


class FakeSqs:
    """The SQS client of meterline.aws.queues: keeps the messages, counts billed requests (64 KB chunks)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.requests = 0

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        self.requests += max(1, math.ceil(sum(len(e["MessageBody"].encode()) for e in Entries) / 65_536))
        self.messages.extend({"MessageId": str(uuid.uuid4()), "ReceiptHandle": uuid.uuid4().hex,
                              "Body": e["MessageBody"], "MD5OfBody": hashlib.md5(e["MessageBody"].encode()).hexdigest(),
                              "Attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1715731200000",
                                             "SenderId": "AIDAEXAMPLE",
                                             "ApproximateFirstReceiveTimestamp": "1715731200000"}}
                             for e in Entries)
        return {"Successful": [{"Id": e["Id"], "MessageId": "m"} for e in Entries], "Failed": []}

    def send_message(self, QueueUrl: str, MessageBody: str, DelaySeconds: int = 0) -> dict[str, Any]:  # noqa: N803
        self.send_message_batch(QueueUrl, [{"Id": "0", "MessageBody": MessageBody}])
        return {"MessageId": "m"}


class FakeKms:
    def decrypt(self, CiphertextBlob: bytes, EncryptionContext: dict[str, str]) -> dict[str, Any]:  # noqa: N803
        return {"Plaintext": b"whsec_" + CiphertextBlob}


@dataclass(frozen=True)
class _Answered:
    """What the sender's webhook POST returns here (no network: the wait is billed as WEBHOOK_RESPONSE_S)."""

    status_code: int = 200
    error: str | None = None
    duration_ms: int = int(WEBHOOK_RESPONSE_S * 1000)

    @property
    def ok(self) -> bool:
        return True


def _answered(*_: Any, **__: Any) -> _Answered:
    return _Answered()


QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/bench-deliveries"
QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:bench-deliveries"
ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1", "EVENTS_TABLE": EVENTS_TABLE, "USAGE_TABLE": USAGE_TABLE,
    "CATALOG_TABLE": CATALOG_TABLE, "DELIVERY_QUEUE_URL": QUEUE_URL, "DELIVERY_DLQ_URL": QUEUE_URL + "-dlq",
    "EXPORT_QUEUE_URL": QUEUE_URL + "-requests", "SIGNING_KEY_ID": "bench", "METERLINE_AUTH": "none",
}


@contextmanager
def lambda_runtime(stub: DynamoDBStub, settings: Deployed) -> Iterator[Harness]:
    """The handlers' environment for the simulation: clients, clocks and logs redirected, restored after."""
    import os

    from functions.authorizer import handler as authorizer
    from functions.compactor import handler as compactor
    from functions.exporter import handler as exporter
    from functions.processor import handler as processor
    from functions.sender import handler as sender
    from meterline import bootstrap
    from meterline.aws import clients
    from meterline.observability import logger
    from meterline.processing import stream_batch
    from meterline.services import exports, meter_source

    harness = Harness(settings)
    backfill = scheduled_backfill()
    saved_env = {name: os.environ.get(name) for name in (*ENVIRONMENT, "AWS_ENDPOINT_URL_DYNAMODB")}
    clock = lambda: harness.clock_ms  # noqa: E731
    patches = [(processor, "now_ms", clock), (stream_batch, "now_ms", clock),
               (stream_batch, "meter_catalog", meter_source.meter_catalog),
               (stream_batch, "usage_store", bootstrap.usage_store), (compactor, "now_ms", clock),
               (exporter, "now_ms", clock), (sender, "now_ms", clock), (authorizer, "now_ms", clock),
               (meter_source, "time", SimpleNamespace(monotonic=lambda: harness.clock_ms / 1000)),
               (exports, "post_webhook", _answered)]
    if backfill is not None:
        patches.append((backfill, "now_ms", clock))
    saved = [(module, name, getattr(module, name)) for module, name, _ in patches]
    level = logger.log_level
    stream = logger.registered_handler.setStream(harness.sink)  # type: ignore[attr-defined]
    try:
        os.environ.update(ENVIRONMENT)
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = stub.url
        clients.reset_clients()
        bootstrap.reset()
        meter_source.invalidate()
        clients._clients.update({"sqs": FakeSqs(), "kms": FakeKms()})  # noqa: SLF001 - no SQS or KMS here
        harness.attach(clients.aws_client("dynamodb"))
        for module, name, value in patches:
            setattr(module, name, value)
        logger.setLevel("INFO")
        with redirect_stdout(harness.sink):
            yield harness
    finally:
        logger.setLevel(level)
        logger.registered_handler.setStream(stream)  # type: ignore[attr-defined]
        for module, name, value in saved:
            setattr(module, name, value)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        clients.reset_clients()
        bootstrap.reset()
        meter_source.invalidate()


def scheduled_backfill() -> Any:
    """The backfill function's handler module, where backfills run in a function of their own (scheduled
    every minute like the compactor); None where the compactor runs them."""
    try:
        from functions.backfill import handler
    except ImportError:
        return None
    return handler


# --- the simulation -----------------------------------------------------------------------------------

@dataclass
class Batch:
    invoke_ms: int
    records: list[dict[str, Any]]


def stream_batches(requests: Sequence[tuple[int, list[dict[str, Any]]]], window_ms: int, size: int) -> list[Batch]:
    """The processor's batches: records dealt to shards by key; per shard, a batch opens with its first
    record and is handed over when the window has passed or it holds `size` records."""
    batches: list[Batch] = []
    open_batches: dict[int, tuple[int, list[dict[str, Any]]]] = {}
    sequence = FIRST_SEQUENCE

    def close(shard: int, at_ms: int) -> None:
        _, records = open_batches.pop(shard)
        batches.append(Batch(at_ms + STREAM_DELAY_MS, records))

    for sent_ms, items in requests:
        for shard, (opened, _) in list(open_batches.items()):
            if sent_ms > opened + window_ms:
                close(shard, opened + window_ms)
        for item in items:
            shard = zlib.crc32(item["pk"]["S"].encode()) % STREAM_SHARDS
            sequence += 17
            opened, records = open_batches.setdefault(shard, (sent_ms, []))
            records.append(stream_record(item, sequence, sent_ms // 1000))
            if len(records) == size:
                close(shard, sent_ms)
    for shard, (opened, _) in list(open_batches.items()):
        close(shard, opened + window_ms)
    return sorted(batches, key=lambda batch: batch.invoke_ms)


def expired(batch: Batch) -> Batch:
    """The batch's events expiring: the REMOVE records TTL deletion puts on the stream (keys, no image),
    which the event source mapping's filter (no time-index attribute in the new image) lets through."""
    return Batch(batch.invoke_ms, [
        {**record, "eventName": "REMOVE", "userIdentity": {"type": "Service", "principalId": "dynamodb.amazonaws.com"},
         "dynamodb": {"ApproximateCreationDateTime": record["dynamodb"]["ApproximateCreationDateTime"],
                      "Keys": record["dynamodb"]["Keys"], "SequenceNumber": record["dynamodb"]["SequenceNumber"],
                      "SizeBytes": 60, "StreamViewType": "NEW_IMAGE"}}
        for record in batch.records])


@dataclass
class RateResult:
    rate: int
    events: int
    span_s: int
    wru: dict[tuple[str, str], float]  # (phase, category) -> write units, scaled to the span's events
    rru: dict[tuple[str, str], float]
    # (table, category, index entry?) -> (bytes x lifetime ms, bytes) of what the span's events leave stored
    storage: dict[tuple[str, str, bool], tuple[float, float]]
    never_expiring_bytes: float
    lambdas: Lambdas
    sqs_requests: float
    schedule_invocations: float
    api_requests: float
    access_log_bytes: float
    event_item_bytes: float  # per event: the event item alone (the floor's storage)
    event_item_lifetime_ms: float
    deliveries: float
    batches: int


def _report(created_ms: int) -> Any:
    from meterline.domain.reports import report_definition
    from meterline.domain.timeutil import format_ms
    from meterline.services.meters import new_ulid

    definition = report_definition({
        "slug": "hourly_tokens", "meterIdOrSlug": REPORT_METER,
        "schedule": {"interval": "1h", "startAt": "2024-01-01T00:00:00Z"},
        "query": {"groupBy": ["model", "type"]}, "endpoint": {"url": "https://billing.example.com/usage"},
    })
    return definition.model_copy(update={"id": new_ulid(), "created_at": format_ms(created_ms),
                                         "updated_at": format_ms(created_ms)})


def _ingest_costs(requests: Sequence[tuple[int, list[Any]]], retention_days: int) -> tuple[CostModelDynamoDB, int]:
    """Event puts and time-index manifests of the first INGEST_SAMPLE events, through EventsStore.put_new:
    the cost model that billed them, and how many events it stored."""
    from meterline.storage.events_store import EventsStore
    from meterline.storage.tables import EVENT_TIME_INDEX

    client = CostModelDynamoDB({EVENTS_TABLE: ("pk", None)}, category, item_limit=DYNAMODB_ITEM_LIMIT,
                               indexes={EVENTS_TABLE: ((EVENT_TIME_INDEX.partition_key, EVENT_TIME_INDEX.sort_key),)})
    client.phase = "ingest"
    store = EventsStore(client=client, table=EVENTS_TABLE, retention_days=retention_days)
    stored = 0
    for sent_ms, events in requests:
        if stored >= INGEST_SAMPLE:
            break
        client.clock_ms = sent_ms
        assert store.put_new(NAMESPACE, events, sent_ms).stored == len(events)
        stored += len(events)
    return client, stored


def _rfc3339(ms: int) -> str:
    from meterline.domain.timeutil import format_ms

    return format_ms(ms)


def _stub_tables(stub: DynamoDBStub) -> None:
    from meterline.storage.tables import EVENT_TIME_INDEX

    stub.reset({EVENTS_TABLE: ("pk", None), USAGE_TABLE: ("pk", "sk"), CATALOG_TABLE: ("pk", "sk")},
               "bench.categories:category",
               indexes={EVENTS_TABLE: ((EVENT_TIME_INDEX.partition_key, EVENT_TIME_INDEX.sort_key),)},
               item_limit=DYNAMODB_ITEM_LIMIT)


@dataclass(frozen=True)
class PerRequest:
    """One ingest invocation (a request of REQUEST_EVENTS events): measured CPU, billed GB-s, log bytes."""

    cpu_s: float
    billed_gb_s: float
    log_bytes: float


def measure_ingest(stub: DynamoDBStub, settings: Deployed) -> PerRequest:
    """The ingest handler on requests of workload events (1,000 events/s), through real botocore to the
    stub (whose puts are not billed here: see _ingest_costs)."""
    from functions.ingest import handler as ingest
    from meterline_local.http_gateway import build_v2_event
    from meterline_local.lambda_runtime import LocalLambdaContext

    _stub_tables(stub)
    count = (INGEST_CPU_WARMUP + INGEST_CPU_REQUESTS) * REQUEST_EVENTS
    events = list(generate(count, DAY_END_MS - count, 1000, seed=SEED))
    headers = [("content-type", "application/cloudevents-batch+json"), ("host", "bench")]
    with lambda_runtime(stub, settings) as harness:
        for position in range(0, count, REQUEST_EVENTS):
            chunk = events[position:position + REQUEST_EVENTS]
            body = orjson.dumps([{"specversion": "1.0", "id": e.id, "source": e.source, "type": e.type,
                                  "subject": e.subject, "time": _rfc3339(e.time), "data": e.data} for e in chunk])
            event = build_v2_event("POST", "/api/v1/events", "", headers, body, None, {}, "127.0.0.1")
            context = LocalLambdaContext("ingest", timeout_s=15, memory_mb=settings.memory_mb["ingest"])
            harness.clock_ms = chunk[-1].time
            phase = "ingest_warmup" if position < INGEST_CPU_WARMUP * REQUEST_EVENTS else "ingest"
            response = harness.invoke(phase, phase, lambda e=event, c=context: ingest.handler(e, c))
            assert response["statusCode"] == 204, response
        lambdas = harness.lambdas
    calls = lambdas.invocations["ingest"]
    return PerRequest(lambdas.cpu_s["ingest"] / calls, lambdas.billed_gb_s["ingest"] / calls,
                      lambdas.log_bytes["ingest"] / calls)


def simulate(rate: int, stub: DynamoDBStub, settings: Deployed, ingest: PerRequest) -> RateResult:
    from functions.authorizer import handler as authorizer
    from functions.compactor import handler as compactor
    from functions.exporter import handler as exporter
    from functions.processor import handler as processor
    from functions.sender import handler as sender
    from meterline import bootstrap
    from meterline.aws import clients
    from meterline.domain.meters import BackfillState, BackfillStatus
    from meterline.services import keys, meter_source
    from meterline.settings import STREAM_BATCH_SIZE, compaction_timing
    from meterline.storage.events_store import EventsStore
    from meterline_local.lambda_runtime import LocalLambdaContext
    from meterline_local.sqs_poller import lambda_record

    span_s = SPAN_S[rate]
    end_ms = DAY_END_MS
    start_ms = end_ms - span_s * 1000
    count = rate * span_s
    events = list(generate(count, start_ms, rate, seed=SEED + rate))
    requests = [(chunk[-1].time, chunk) for chunk in (events[i:i + REQUEST_EVENTS]
                                                      for i in range(0, count, REQUEST_EVENTS))]
    ingested, sample_events = _ingest_costs(requests, settings.retention_days)
    store = EventsStore(table=EVENTS_TABLE, retention_days=settings.retention_days)
    items = [(sent_ms, [store.item(NAMESPACE, e, sent_ms) for e in chunk]) for sent_ms, chunk in requests]
    batches = stream_batches(items, settings.batching_window_s * 1000, STREAM_BATCH_SIZE)
    del events, items

    _stub_tables(stub)
    timing = compaction_timing()
    deliveries = sampled = 0
    with lambda_runtime(stub, settings) as harness:
        # setup: the meters (backfilled), an API key, the report; a compactor up to date at the span's start
        harness.phase, harness.clock_ms = "setup", start_ms - 60_000
        meters = bootstrap.meters_store()
        for meter in example_meters():
            done = meter.model_copy(update={"backfill": BackfillStatus(status=BackfillState.COMPLETED)})
            assert meters.create(NAMESPACE, done)
        key = keys.create_key(bootstrap.keys_store(), NAMESPACE, "ingest", None, harness.clock_ms).key
        report = _report(start_ms)
        assert bootstrap.reports_store().create(NAMESPACE, report, b"bench-secret")
        assert bootstrap.compactor().run_until_caught_up(start_ms).caught_up
        meter_source.invalidate()
        sqs: FakeSqs = clients._clients["sqs"]  # noqa: SLF001

        def context(function: str) -> Any:
            memory = settings.memory_mb.get(function, settings.default_memory_mb)
            return LocalLambdaContext(function, timeout_s=300, memory_mb=memory)

        def run_compactor(phase: str) -> None:
            result = harness.invoke("compactor", phase, lambda: compactor.handler({}, context("compactor")))
            assert result["caughtUp"], result

        backfill = scheduled_backfill()

        def run_backfill() -> None:
            harness.invoke("backfill", "backfill", lambda: backfill.handler({}, context("backfill")))

        def run_batch(batch: Batch, phase: str = "processor") -> None:
            result = harness.invoke("processor", phase,
                                    lambda: processor.handler({"Records": batch.records}, context("processor")))
            assert result == {"batchItemFailures": []}, result

        def authorize() -> None:
            event = {"routeKey": "POST /api/v1/events", "headers": {"authorization": f"Bearer {key}"}}
            answer = harness.invoke("authorizer", "authorizer",
                                    lambda: authorizer.handler(event, context("authorizer")))
            assert answer["context"].get("namespace") == NAMESPACE, answer

        def export() -> None:
            nonlocal deliveries, sampled
            event = {"namespace": NAMESPACE, "report": report.slug, "reportId": report.id}
            runs = harness.invoke("exporter", "exporter", lambda: exporter.handler(event, context("exporter")))
            assert len(runs["runs"]) == 1, runs
            messages, sqs.messages = sqs.messages, []
            deliveries += len(messages)
            size = settings.sender_batch
            for first in range(0, min(len(messages), SENDER_SAMPLE_BATCHES * size), size):
                records = [lambda_record(m, QUEUE_ARN, "us-east-1") for m in messages[first:first + size]]
                result = harness.invoke("sender", "sender",
                                        lambda r=records: sender.handler({"Records": r}, context("sender")),
                                        wait_s=WEBHOOK_RESPONSE_S * len(records))
                assert result == {"batchItemFailures": []}, result
                sampled += len(records)

        timeline: list[tuple[int, int, Callable[[], None]]] = []
        for minute in range(start_ms + 60_000, end_ms + 1, 60_000):
            timeline.append((minute, 0, lambda: run_compactor("compactor")))
            if backfill is not None:
                timeline.append((minute, 0, run_backfill))
        for hour_end in range(start_ms - start_ms % HOUR_MS + HOUR_MS, end_ms + 1, HOUR_MS):
            timeline.append((hour_end + settings.settle_s * 1000, 1, export))
        authorized = -AUTHORIZER_CACHE_MS
        for sent_ms, _ in requests:
            if sent_ms - authorized >= AUTHORIZER_CACHE_MS:
                authorized = sent_ms
                timeline.append((sent_ms, 2, authorize))
        timeline.extend((batch.invoke_ms, 3, lambda b=batch: run_batch(b)) for batch in batches)
        # the same events expiring (TTL), their REMOVE records batched as their INSERTs were (nothing to write)
        timeline.extend((batch.invoke_ms, 5, lambda b=batch: run_batch(expired(b), "expiry")) for batch in batches)
        timeline.append((end_ms + timing.grace_ms + 60_000, 4, lambda: run_compactor("tail")))
        for at_ms, _, step in sorted(timeline, key=lambda entry: entry[:2]):
            harness.clock_ms = at_ms
            step()
        lambdas = harness.lambdas
    stats = stub.stats()

    # one period's work at steady traffic (module docstring); the sender's sample stands for every delivery
    export_scale = period_scale(rate, span_s, HOUR_MS, share=1 / len(event_types()))
    sender_scale = export_scale * (deliveries / sampled if sampled else 0.0)
    wru: dict[tuple[str, str], float] = defaultdict(float)
    rru: dict[tuple[str, str], float] = defaultdict(float)
    for phase, name, kind, units in stats["units"]:
        if phase in ("setup", "ingest", "ingest_warmup"):
            continue
        scale = 1.0
        if phase in COMPACTOR_PHASES and name in SLOT_PERIODS_MS:
            scale = period_scale(rate, span_s, SLOT_PERIODS_MS[name])
        elif phase == "exporter":
            scale = export_scale
        elif phase == "sender":
            scale = sender_scale
        (wru if kind == "WRU" else rru)[(phase, name)] += units * scale
    storage: dict[tuple[str, str, bool], tuple[float, float]] = {}
    never = 0.0
    for table, name, index, _items, size, size_ms, size_forever in stats["storage"]:
        if table == EVENTS_TABLE:
            continue  # events and their time index: from _ingest_costs
        if name in FIXED_CATEGORIES:  # a few items whatever the traffic (meters, keys, the compaction state)
            size, size_forever = size - size_forever, 0.0
        scale = 1.0
        if name in SLOT_PERIODS_MS:
            scale = period_scale(rate, span_s, SLOT_PERIODS_MS[name])
        elif table == CATALOG_TABLE:
            scale = export_scale
        never += size_forever * scale
        storage[(table, name, index)] = (size_ms * scale, size * scale)
    for table, name, size, lifetime, index in ingested.stored_items():
        assert lifetime is not None, (table, name)
        size_ms, size_sum = storage.get((table, name, index), (0.0, 0.0))
        storage[(table, name, index)] = (size_ms + size * lifetime * count / sample_events,
                                         size_sum + size * count / sample_events)
    event_items = storage[(EVENTS_TABLE, "event_puts", False)]

    lambdas.scaled("exporter", export_scale)
    lambdas.scaled("sender", sender_scale)
    ingest_requests = count / REQUEST_EVENTS
    lambdas.invocations["ingest"] = ingest_requests
    lambdas.cpu_s["ingest"] = ingest.cpu_s * ingest_requests
    lambdas.billed_gb_s["ingest"] = ingest.billed_gb_s * ingest_requests
    lambdas.log_bytes["ingest"] = ingest.log_bytes * ingest_requests
    for name in ("event_puts", "time_index"):
        wru[("ingest", name)] = ingested.total("WRU", "ingest", name) * count / sample_events
    return RateResult(
        rate=rate, events=count, span_s=span_s, wru=dict(wru), rru=dict(rru), storage=storage,
        never_expiring_bytes=never, lambdas=lambdas,
        sqs_requests=(sqs.requests + 2 * math.ceil(deliveries / settings.sender_batch)) * export_scale,
        schedule_invocations=lambdas.invocations["exporter"], api_requests=ingest_requests,
        access_log_bytes=ingest_requests * ACCESS_LOG_BYTES,
        event_item_bytes=event_items[1] / count, event_item_lifetime_ms=event_items[0] / event_items[1],
        deliveries=deliveries * export_scale, batches=len(batches),
    )


# --- dollars ------------------------------------------------------------------------------------------

FINE_CATEGORIES = ("raw_rows", "quarter_slots")  # minute rows, quarter-hour slots
# The defaults the figures are priced with (no point-in-time recovery on the usage table, minute rows and
# quarter slots kept FINE_RETENTION_DAYS), and as they were before: each alone, then both.
LEVERS = {
    "": {},
    "_usage_with_pitr": {"usage_pitr": True},
    "_fine_rows_kept_as_events": {"fine_rows_as_events": True},
    "_before_storage_defaults": {"usage_pitr": True, "fine_rows_as_events": True},
}


def dollars(result: RateResult, settings: Deployed, usage_pitr: bool | None = None,
            fine_rows_as_events: bool = False) -> dict[str, float]:
    """USD per million events: the all-in figure by component, and the floor. `usage_pitr` and
    `fine_rows_as_events` price other storage settings than the defaults (point-in-time recovery on the usage
    table or not; minute rows and quarter slots kept as long as events instead of FINE_RETENTION_DAYS): TTL
    deletes are free, so only storage changes."""
    per = 1e6 / result.events
    pitr = {TABLE_NAMES[name]: enabled for name, enabled in settings.pitr.items()}
    if usage_pitr is not None:
        pitr[USAGE_TABLE] = usage_pitr
    delay_ms = TTL_DELETE_DELAY_DAYS * DAY_MS
    storage_gb_months = pitr_gb_months = 0.0
    for (table, name, index), (size_ms, size) in result.storage.items():
        if fine_rows_as_events and table == USAGE_TABLE and name in FINE_CATEGORIES:
            size_ms += size * (settings.retention_days - FINE_RETENTION_DAYS) * DAY_MS
        gb_months = (size_ms + size * delay_ms) / MONTH_MS / GB
        storage_gb_months += gb_months
        if pitr[table] and not index:  # continuous backups cover the table's items, not its global indexes
            pitr_gb_months += gb_months
    lambdas = result.lambdas
    log_gb = (sum(lambdas.log_bytes.values()) + result.access_log_bytes) / GB
    parts = {
        "writes": sum(result.wru.values()) * USD_PER_WRU,
        "reads": sum(result.rru.values()) * USD_PER_RRU,
        "storage": storage_gb_months * USD_PER_GB_MONTH,
        "pitr": pitr_gb_months * USD_PITR_PER_GB_MONTH,
        "lambda_compute": sum(lambdas.billed_gb_s.values()) * USD_PER_GB_S,
        "requests": result.api_requests * USD_PER_API_REQUEST
        + sum(lambdas.invocations.values()) * USD_PER_LAMBDA_REQUEST,
        "other": result.sqs_requests * USD_PER_SQS_REQUEST + result.schedule_invocations * USD_PER_SCHEDULE_INVOCATION
        + log_gb * USD_PER_LOG_GB,
    }
    out = {name: value * per for name, value in parts.items()}
    out["all_in"] = sum(out.values())
    # of which the hourly report's exports: their DynamoDB work, catalog items, functions, queue and schedule
    export_storage = sum((size_ms + size * delay_ms) / MONTH_MS / GB
                         * (USD_PER_GB_MONTH + (USD_PITR_PER_GB_MONTH if pitr[table] and not index else 0.0))
                         for (table, name, index), (size_ms, size) in result.storage.items()
                         if name in ("catalog_runs", "catalog_claims"))
    out["exports"] = per * (
        sum(units for (phase, _), units in result.wru.items() if phase in EXPORT_PHASES) * USD_PER_WRU
        + sum(units for (phase, _), units in result.rru.items() if phase in EXPORT_PHASES) * USD_PER_RRU
        + export_storage + result.sqs_requests * USD_PER_SQS_REQUEST
        + result.schedule_invocations * USD_PER_SCHEDULE_INVOCATION
        + sum(lambdas.billed_gb_s[f] * USD_PER_GB_S + lambdas.invocations[f] * USD_PER_LAMBDA_REQUEST
              + lambdas.log_bytes[f] / GB * USD_PER_LOG_GB for f in EXPORT_PHASES))
    event_gb_months = result.event_item_bytes * 1e6 * (result.event_item_lifetime_ms + delay_ms) / MONTH_MS / GB
    out["floor"] = (USD_PER_WRU * 1e6 + event_gb_months * (USD_PER_GB_MONTH
                                                            + (USD_PITR_PER_GB_MONTH if pitr[EVENTS_TABLE] else 0.0))
                    + 1e6 / REQUEST_EVENTS * (USD_PER_API_REQUEST + USD_PER_LAMBDA_REQUEST))
    return out


def rate_figures(result: RateResult, settings: Deployed) -> dict[str, float]:
    """The printed figures of one rate (`<name>_<rate>eps`)."""
    tag = f"{result.rate}eps"
    base = dollars(result, settings)
    figures = {f"usd_per_million_all_in_{tag}": base["all_in"], f"usd_floor_per_million_{tag}": base["floor"],
               f"cost_ratio_to_floor_{tag}": base["all_in"] / base["floor"]}
    figures.update({f"usd_{name}_per_million_{tag}": base[name] for name in (*COMPONENTS, "exports")})
    per = 1e6 / result.events
    figures[f"wru_per_event_all_in_{tag}"] = sum(result.wru.values()) / result.events
    figures[f"rru_per_event_all_in_{tag}"] = sum(result.rru.values()) / result.events
    figures[f"lambda_gb_s_per_million_{tag}"] = sum(result.lambdas.billed_gb_s.values()) * per
    figures[f"processor_batches_per_million_{tag}"] = result.batches * per  # as many again for the expiry
    figures[f"compactor_runs_per_million_{tag}"] = result.lambdas.invocations["compactor"] * per
    figures[f"webhooks_per_million_{tag}"] = result.deliveries * per
    figures[f"storage_bytes_never_expiring_per_million_{tag}"] = result.never_expiring_bytes * per
    for lever, options in LEVERS.items():
        if lever:
            priced = dollars(result, settings, **options)
            figures[f"cost_ratio_to_floor_{tag}{lever}"] = priced["all_in"] / priced["floor"]
    return figures


def run() -> dict[str, float]:
    """Every rate's figures, in print order. The ingest measurement first, then one process per rate (each
    with its own stub), side by side: CPU is measured per process, so they need not take turns."""
    ingest = PerRequest(**_job("ingest"))
    jobs = [_start("rate", str(rate), json.dumps(asdict(ingest))) for rate in RATES]
    figures: dict[str, float] = {}
    for job in jobs:
        figures.update(_finish(job))
    figures["ingest_cpu_us_per_event_botocore"] = ingest.cpu_s / REQUEST_EVENTS * 1e6
    return figures


def _start(*arguments: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "bench.all_in", *arguments], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)


def _finish(job: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = job.communicate()
    if job.returncode != 0:
        raise RuntimeError(f"{job.args!r} failed ({job.returncode})")
    last = out.strip().splitlines()[-1]
    assert last.startswith(RESULT), out[-2000:]
    answer: dict[str, Any] = json.loads(last.removeprefix(RESULT))
    return answer


def _job(*arguments: str) -> dict[str, Any]:
    return _finish(_start(*arguments))


RESULT = "result "


def main(arguments: Sequence[str]) -> None:
    """`python -m bench.all_in ingest` or `... rate R INGEST_JSON`: one job of run(), its result on the last
    line of stdout."""
    settings = deployed()
    with DynamoDBStub() as stub:
        if arguments[0] == "ingest":
            answer: dict[str, Any] = asdict(measure_ingest(stub, settings))
        else:
            rate, ingest = int(arguments[1]), PerRequest(**json.loads(arguments[2]))
            result = simulate(rate, stub, settings, ingest)
            answer = rate_figures(result, settings)
            answer[f"processor_cpu_us_per_event_botocore_{rate}eps"] = (
                result.lambdas.cpu_s["processor"] / result.events * 1e6)
    print(RESULT + json.dumps(answer), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
