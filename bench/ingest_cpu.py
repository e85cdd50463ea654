"""CPU per event of the ingest handler for 100-event batches (DynamoDB replaced by an in-memory
stand-in, so only Meterline's own work is measured: routing, parsing, validation, item building and
the concurrent fan-out). Prints `ingest_cpu_us_per_event <value>`; budget <= 25."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench  # noqa: E402, F401, I001 - first: sets the environment the handlers read (bench/__init__.py)
from functions.ingest import handler as ingest  # noqa: E402
from meterline import bootstrap  # noqa: E402
from meterline_local.http_gateway import build_v2_event  # noqa: E402
from tests.fakes import InMemoryDynamoDB  # noqa: E402
from meterline_local.lambda_runtime import LocalLambdaContext  # noqa: E402

CONTEXT = LocalLambdaContext("bench")

BATCH = 100
ROUNDS = 300
WARMUP = 20


def body(round_no: int) -> bytes:
    return orjson.dumps([
        {"specversion": "1.0", "type": "prompt", "id": f"{round_no}-{i}", "time": "2024-01-01T00:00:00.001Z",
         "source": "chat-app", "subject": f"customer-{i % 17}",
         "data": {"tokens": "123456", "model": "gpt4-turbo", "type": "output"}}
        for i in range(BATCH)
    ])


def measure() -> float:
    """CPU microseconds per event."""
    store = bootstrap.events_store()
    store._client = InMemoryDynamoDB()
    headers = [("content-type", "application/cloudevents-batch+json"), ("host", "bench")]
    events = [build_v2_event("POST", "/api/v1/events", "", headers, body(r), None, {}, "127.0.0.1")
              for r in range(ROUNDS + WARMUP)]
    for event in events[:WARMUP]:
        assert ingest.handler(event, CONTEXT)["statusCode"] == 204
    started = time.process_time()
    for event in events[WARMUP:]:
        ingest.handler(event, CONTEXT)
    cpu = time.process_time() - started
    events_stored = [pk for pk, _ in store._client.items if "#~m#" not in pk]  # not the time index's manifests
    assert len(events_stored) == (ROUNDS + WARMUP) * BATCH
    return cpu / (ROUNDS * BATCH) * 1e6


def main() -> None:
    print(f"ingest_cpu_us_per_event {measure():.1f}")


if __name__ == "__main__":
    main()
