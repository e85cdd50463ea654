"""A DynamoDB endpoint for measuring Lambda CPU with the real boto3/botocore client.

The CPU benchmarks (bench/ingest_cpu.py, bench/processor_cpu.py) hand the handlers an in-memory client,
so they leave out what botocore costs per call: building and validating the request, serializing it,
signing it (SigV4), the HTTP exchange and parsing the response. Here the handlers keep their real,
process-wide client, pointed (AWS_ENDPOINT_URL_DYNAMODB) at a local HTTP server that speaks DynamoDB's
JSON protocol on top of the cost model (tests/fakes.py CostModelDynamoDB): every call is answered with
DynamoDB's semantics (conditions, transactions, pages, item limit) and billed by its rules. The server runs
in a process of its own, so its CPU is not counted in the measured process's `time.process_time()`.

Two request headers, added by the measuring process, set the model's phase (`x-bench-phase`) and clock
(`x-bench-clock`, simulated epoch ms: when each item was first written). Control targets:
`Bench.Reset` (new, empty tables) and `Bench.Stats` (what was billed and what is stored).
"""

from __future__ import annotations

import base64
import importlib
import json
import subprocess
import sys
import threading
import urllib.request
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from tests.fakes import ConditionalCheckFailed, CostModelDynamoDB, TransactionCanceled

PREFIX = "DynamoDB_20120810."
_ERROR_TYPE = "com.amazonaws.dynamodb.v20120810#"
OPERATIONS = {"PutItem": "put_item", "BatchWriteItem": "batch_write_item", "UpdateItem": "update_item",
              "DeleteItem": "delete_item", "GetItem": "get_item", "BatchGetItem": "batch_get_item",
              "Query": "query", "Scan": "scan", "TransactWriteItems": "transact_write_items"}


def _decode(value: Any) -> Any:
    """Binary attribute values arrive base64-encoded (JSON protocol); the model bills their bytes."""
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("B"), str):
            return {"B": base64.b64decode(value["B"])}
        if len(value) == 1 and isinstance(value.get("BS"), list):
            return {"BS": [base64.b64decode(b) for b in value["BS"]]}
        return {key: _decode(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [_decode(inner) for inner in value]
    return value


def _encode(value: Any) -> str:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"not JSON serializable: {type(value)}")


class _Model:
    """The cost model behind the server, replaced by Bench.Reset."""

    def __init__(self) -> None:
        self.client = CostModelDynamoDB({})
        self.lock = threading.Lock()

    def reset(self, config: dict[str, Any]) -> None:
        module, _, name = config["category"].partition(":")
        category = getattr(importlib.import_module(module), name)
        schemas = {table: (keys[0], keys[1]) for table, keys in config["key_schemas"].items()}
        indexes = {table: tuple((pk, sk) for pk, sk in pairs) for table, pairs in config.get("indexes", {}).items()}
        self.client = CostModelDynamoDB(schemas, category, indexes=indexes, item_limit=config.get("item_limit"))

    def stats(self) -> dict[str, Any]:
        client = self.client
        storage: dict[tuple[str, str, bool], list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0.0])
        for table, category, size, lifetime, index in client.stored_items():
            entry = storage[(table, category, index)]
            entry[0] += 1
            entry[1] += size
            if lifetime is None:
                entry[3] += size
            else:
                entry[2] += size * lifetime
        return {
            "units": [[*key, units] for key, units in client.units.items()],
            "calls": [[*key, count] for key, count in client.calls.items()],
            "failed": [[*key, count] for key, count in client.failed_conditions.items()],
            # table, category, index entries?, items, bytes, sum of bytes x lifetime ms, bytes never expiring
            "storage": [[table, category, index, *values] for (table, category, index), values in storage.items()],
        }


def _server(model: _Model) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: botocore reuses its pooled connections
        disable_nagle_algorithm = True  # else each answer waits for the client's delayed ACK (~40 ms)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass

        def _answer(self, status: int, body: Any) -> None:
            data = json.dumps(body, default=_encode).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.0")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-amzn-RequestId", "bench")
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
            target = self.headers.get("X-Amz-Target", "")
            if target == "Bench.Reset":
                with model.lock:
                    model.reset(body)
                return self._answer(200, {})
            if target == "Bench.Stats":
                with model.lock:
                    return self._answer(200, model.stats())
            operation = OPERATIONS.get(target.removeprefix(PREFIX))
            if not target.startswith(PREFIX) or operation is None:
                return self._answer(400, {"__type": f"{_ERROR_TYPE}UnknownOperationException", "message": target})
            client = model.client
            client.phase = self.headers.get("x-bench-phase", "default")
            clock = self.headers.get("x-bench-clock")
            client.clock_ms = int(clock) if clock else None
            try:
                return self._answer(200, getattr(client, operation)(**_decode(body)))
            except ConditionalCheckFailed:
                return self._answer(400, {"__type": f"{_ERROR_TYPE}ConditionalCheckFailedException",
                                          "message": "The conditional request failed"})
            except TransactionCanceled as canceled:
                reasons = canceled.response["CancellationReasons"]
                return self._answer(400, {
                    "__type": f"{_ERROR_TYPE}TransactionCanceledException", "CancellationReasons": reasons,
                    "message": "Transaction cancelled, please refer cancellation reasons for specific reasons "
                               f"[{', '.join(r['Code'] for r in reasons)}]"})
            except ClientError as refused:
                error = refused.response["Error"]
                return self._answer(400, {"__type": f"com.amazon.coral.validate#{error['Code']}",
                                          "message": error["Message"]})
            except Exception as failed:  # noqa: BLE001 - a call the model does not cover: fail the caller loudly
                return self._answer(400, {"__type": "BenchStubError", "message": f"{type(failed).__name__}: {failed}"})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    return server


def main() -> None:
    """`python -m bench.dynamodb_stub`: serve until killed; the first line on stdout is the port."""
    server = _server(_Model())
    print(server.server_address[1], flush=True)
    server.serve_forever()


class DynamoDBStub:
    """The server process: `with DynamoDBStub() as stub:` ... `stub.url`."""

    def __init__(self) -> None:
        root = Path(__file__).resolve().parents[1]
        self.process = subprocess.Popen([sys.executable, "-m", "bench.dynamodb_stub"], cwd=root,
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        port = self.process.stdout.readline().strip()
        if not port.isdigit():
            self.close()
            raise RuntimeError("the DynamoDB stub did not start")
        self.url = f"http://127.0.0.1:{port}"

    def control(self, target: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        request = urllib.request.Request(self.url, data=json.dumps(body or {}).encode(), method="POST",
                                         headers={"X-Amz-Target": target})
        with urllib.request.urlopen(request, timeout=600) as response:  # noqa: S310 - our own local server
            answer: dict[str, Any] = json.loads(response.read())
            return answer

    def reset(self, key_schemas: dict[str, tuple[str, str | None]], category: str,
              indexes: dict[str, tuple[tuple[str, str], ...]] | None = None, item_limit: int | None = None) -> None:
        self.control("Bench.Reset", {"key_schemas": key_schemas, "category": category, "indexes": indexes or {},
                                     "item_limit": item_limit})

    def stats(self) -> dict[str, Any]:
        return self.control("Bench.Stats")

    def close(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def __enter__(self) -> DynamoDBStub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    main()
