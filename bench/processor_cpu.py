"""CPU per event of the stream processor (functions/processor/handler.py) on 1,000-record DynamoDB-stream
batches of the benchmark workload (bench/workload.py) over the example meters. The usage table is an
in-memory stand-in and the meter catalog is injected, so only Meterline's own work is measured:
Powertools' batch processing, decoding the stream images, counting rows and
manifests. Prints `processor_cpu_us_per_event <value>`; budget <= 60."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# importing `bench` first sets the environment the handlers read (bench/__init__.py)

from bench.workload import FIRST_SEQUENCE, NAMESPACE, example_catalog, generate, lambda_batches, stream_record  # noqa: E402
from functions.processor import handler as processor  # noqa: E402
from meterline.domain.meters import MeterCatalog  # noqa: E402
from meterline.processing import stream_batch  # noqa: E402
from meterline.storage.events_store import EventsStore  # noqa: E402
from meterline.storage.processing_store import ProcessingLagStore  # noqa: E402
from meterline.storage.usage_store import UsageStore  # noqa: E402
from meterline_local.lambda_runtime import LocalLambdaContext  # noqa: E402
from tests.fakes import InMemoryDynamoDB  # noqa: E402

CONTEXT = LocalLambdaContext("bench")

BATCH = 1000
WARMUP_BATCHES = 3
BATCHES = 30
START_MS = 1_715_731_200_000  # 2024-05-15T00:00:00Z
STREAM_DELAY_MS = 1_000  # a record reaches the processor about a second after its write


def stream_records(count: int, start_ms: int) -> list[dict[str, Any]]:
    """The stream records of `count` workload events, each stored at its event time."""
    store = EventsStore(table="bench-events")
    records = []
    for i, event in enumerate(generate(count, start_ms)):
        item = store.item(NAMESPACE, event, event.time)
        records.append(stream_record(item, FIRST_SEQUENCE + i, event.time // 1000))
    return records


def install(catalog: MeterCatalog, client: Any, clock: Any) -> None:
    """Point the real handler module at a fixed catalog, a stand-in usage table and a simulated clock."""
    store = UsageStore(client=client, table="bench-usage")
    lag = ProcessingLagStore(client=client, table="bench-usage")
    stream_batch.meter_catalog = lambda namespace: catalog
    stream_batch.usage_store = lambda: store
    stream_batch.now_ms = clock
    processor.processing_lag_store = lambda: lag
    processor.now_ms = clock


def batch_now(batch: dict[str, Any]) -> int:
    return int(batch["Records"][-1]["dynamodb"]["NewImage"]["ingestedAt"]["N"]) + STREAM_DELAY_MS


def measure() -> float:
    batches = list(lambda_batches(stream_records((WARMUP_BATCHES + BATCHES) * BATCH, START_MS), BATCH))
    client = InMemoryDynamoDB()
    clock = [0]
    install(example_catalog(), client, lambda: clock[0])
    nows = [batch_now(batch) for batch in batches]
    for batch, now in zip(batches[:WARMUP_BATCHES], nows, strict=False):
        clock[0] = now
        assert processor.handler(batch, CONTEXT) == {"batchItemFailures": []}
    started = time.process_time()
    for batch, now in zip(batches[WARMUP_BATCHES:], nows[WARMUP_BATCHES:], strict=True):
        clock[0] = now
        processor.handler(batch, CONTEXT)
    cpu = time.process_time() - started
    assert any("#raw#" in key[0] for key in client.items), "the processor wrote no counting rows"
    return cpu / (BATCHES * BATCH) * 1e6


def main() -> None:
    print(f"processor_cpu_us_per_event {measure():.1f}")


if __name__ == "__main__":
    main()
