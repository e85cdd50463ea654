"""What every DynamoDB table adapter shares: the process-wide client, paged Query, batched puts and
concurrent calls."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from meterline.aws.clients import aws_client
from meterline.settings import required_env
from meterline.storage.tables import TableSpec

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None

# BatchWriteItem takes at most 25 puts; what DynamoDB leaves unprocessed is sent again, after a backoff.
BATCH_WRITE_ITEMS = 25
BATCH_GET_KEYS = 100
BATCH_WRITE_ATTEMPTS = 8

# Calls one request may have in flight at once (event puts, a query's reads); the DynamoDB client's
# connection pool (meterline.aws.clients) is larger.
MAX_CONCURRENT_CALLS = 32

T = TypeVar("T")
R = TypeVar("R")


def concurrently(function: Callable[[T], R], arguments: Iterable[T]) -> list[R]:
    """function(a) for each argument, up to MAX_CONCURRENT_CALLS at once on a process-wide pool of
    threads; results in the arguments' order (the first exception is raised once all are done). Each
    call is a round trip to DynamoDB, so threads overlap the waiting. `function` must not itself call
    `concurrently` (the pool could fill with waiting callers)."""
    listed = list(arguments)
    if len(listed) <= 1:
        return [function(argument) for argument in listed]
    global _executor
    if _executor is None:
        with _lock:
            if _executor is None:
                from concurrent.futures import ThreadPoolExecutor  # on first use: keeps cold imports small

                _executor = ThreadPoolExecutor(max_workers=MAX_CONCURRENT_CALLS, thread_name_prefix="dynamodb")
    futures = [_executor.submit(function, argument) for argument in listed]
    results = []
    failure: BaseException | None = None
    for future in futures:
        try:
            results.append(future.result())
        except BaseException as exc:  # noqa: BLE001 - waits for the others, then re-raised
            failure = failure or exc
    if failure is not None:
        raise failure
    return results


def dynamodb_client() -> Any:
    """The process-wide DynamoDB client (meterline.aws.clients makes every client)."""
    return aws_client("dynamodb")


def table_name(spec: TableSpec) -> str:
    return required_env(spec.env_var, f"the {spec.logical_name} table")


class TableAdapter:
    """What every table adapter shares: an injectable client (the process-wide one by default) and the
    table name from the environment, both resolved on first use."""

    spec: TableSpec

    def __init__(self, client: Any = None, table: str | None = None) -> None:
        self._client = client
        self._table = table

    @property
    def client(self) -> Any:
        # The process-wide client is looked up on each use, not kept: reset_clients() reaches every adapter.
        return self._client if self._client is not None else dynamodb_client()

    @property
    def table(self) -> str:
        if self._table is None:
            self._table = table_name(self.spec)
        return self._table

    def put_batch(self, items: list[dict[str, Any]]) -> int:
        """Unconditional puts (overwrites), 25 per BatchWriteItem, in order; returns once every item
        landed. Same write units as one PutItem each, far fewer round trips. Raises if DynamoDB keeps
        leaving items unprocessed (throttling)."""
        calls = 0
        for start in range(0, len(items), BATCH_WRITE_ITEMS):
            requests = {self.table: [{"PutRequest": {"Item": item}} for item in items[start:start + BATCH_WRITE_ITEMS]]}
            for attempt in range(BATCH_WRITE_ATTEMPTS):
                calls += 1
                requests = self.client.batch_write_item(RequestItems=requests).get("UnprocessedItems") or {}
                if not requests:
                    break
                time.sleep(min(1.0, 0.025 * 2**attempt))
            else:
                raise RuntimeError(f"DynamoDB left writes to {self.table} unprocessed {BATCH_WRITE_ATTEMPTS} times")
        return calls

    def get_items(self, keys: Sequence[dict[str, Any]], consistent: bool = False) -> Iterator[dict[str, Any]]:
        """The items of `keys` that exist, 100 keys per BatchGetItem, asking again for what DynamoDB
        leaves unprocessed."""
        for start in range(0, len(keys), BATCH_GET_KEYS):
            request: dict[str, Any] = {self.table: {"Keys": list(keys[start:start + BATCH_GET_KEYS]),
                                                    "ConsistentRead": consistent}}
            while request:
                response = self.client.batch_get_item(RequestItems=request)
                yield from response.get("Responses", {}).get(self.table, [])
                request = response.get("UnprocessedKeys") or {}

    def query_items(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every item a Query returns, page after page (this table unless `request` names another)."""
        return self._pages(self.client.query, request)

    def partition_items(self, partition: str, consistent: bool = True) -> Iterator[dict[str, Any]]:
        """Every item of one partition (`pk`), in sort-key order."""
        return self.query_items({"KeyConditionExpression": "pk = :pk", "ConsistentRead": consistent,
                                 "ExpressionAttributeValues": {":pk": {"S": partition}}})

    def scan_items(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every item a Scan returns, page after page (this table unless `request` names another)."""
        return self._pages(self.client.scan, request)

    def _pages(self, call: Callable[..., dict[str, Any]], request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        request = {"TableName": self.table, **request}
        while True:
            page = call(**request)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
