"""The benchmark workload, shared by bench/processor_cpu.py and bench/storage_cost.py.

Events of the example meters (examples/meters.yaml) arriving at a steady rate: event types drawn
uniformly from the meters' event types, group-by values from small per-key vocabularies, UNIQUE_COUNT
values (session ids) from a vocabulary of 50 per subject, subjects Zipf-distributed (s = 1) over
10,000 (rank 1, `customer-1`, is the most active), seeded RNG. Also: the meter catalog as the processor
sees it (stored meters, with ULID ids), and the Lambda event shape of DynamoDB-stream batches.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from meterline.domain.events import CloudEvent
from meterline.domain.meters import MeterCatalog, load_meters_file, new_meter

ROOT = Path(__file__).resolve().parents[1]
METERS_FILE = ROOT / "examples" / "meters.yaml"
NAMESPACE = "default"
SUBJECTS = 10_000
SESSIONS_PER_SUBJECT = 50
SEED = 20240514
STREAM_ARN = ("arn:aws:dynamodb:us-east-1:123456789012:table/meterline-Events1A2B3C4D-1Q2W3E4R5T6Y/"
              "stream/2024-05-01T00:00:00.000")
FIRST_SEQUENCE = 100_000_000_000_000_000_000  # stream sequence numbers are ~21 decimal digits

MODELS = ["gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "llama-3-70b"]
TRANSLATE_MODELS = ["gpt-4o", "gpt-4o-mini", "deepl-pro"]
PROMPT_TYPES = ["input", "output"]
HOSTS = [f"gpu-node-{i:02d}" for i in range(8)]
REGIONS = ["us-east-1", "eu-west-1", "ap-south-1"]
GPU_TYPES = ["a100", "h100", "l4"]
METHODS = ["GET", "POST", "PUT", "DELETE"]
ROUTES = ["/api/v1/users", "/api/v1/orders", "/api/v1/items", "/api/v1/search", "/api/v1/checkout"]
PODS = [f"worker-{i}" for i in range(8)]
POD_NAMESPACES = ["default", "batch", "ml"]
TASK_TYPES = ["etl", "report", "train", "notify", "export"]
SOURCES = {"prompt": "chat-app", "gpu_time": "gpu-cluster", "request": "api-gateway",
           "kube-pod-exec-time": "kubernetes", "login": "auth-service", "workflow_create": "workflow-engine",
           "workflow_success": "workflow-engine", "workflow_fail": "workflow-engine", "translate": "translate-ai"}


def example_meters() -> list[Any]:
    """The example meters as stored meters (ULID ids, as the API or the local stack's seeding gives them)."""
    return [new_meter(meter, f"01HXZ{index:021d}", 1_714_521_600_000)
            for index, meter in enumerate(load_meters_file(METERS_FILE))]


def example_catalog() -> MeterCatalog:
    return MeterCatalog(example_meters())


def event_types() -> list[str]:
    return sorted({meter.event_type for meter in load_meters_file(METERS_FILE)})


def subject_name(rank: int) -> str:
    return f"customer-{rank}"


def session_id(rank: int, k: int) -> str:
    return f"sess_{((rank * SESSIONS_PER_SUBJECT + k) * 2_654_435_761) % 2**48:012x}"


def _data(event_type: str, rank: int, rng: random.Random) -> dict[str, Any]:
    pick = rng.choice
    if event_type == "prompt":
        return {"tokens": rng.randint(1, 4000), "model": pick(MODELS), "type": pick(PROMPT_TYPES)}
    if event_type == "gpu_time":
        return {"duration_seconds": round(rng.uniform(0.1, 600), 3), "hostname": pick(HOSTS),
                "region": pick(REGIONS), "gpu_type": pick(GPU_TYPES)}
    if event_type == "request":
        return {"method": pick(METHODS), "route": pick(ROUTES), "duration_seconds": round(rng.uniform(0.001, 2), 4),
                "ingress_bytes": rng.randint(100, 100_000)}
    if event_type == "kube-pod-exec-time":
        return {"duration_seconds": rng.randint(1, 3600), "pod_name": pick(PODS), "pod_namespace": pick(POD_NAMESPACES)}
    if event_type == "login":
        return {"session_id": session_id(rank, rng.randrange(SESSIONS_PER_SUBJECT))}
    if event_type.startswith("workflow_"):
        return {"task_type": pick(TASK_TYPES)}
    if event_type == "translate":
        return {"pages": rng.randint(1, 20), "words": rng.randint(100, 10_000), "tokens": rng.randint(100, 20_000),
                "model": pick(TRANSLATE_MODELS)}
    raise ValueError(event_type)


def generate(count: int, start_ms: int, rate_per_s: float = 1000, seed: int = SEED,
             subjects: int = SUBJECTS) -> Iterator[CloudEvent]:
    """`count` validated-shape CloudEvents, one every 1000/rate_per_s ms from start_ms (event time), over
    `subjects` Zipf-distributed subjects."""
    rng = random.Random(seed)
    types = event_types()
    cumulative = list(itertools.accumulate(1.0 / rank for rank in range(1, subjects + 1)))
    ranks = range(1, subjects + 1)
    step = 1000 / rate_per_s
    for i in range(count):
        rank = rng.choices(ranks, cum_weights=cumulative)[0]
        event_type = rng.choice(types)
        yield CloudEvent.model_construct(
            id=str(uuid.UUID(int=rng.getrandbits(128), version=4)), source=SOURCES[event_type], specversion="1.0",
            type=event_type, subject=subject_name(rank), time=start_ms + int(i * step),
            datacontenttype=None, dataschema=None, data=_data(event_type, rank, rng))


def stream_record(item: dict[str, Any], sequence: int, created_s: int) -> dict[str, Any]:
    """One INSERT record as Lambda hands it to a DynamoDB-stream consumer (NEW_IMAGE view)."""
    return {
        "eventID": uuid.UUID(int=sequence).hex,
        "eventName": "INSERT",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {"ApproximateCreationDateTime": created_s, "Keys": {"pk": item["pk"]}, "NewImage": item,
                     "SequenceNumber": str(sequence), "SizeBytes": 300, "StreamViewType": "NEW_IMAGE"},
        "eventSourceARN": STREAM_ARN,
    }


def lambda_batches(records: Sequence[dict[str, Any]], size: int) -> Iterator[dict[str, Any]]:
    for start in range(0, len(records), size):
        yield {"Records": list(records[start:start + size])}
