"""In-memory stand-ins for the low-level DynamoDB client.

- `InMemoryDynamoDB`: PutItem and BatchWriteItem only, as cheap as possible, for CPU benchmarks that
  exclude storage time.
- `CostModelDynamoDB`: the calls Meterline makes (PutItem, BatchWriteItem, UpdateItem, GetItem,
  BatchGetItem, Query, TransactWriteItems) with DynamoDB's semantics for them and its on-demand billing
  rules, for the storage-cost benchmarks.
"""

from __future__ import annotations

import bisect
import math
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any


class ConditionalCheckFailed(Exception):
    pass


class TransactionCanceled(Exception):
    pass


class _Exceptions:
    ConditionalCheckFailedException = ConditionalCheckFailed
    TransactionCanceledException = TransactionCanceled


_CONDITION_TOKEN = re.compile(r"\s*(attribute_not_exists|attribute_exists|AND|OR|\(|\)|<>|<=|>=|=|<|>|[#:]?\w+)")


def condition_holds(expression: str, item: dict[str, Any] | None, values: dict[str, Any] | None,
                    names: dict[str, str] | None = None) -> bool:
    """A condition expression of attribute_exists/attribute_not_exists, comparisons (=, <>, <, <=, >, >=
    of S or N values), AND, OR and parentheses, on `item` (None: no item)."""
    tokens = _CONDITION_TOKEN.findall(expression)
    if "".join(tokens) != re.sub(r"\s+", "", expression):
        raise NotImplementedError(f"condition {expression!r}")
    position = 0
    current = item or {}

    def attribute(name: str) -> dict[str, Any] | None:
        if name.startswith("#"):
            name = (names or {})[name]
        return current.get(name)

    def value_of(token: str) -> Any:
        typed = (values or {})[token] if token.startswith(":") else attribute(token)
        if typed is None:
            return None
        kind, raw = next(iter(typed.items()))
        return float(raw) if kind == "N" else raw

    def take() -> str:
        nonlocal position
        position += 1
        return tokens[position - 1]

    def factor() -> bool:
        token = take()
        if token == "(":
            result = disjunction()
            assert take() == ")"
            return result
        if token in ("attribute_exists", "attribute_not_exists"):
            assert take() == "("
            present = attribute(take()) is not None
            assert take() == ")"
            return present if token == "attribute_exists" else not present
        operator, right = take(), value_of(take())
        left = value_of(token)
        if left is None or right is None:
            return operator == "<>" and left != right
        return {"=": left == right, "<>": left != right, "<": left < right, "<=": left <= right,
                ">": left > right, ">=": left >= right}[operator]

    def conjunction() -> bool:
        result = factor()
        while position < len(tokens) and tokens[position] == "AND":
            take()
            result = factor() and result
        return result

    def disjunction() -> bool:
        result = conjunction()
        while position < len(tokens) and tokens[position] == "OR":
            take()
            result = conjunction() or result
        return result

    return disjunction()


class InMemoryDynamoDB:
    """PutItem with `attribute_not_exists(pk)` semantics, nothing more. Items by (pk, sk)."""

    exceptions = _Exceptions()

    def __init__(self) -> None:
        self.items: dict[tuple[str, str | None], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def put_item(self, TableName: str, Item: dict[str, Any], ConditionExpression: str | None = None,
                 **_: Any) -> dict[str, Any]:
        sk = Item.get("sk")
        key = (Item["pk"]["S"], sk["S"] if sk else None)
        with self._lock:
            if ConditionExpression and key in self.items:
                raise ConditionalCheckFailed()
            self.items[key] = Item
        return {}

    def batch_write_item(self, RequestItems: dict[str, list[dict[str, Any]]], **_: Any) -> dict[str, Any]:
        for requests in RequestItems.values():
            for request in requests:
                self.put_item("", request["PutRequest"]["Item"])
        return {"UnprocessedItems": {}}


# --- the cost model ---------------------------------------------------------------------------------

WRITE_UNIT = 1024
READ_UNIT = 4096
QUERY_PAGE_BYTES = 1024 * 1024  # a Query reads at most 1 MB per request


def _number_size(text: str) -> int:
    """DynamoDB: 1 byte per two significant digits, plus 1 (leading and trailing zeros trimmed)."""
    digits = text.lstrip("+-").lower().split("e")[0].replace(".", "").strip("0")
    return (max(1, len(digits)) + 1) // 2 + 1


def value_size(value: dict[str, Any]) -> int:
    (kind, data), = value.items()
    if kind == "S":
        return len(data) if data.isascii() else len(data.encode())
    if kind == "N":
        return _number_size(data)
    if kind == "B":
        return len(data)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode()) for s in data)
    if kind == "NS":
        return sum(_number_size(n) for n in data)
    if kind == "BS":
        return sum(len(b) for b in data)
    if kind == "L":
        return 3 + sum(1 + value_size(v) for v in data)
    if kind == "M":
        return 3 + sum(len(k.encode()) + 1 + value_size(v) for k, v in data.items())
    raise ValueError(f"unknown attribute type {kind}")


def item_size(item: dict[str, Any] | None) -> int:
    """Item size as DynamoDB bills it: attribute name lengths plus value sizes."""
    if not item:
        return 0
    return sum(len(name) + value_size(value) for name, value in item.items())


def write_units(before: dict[str, Any] | None, after: dict[str, Any] | None) -> int:
    return max(1, math.ceil(max(item_size(before), item_size(after)) / WRITE_UNIT))


def read_units(size: int, consistent: bool) -> float:
    units = max(1, math.ceil(size / READ_UNIT))
    return float(units) if consistent else units / 2


_KEY_EQ = re.compile(r"^(\w+) = (:\w+)$")
_KEY_BETWEEN = re.compile(r"^(\w+) = (:\w+) AND (\w+) BETWEEN (:\w+) AND (:\w+)$")
_KEY_AFTER = re.compile(r"^(\w+) = (:\w+) AND (\w+) > (:\w+)$")
_KEY_BEGINS = re.compile(r"^(\w+) = (:\w+) AND begins_with\((\w+), (:\w+)\)$")
_SET_CLAUSE = re.compile(r"^([#\w]+) = (:\w+)$")
_UPDATE = re.compile(r"^(?:SET (.+?))?\s*(?:REMOVE (.+))?$")


class CostModelDynamoDB:
    """Tables keyed by (partition key, optional sort key). Every call's consumed capacity is booked in
    `units[(phase, category, "WRU"|"RRU")]`, where `phase` is whatever the driver set last and
    `category(table, pk)` classifies the item. Unknown parameters or expressions raise, so the model
    covers exactly the calls Meterline makes. Successful puts to `stream_table` are logged in
    `stream` in commit order (what its DynamoDB stream would carry)."""

    exceptions = _Exceptions()

    def __init__(self, key_schemas: dict[str, tuple[str, str | None]],
                 category: Callable[[str, str], str] = lambda table, pk: table,
                 stream_table: str | None = None,
                 indexes: dict[str, tuple[tuple[str, str], ...]] | None = None) -> None:
        self.key_schemas = key_schemas
        # per table, the (partition key, sort key) attributes of its KEYS_ONLY global secondary indexes:
        # an item that has them is also written to the index, billed in the item's category
        self.indexes = indexes or {}
        self.category = category
        self.stream_table = stream_table
        self.stream: list[dict[str, Any]] = []
        self.tables: dict[str, dict[str, dict[str, dict[str, Any]]]] = {name: {} for name in key_schemas}
        self._sort_keys: dict[tuple[str, str], list[str]] = {}
        self.phase = "default"
        self.units: Counter[tuple[str, str, str]] = Counter()
        self.calls: Counter[tuple[str, str, str]] = Counter()  # (phase, operation, category)
        self.failed_conditions: Counter[tuple[str, str]] = Counter()
        self.read_bytes: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    # --- helpers ---

    def _key(self, table: str, key: dict[str, Any]) -> tuple[str, str]:
        pk_name, sk_name = self.key_schemas[table]
        expected = {pk_name} | ({sk_name} if sk_name else set())
        if set(key) != expected:
            raise ValueError(f"key {sorted(key)} does not match the key schema {sorted(expected)}")
        return key[pk_name]["S"], key[sk_name]["S"] if sk_name else ""

    def _item_key(self, table: str, item: dict[str, Any]) -> tuple[str, str]:
        pk_name, sk_name = self.key_schemas[table]
        return self._key(table, {name: item[name] for name in (pk_name, sk_name) if name})

    def _get(self, table: str, pk: str, sk: str) -> dict[str, Any] | None:
        return self.tables[table].get(pk, {}).get(sk)

    def _store(self, table: str, pk: str, sk: str, item: dict[str, Any]) -> None:
        partition = self.tables[table].setdefault(pk, {})
        if sk not in partition:
            bisect.insort(self._sort_keys.setdefault((table, pk), []), sk)
        partition[sk] = item

    def seed(self, table: str, item: dict[str, Any]) -> None:
        """Store an item without billing it (to set up a table state that is not being measured)."""
        with self._lock:
            self._store(table, *self._item_key(table, item), item)

    def _book_indexes(self, table: str, item: dict[str, Any]) -> None:
        for partition_key, sort_key in self.indexes.get(table, ()):
            if partition_key in item:
                projected = {name: item[name] for name in (*self.key_schemas[table], partition_key, sort_key)
                             if name and name in item}
                self.units[(self.phase, self.category(table, self._item_key(table, item)[0]), "WRU")] += \
                    write_units(None, projected)

    def _book(self, operation: str, table: str, pk: str, kind: str, units: float) -> None:
        category = self.category(table, pk)
        self.units[(self.phase, category, kind)] += units
        self.calls[(self.phase, operation, category)] += 1

    @staticmethod
    def _names(expression_names: dict[str, str] | None, name: str) -> str:
        if name.startswith("#"):
            if not expression_names or name not in expression_names:
                raise ValueError(f"undefined expression attribute name {name}")
            return expression_names[name]
        return name

    def _project(self, item: dict[str, Any], projection: str | None, names: dict[str, str] | None) -> dict[str, Any]:
        if projection is None:
            return dict(item)
        wanted = [self._names(names, part.strip()) for part in projection.split(",")]
        return {name: item[name] for name in wanted if name in item}

    # --- writes ---

    def put_item(self, TableName: str, Item: dict[str, Any], ConditionExpression: str | None = None,
                 **rest: Any) -> dict[str, Any]:
        if rest:
            raise NotImplementedError(f"put_item parameters {sorted(rest)}")
        pk, sk = self._item_key(TableName, Item)
        pk_name = self.key_schemas[TableName][0]
        if ConditionExpression not in (None, f"attribute_not_exists({pk_name})"):
            raise NotImplementedError(f"condition {ConditionExpression!r}")
        with self._lock:
            before = self._get(TableName, pk, sk)
            self._book("PutItem", TableName, pk, "WRU", write_units(before, Item))
            if ConditionExpression and before is not None:
                self.failed_conditions[(self.phase, self.category(TableName, pk))] += 1
                raise ConditionalCheckFailed()
            self._store(TableName, pk, sk, Item)
            self._book_indexes(TableName, Item)
            if TableName == self.stream_table:
                self.stream.append(Item)
        return {}

    def batch_write_item(self, RequestItems: dict[str, list[dict[str, Any]]], **rest: Any) -> dict[str, Any]:
        """Puts only (as Meterline sends them), billed per item like PutItem; nothing left unprocessed."""
        if rest:
            raise NotImplementedError(f"batch_write_item parameters {sorted(rest)}")
        if sum(len(requests) for requests in RequestItems.values()) > 25:
            raise ValueError("BatchWriteItem takes at most 25 requests")
        for table, requests in RequestItems.items():
            for request in requests:
                if set(request) != {"PutRequest"}:
                    raise NotImplementedError(f"batch write request {sorted(request)}")
                item = request["PutRequest"]["Item"]
                pk, sk = self._item_key(table, item)
                with self._lock:
                    self._book("BatchWriteItem", table, pk, "WRU", write_units(self._get(table, pk, sk), item))
                    self._store(table, pk, sk, item)
                    self._book_indexes(table, item)
                    if table == self.stream_table:
                        self.stream.append(item)
        return {"UnprocessedItems": {}}

    def update_item(self, TableName: str, Key: dict[str, Any], UpdateExpression: str,
                    ExpressionAttributeNames: dict[str, str] | None = None,
                    ExpressionAttributeValues: dict[str, Any] | None = None, ReturnValues: str = "NONE",
                    ConditionExpression: str | None = None, **rest: Any) -> dict[str, Any]:
        if rest:
            raise NotImplementedError(f"update_item parameters {sorted(rest)}")
        match = _UPDATE.match(UpdateExpression)
        if not match or not (match.group(1) or match.group(2)):
            raise NotImplementedError(f"update expression {UpdateExpression!r}")
        assignments: dict[str, dict[str, Any]] = {}
        for clause in match.group(1).split(",") if match.group(1) else []:
            set_match = _SET_CLAUSE.match(clause.strip())
            if not set_match:
                raise NotImplementedError(f"update clause {clause!r}")
            name = self._names(ExpressionAttributeNames, set_match.group(1))
            assignments[name] = (ExpressionAttributeValues or {})[set_match.group(2)]
        removed = {self._names(ExpressionAttributeNames, name.strip())
                   for name in (match.group(2) or "").split(",") if name.strip()}
        pk, sk = self._key(TableName, Key)
        with self._lock:
            before = self._get(TableName, pk, sk)
            after = {name: value for name, value in {**(before or Key), **assignments}.items() if name not in removed}
            self._book("UpdateItem", TableName, pk, "WRU", write_units(before, after))
            if ConditionExpression and not condition_holds(ConditionExpression, before, ExpressionAttributeValues,
                                                           ExpressionAttributeNames):
                self.failed_conditions[(self.phase, self.category(TableName, pk))] += 1
                raise ConditionalCheckFailed()
            self._store(TableName, pk, sk, after)
        if ReturnValues == "NONE":
            return {}
        if ReturnValues == "ALL_NEW":
            return {"Attributes": dict(after)}
        if ReturnValues == "ALL_OLD":
            return {"Attributes": dict(before)} if before else {}
        if ReturnValues == "UPDATED_NEW":
            return {"Attributes": {name: after[name] for name in assignments}}
        if ReturnValues == "UPDATED_OLD":
            return {"Attributes": {name: before[name] for name in assignments if before and name in before}}
        raise NotImplementedError(f"ReturnValues {ReturnValues}")

    def transact_write_items(self, TransactItems: list[dict[str, Any]], **rest: Any) -> dict[str, Any]:
        """Put, Update (SET only) and Delete, each with an optional condition; all or nothing, billed at
        two write units per unit as DynamoDB bills transactions."""
        if rest:
            raise NotImplementedError(f"transact_write_items parameters {sorted(rest)}")
        with self._lock:
            planned = []
            for request in TransactItems:
                (kind, op), = request.items()
                table = op["TableName"]
                key = self._item_key(table, op["Item"]) if kind == "Put" else self._key(table, op["Key"])
                before = self._get(table, *key)
                if kind == "Put":
                    after: dict[str, Any] | None = op["Item"]
                elif kind == "Delete":
                    after = None
                elif kind == "Update":
                    after = dict(before or op["Key"])
                    for clause in op["UpdateExpression"].removeprefix("SET ").split(","):
                        set_match = _SET_CLAUSE.match(clause.strip())
                        if not set_match:
                            raise NotImplementedError(f"update clause {clause!r}")
                        after[set_match.group(1)] = op["ExpressionAttributeValues"][set_match.group(2)]
                else:
                    raise NotImplementedError(f"transaction operation {kind}")
                self._book("TransactWriteItems", table, key[0], "WRU", 2 * write_units(before, after))
                condition = op.get("ConditionExpression")
                if condition and not condition_holds(condition, before, op.get("ExpressionAttributeValues"),
                                                     op.get("ExpressionAttributeNames")):
                    self.failed_conditions[(self.phase, self.category(table, key[0]))] += 1
                    raise TransactionCanceled()
                planned.append((table, key, after))
            for table, (pk, sk), after in planned:
                if after is None:
                    self.tables[table].get(pk, {}).pop(sk, None)
                    if sk in self._sort_keys.get((table, pk), []):
                        self._sort_keys[(table, pk)].remove(sk)
                else:
                    self._store(table, pk, sk, after)
        return {}

    # --- reads ---

    def get_item(self, TableName: str, Key: dict[str, Any], ConsistentRead: bool = False,
                 ProjectionExpression: str | None = None, ExpressionAttributeNames: dict[str, str] | None = None,
                 **rest: Any) -> dict[str, Any]:
        if rest:
            raise NotImplementedError(f"get_item parameters {sorted(rest)}")
        pk, sk = self._key(TableName, Key)
        with self._lock:
            item = self._get(TableName, pk, sk)
            self._book("GetItem", TableName, pk, "RRU", read_units(item_size(item), ConsistentRead))
        if item is None:
            return {}
        return {"Item": self._project(item, ProjectionExpression, ExpressionAttributeNames)}

    def batch_get_item(self, RequestItems: dict[str, dict[str, Any]], **rest: Any) -> dict[str, Any]:
        if rest:
            raise NotImplementedError(f"batch_get_item parameters {sorted(rest)}")
        responses: dict[str, list[dict[str, Any]]] = {}
        with self._lock:
            for table, request in RequestItems.items():
                extra = set(request) - {"Keys", "ConsistentRead", "ProjectionExpression", "ExpressionAttributeNames"}
                if extra:
                    raise NotImplementedError(f"batch_get_item request parameters {sorted(extra)}")
                if len(request["Keys"]) > 100:
                    raise ValueError("BatchGetItem takes at most 100 keys")
                consistent = request.get("ConsistentRead", False)
                found = responses.setdefault(table, [])
                for key in request["Keys"]:
                    pk, sk = self._key(table, key)
                    item = self._get(table, pk, sk)
                    self._book("BatchGetItem", table, pk, "RRU", read_units(item_size(item), consistent))
                    if item is not None:
                        found.append(self._project(item, request.get("ProjectionExpression"),
                                                   request.get("ExpressionAttributeNames")))
        return {"Responses": responses, "UnprocessedKeys": {}}

    def query(self, TableName: str, KeyConditionExpression: str, ExpressionAttributeValues: dict[str, Any],
              ExpressionAttributeNames: dict[str, str] | None = None, ScanIndexForward: bool = True,
              ProjectionExpression: str | None = None, ConsistentRead: bool = False,
              ExclusiveStartKey: dict[str, Any] | None = None, Limit: int | None = None,
              **rest: Any) -> dict[str, Any]:
        if rest:
            raise NotImplementedError(f"query parameters {sorted(rest)}")
        pk_name, sk_name = self.key_schemas[TableName]
        values = ExpressionAttributeValues
        lo = hi = prefix = after = None
        if match := _KEY_EQ.match(KeyConditionExpression):
            names = (match.group(1),)
            pk = values[match.group(2)]["S"]
        elif match := _KEY_BETWEEN.match(KeyConditionExpression):
            names = (match.group(1), match.group(3))
            pk, lo, hi = (values[match.group(i)]["S"] for i in (2, 4, 5))
        elif match := _KEY_AFTER.match(KeyConditionExpression):
            names = (match.group(1), match.group(3))
            pk, after = values[match.group(2)]["S"], values[match.group(4)]["S"]
        elif match := _KEY_BEGINS.match(KeyConditionExpression):
            names = (match.group(1), match.group(3))
            pk, prefix = values[match.group(2)]["S"], values[match.group(4)]["S"]
        else:
            raise NotImplementedError(f"key condition {KeyConditionExpression!r}")
        if names != (pk_name, sk_name)[:len(names)]:
            raise ValueError(f"key condition on {names}, key schema is {(pk_name, sk_name)}")
        with self._lock:
            keys = self._sort_keys.get((TableName, pk), [])
            if lo is not None:
                keys = keys[bisect.bisect_left(keys, lo):bisect.bisect_right(keys, hi)]
            elif after is not None:
                keys = keys[bisect.bisect_right(keys, after):]
            elif prefix is not None:
                keys = keys[bisect.bisect_left(keys, prefix):]
                end = 0
                while end < len(keys) and keys[end].startswith(prefix):
                    end += 1
                keys = keys[:end]
            if not ScanIndexForward:
                keys = keys[::-1]
            if ExclusiveStartKey is not None:
                start_sk = self._key(TableName, ExclusiveStartKey)[1]
                position = keys.index(start_sk)
                keys = keys[position + 1:]
            partition = self.tables[TableName].get(pk, {})
            items, size, last = [], 0, None
            for sk in keys:
                item = partition[sk]
                items.append(self._project(item, ProjectionExpression, ExpressionAttributeNames))
                size += item_size(item)  # a projection does not reduce what is read and billed
                if size >= QUERY_PAGE_BYTES or (Limit is not None and len(items) >= Limit):
                    last = {pk_name: {"S": pk}, **({sk_name: {"S": sk}} if sk_name else {})}
                    if sk == keys[-1]:
                        last = None if Limit is None else last
                    break
            self.read_bytes[(self.phase, self.category(TableName, pk))] += size
            self._book("Query", TableName, pk, "RRU", read_units(size, ConsistentRead))
        response: dict[str, Any] = {"Items": items, "Count": len(items), "ScannedCount": len(items)}
        if last is not None:
            response["LastEvaluatedKey"] = last
        return response

    # --- reporting ---

    def total(self, kind: str, phase: str | None = None, category: str | None = None) -> float:
        return sum(units for (p, c, k), units in self.units.items()
                   if k == kind and (phase is None or p == phase) and (category is None or c == category))

    def by_category(self, kind: str, phase: str | None = None) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for (p, c, k), units in self.units.items():
            if k == kind and (phase is None or p == phase):
                out[c] += units
        return dict(out)
