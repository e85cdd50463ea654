"""In-memory stand-ins for the low-level DynamoDB client.

- `InMemoryDynamoDB`: PutItem and BatchWriteItem only, as cheap as possible, for CPU benchmarks that
  exclude storage time.
- `CostModelDynamoDB`: the calls Meterline makes (PutItem, BatchWriteItem, UpdateItem, DeleteItem,
  GetItem, BatchGetItem, Query, Scan, TransactWriteItems) with DynamoDB's semantics for them and its
  on-demand billing rules, for the storage-cost benchmarks.
"""

from __future__ import annotations

import bisect
import math
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError


class ConditionalCheckFailed(Exception):
    pass


class TransactionCanceled(Exception):
    """Carries DynamoDB's `CancellationReasons` (one per item of the transaction) in `response`, as
    botocore's TransactionCanceledException does."""

    def __init__(self, reasons: list[dict[str, str]] | None = None) -> None:
        super().__init__("Transaction cancelled")
        self.response: dict[str, Any] = {
            "Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
            "CancellationReasons": reasons or [],
        }


class _Exceptions:
    ConditionalCheckFailedException = ConditionalCheckFailed
    TransactionCanceledException = TransactionCanceled
    ClientError = ClientError


# DynamoDB refuses an item larger than 400 KB (attribute names and values, as item_size counts them).
DYNAMODB_ITEM_LIMIT = 400 * 1024

_CONDITION_TOKEN = re.compile(r"\s*(\(|\)|,|<>|<=|>=|=|<|>|[#:]?\w+)")
_FUNCTIONS = ("attribute_exists", "attribute_not_exists", "begins_with")


def condition_holds(expression: str, item: dict[str, Any] | None, values: dict[str, Any] | None,
                    names: dict[str, str] | None = None) -> bool:
    """A condition (or filter) expression of attribute_exists/attribute_not_exists/begins_with,
    comparisons (=, <>, <, <=, >, >= of S or N values), IN, BETWEEN, NOT, AND, OR and parentheses, on
    `item` (None: no item)."""
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

    def peek() -> str | None:
        return tokens[position] if position < len(tokens) else None

    def take(expected: str | None = None) -> str:
        nonlocal position
        if position >= len(tokens) or (expected is not None and tokens[position] != expected):
            raise NotImplementedError(f"condition {expression!r}")
        position += 1
        return tokens[position - 1]

    def function(name: str) -> bool:
        take("(")
        path = take()
        if name == "begins_with":
            take(",")
            prefix, found = value_of(take()), value_of(path)
            take(")")
            return isinstance(found, str) and isinstance(prefix, str) and found.startswith(prefix)
        take(")")
        present = attribute(path) is not None
        return present if name == "attribute_exists" else not present

    def compare(left: Any, operator: str, right: Any) -> bool:
        if left is None or right is None:
            return operator == "<>" and left != right
        return {"=": left == right, "<>": left != right, "<": left < right, "<=": left <= right,
                ">": left > right, ">=": left >= right}[operator]

    def primary() -> bool:
        token = take()
        if token == "(":
            result = disjunction()
            take(")")
            return result
        if token == "NOT":
            return not primary()
        if token in _FUNCTIONS:
            return function(token)
        left = value_of(token)
        operator = take()
        if operator == "IN":
            take("(")
            candidates = [value_of(take())]
            while peek() == ",":
                take(",")
                candidates.append(value_of(take()))
            take(")")
            return left is not None and left in candidates
        if operator == "BETWEEN":
            low = value_of(take())
            take("AND")
            high = value_of(take())
            return left is not None and low is not None and high is not None and low <= left <= high
        return compare(left, operator, value_of(take()))

    def conjunction() -> bool:
        result = primary()
        while peek() == "AND":
            take()
            result = primary() and result
        return result

    def disjunction() -> bool:
        result = conjunction()
        while peek() == "OR":
            take()
            result = conjunction() or result
        return result

    result = disjunction()
    if position != len(tokens):
        raise NotImplementedError(f"condition {expression!r}")
    return result


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
STORAGE_OVERHEAD_BYTES = 100  # DynamoDB bills storage per item as its size plus 100 bytes


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
_KEY_AFTER = re.compile(r"^(\w+) = (:\w+) AND (\w+) ([<>]=?) (:\w+)$")
_KEY_BEGINS = re.compile(r"^(\w+) = (:\w+) AND begins_with\((\w+), (:\w+)\)$")
_SET_CLAUSE = re.compile(r"^([#\w]+) = (:\w+|[#\w]+)(?: ([+-]) (:\w+|[#\w]+))?$")
_ADD_CLAUSE = re.compile(r"^([#\w]+) (:\w+)$")
_UPDATE_SECTION = re.compile(r"\b(SET|REMOVE|ADD|DELETE)\b")


def _resolve(names: dict[str, str] | None, name: str) -> str:
    if name.startswith("#"):
        if not names or name not in names:
            raise ValueError(f"undefined expression attribute name {name}")
        return names[name]
    return name


def apply_update(before: dict[str, Any] | None, key: dict[str, Any], expression: str,
                 names: dict[str, str] | None, values: dict[str, Any] | None) -> dict[str, Any]:
    """The item an UpdateExpression of SET (`a = :v`, `a = b + :v`), REMOVE and ADD (numbers and sets)
    clauses, in any order, leaves (`before` None: a new item from `key`)."""
    values = values or {}
    after = dict(before or key)
    parts = _UPDATE_SECTION.split(expression)
    if parts[0].strip() or len(parts) < 3:
        raise NotImplementedError(f"update expression {expression!r}")

    def operand(token: str) -> dict[str, Any]:
        found = values[token] if token.startswith(":") else after.get(_resolve(names, token))
        if found is None:
            raise ValueError(f"the update operand {token} does not exist")
        return found

    for action, body in zip(parts[1::2], parts[2::2], strict=True):
        clauses = [clause.strip() for clause in body.split(",") if clause.strip()]
        if not clauses or "(" in body:
            raise NotImplementedError(f"update expression {expression!r}")
        for clause in clauses:
            if action == "SET":
                match = _SET_CLAUSE.match(clause)
                if not match:
                    raise NotImplementedError(f"update clause {clause!r}")
                value = operand(match.group(2))
                if match.group(3):
                    left, right = Decimal(value["N"]), Decimal(operand(match.group(4))["N"])
                    value = {"N": str(left + right if match.group(3) == "+" else left - right)}
                after[_resolve(names, match.group(1))] = value
            elif action == "REMOVE":
                after.pop(_resolve(names, clause), None)
            elif action == "ADD":
                match = _ADD_CLAUSE.match(clause)
                if not match:
                    raise NotImplementedError(f"update clause {clause!r}")
                name, added = _resolve(names, match.group(1)), values[match.group(2)]
                (kind, data), = added.items()
                present = after.get(name)
                if kind == "N":
                    after[name] = {"N": str(Decimal(data) + (Decimal(present["N"]) if present else 0))}
                elif kind in ("SS", "NS", "BS"):
                    after[name] = {kind: sorted(set(present[kind] if present else []) | set(data))}
                else:
                    raise NotImplementedError(f"ADD of a {kind} value")
            else:
                raise NotImplementedError(f"update action {action}")
    return after


class CostModelDynamoDB:
    """Tables keyed by (partition key, optional sort key). Every call's consumed capacity is booked in
    `units[(phase, category, "WRU"|"RRU")]`, where `phase` is whatever the driver set last and
    `category(table, pk)` classifies the item. Unknown parameters or expressions raise, so the model
    covers exactly the calls Meterline makes. Successful puts to `stream_table` are logged in
    `stream` in commit order (what its DynamoDB stream would carry).

    Billing: a write costs one unit per KB of the larger of the item before and after (at least one;
    a DeleteItem the size of the deleted item), twice that inside TransactWriteItems (ConditionCheck
    included); a write that fails its condition is still billed. Reads: one unit per 4 KB read (half for
    an eventually consistent read); a Query or Scan pays for every item it reads, filtered out or
    projected away or not. With `item_limit` (DynamoDB's is DYNAMODB_ITEM_LIMIT, the benchmarks pass it),
    a write that would leave a larger item is refused as DynamoDB refuses it (a ValidationException
    ClientError), unbilled; without, any size is stored (tests of the layout before items were split).

    Storage: with `clock_ms` set by the driver (the simulated time), the first write of each item is
    recorded in `written_ms`, so `stored_items` can tell how long each item lives (until its
    `expiresAt`)."""

    exceptions = _Exceptions()

    def __init__(self, key_schemas: dict[str, tuple[str, str | None]],
                 category: Callable[[str, str], str] = lambda table, pk: table,
                 stream_table: str | None = None,
                 indexes: dict[str, tuple[tuple[str, str], ...]] | None = None,
                 item_limit: int | None = None) -> None:
        self.key_schemas = key_schemas
        # per table, the (partition key, sort key) attributes of its KEYS_ONLY global secondary indexes:
        # an item that has them is also written to the index, billed in the item's category
        self.indexes = indexes or {}
        self.category = category
        self.stream_table = stream_table
        self.item_limit = item_limit
        self.stream: list[dict[str, Any]] = []
        self.tables: dict[str, dict[str, dict[str, dict[str, Any]]]] = {name: {} for name in key_schemas}
        self._sort_keys: dict[tuple[str, str], list[str]] = {}
        self.phase = "default"
        self.clock_ms: int | None = None
        self.written_ms: dict[tuple[str, str, str], int] = {}
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
            if self.clock_ms is not None:
                self.written_ms.setdefault((table, pk, sk), self.clock_ms)
        partition[sk] = item

    def _remove(self, table: str, pk: str, sk: str) -> None:
        partition = self.tables[table].get(pk, {})
        if partition.pop(sk, None) is not None:
            self._sort_keys[(table, pk)].remove(sk)
            self.written_ms.pop((table, pk, sk), None)
            if not partition:
                del self.tables[table][pk]

    def _check_size(self, item: dict[str, Any] | None, operation: str) -> None:
        """DynamoDB refuses (unbilled) a write that would leave an item over its limit."""
        if self.item_limit is not None and item is not None and item_size(item) > self.item_limit:
            message = "Item size to update has exceeded the maximum allowed size" if operation == "UpdateItem" else (
                "Item size has exceeded the maximum allowed size")
            raise ClientError({"Error": {"Code": "ValidationException", "Message": message}}, operation)

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
                 ExpressionAttributeNames: dict[str, str] | None = None,
                 ExpressionAttributeValues: dict[str, Any] | None = None, **rest: Any) -> dict[str, Any]:
        if rest:
            raise NotImplementedError(f"put_item parameters {sorted(rest)}")
        pk, sk = self._item_key(TableName, Item)
        self._check_size(Item, "PutItem")
        with self._lock:
            before = self._get(TableName, pk, sk)
            self._book("PutItem", TableName, pk, "WRU", write_units(before, Item))
            if ConditionExpression and not condition_holds(ConditionExpression, before, ExpressionAttributeValues,
                                                           ExpressionAttributeNames):
                self.failed_conditions[(self.phase, self.category(TableName, pk))] += 1
                raise ConditionalCheckFailed()
            self._store(TableName, pk, sk, Item)
            self._book_indexes(TableName, Item)
            if TableName == self.stream_table:
                self.stream.append(Item)
        return {}

    def batch_write_item(self, RequestItems: dict[str, list[dict[str, Any]]], **rest: Any) -> dict[str, Any]:
        """Puts and deletes, each billed like its single-item call; nothing left unprocessed. An item over
        the limit refuses the whole batch."""
        if rest:
            raise NotImplementedError(f"batch_write_item parameters {sorted(rest)}")
        if sum(len(requests) for requests in RequestItems.values()) > 25:
            raise ValueError("BatchWriteItem takes at most 25 requests")
        for requests in RequestItems.values():
            for request in requests:
                if set(request) not in ({"PutRequest"}, {"DeleteRequest"}):
                    raise NotImplementedError(f"batch write request {sorted(request)}")
                if "PutRequest" in request:
                    self._check_size(request["PutRequest"]["Item"], "BatchWriteItem")
        for table, requests in RequestItems.items():
            for request in requests:
                with self._lock:
                    if "DeleteRequest" in request:
                        pk, sk = self._key(table, request["DeleteRequest"]["Key"])
                        before = self._get(table, pk, sk)
                        self._book("BatchWriteItem", table, pk, "WRU", write_units(before, None))
                        self._delete(table, pk, sk, before)
                        continue
                    item = request["PutRequest"]["Item"]
                    pk, sk = self._item_key(table, item)
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
        pk, sk = self._key(TableName, Key)
        with self._lock:
            before = self._get(TableName, pk, sk)
            after = apply_update(before, Key, UpdateExpression, ExpressionAttributeNames, ExpressionAttributeValues)
            self._check_size(after, "UpdateItem")
            self._book("UpdateItem", TableName, pk, "WRU", write_units(before, after))
            if ConditionExpression and not condition_holds(ConditionExpression, before, ExpressionAttributeValues,
                                                           ExpressionAttributeNames):
                self.failed_conditions[(self.phase, self.category(TableName, pk))] += 1
                raise ConditionalCheckFailed()
            self._store(TableName, pk, sk, after)
        changed = {name for name in set(before or {}) | set(after)
                   if (before or {}).get(name) != after.get(name)}
        if ReturnValues == "NONE":
            return {}
        if ReturnValues == "ALL_NEW":
            return {"Attributes": dict(after)}
        if ReturnValues == "ALL_OLD":
            return {"Attributes": dict(before)} if before else {}
        if ReturnValues == "UPDATED_NEW":
            return {"Attributes": {name: after[name] for name in changed if name in after}}
        if ReturnValues == "UPDATED_OLD":
            return {"Attributes": {name: before[name] for name in changed if before and name in before}}
        raise NotImplementedError(f"ReturnValues {ReturnValues}")

    def delete_item(self, TableName: str, Key: dict[str, Any], ConditionExpression: str | None = None,
                    ExpressionAttributeNames: dict[str, str] | None = None,
                    ExpressionAttributeValues: dict[str, Any] | None = None, ReturnValues: str = "NONE",
                    **rest: Any) -> dict[str, Any]:
        """Billed by the size of the deleted item (at least one unit, also when there was none)."""
        if rest:
            raise NotImplementedError(f"delete_item parameters {sorted(rest)}")
        if ReturnValues not in ("NONE", "ALL_OLD"):
            raise NotImplementedError(f"ReturnValues {ReturnValues}")
        pk, sk = self._key(TableName, Key)
        with self._lock:
            before = self._get(TableName, pk, sk)
            self._book("DeleteItem", TableName, pk, "WRU", write_units(before, None))
            if ConditionExpression and not condition_holds(ConditionExpression, before, ExpressionAttributeValues,
                                                           ExpressionAttributeNames):
                self.failed_conditions[(self.phase, self.category(TableName, pk))] += 1
                raise ConditionalCheckFailed()
            self._delete(TableName, pk, sk, before)
        return {"Attributes": dict(before)} if ReturnValues == "ALL_OLD" and before else {}

    def _delete(self, table: str, pk: str, sk: str, before: dict[str, Any] | None) -> None:
        """Remove an item (the lock held); its index entries go too, billed like their writes."""
        if before is None:
            return
        self._remove(table, pk, sk)
        self._book_indexes(table, before)

    def transact_write_items(self, TransactItems: list[dict[str, Any]], ClientRequestToken: str | None = None,
                             **rest: Any) -> dict[str, Any]:
        """Put, Update, Delete and ConditionCheck, each with an optional condition; all or nothing,
        billed at two write units per unit as DynamoDB bills transactions. A failed condition cancels
        the transaction (TransactionCanceled with a reason per item) after billing the items up to it.
        (`ClientRequestToken`, which botocore fills in, is ignored: no call is repeated here.)"""
        if rest:
            raise NotImplementedError(f"transact_write_items parameters {sorted(rest)}")
        if len(TransactItems) > 100:
            raise ValueError("TransactWriteItems takes at most 100 items")
        keys = [(op["TableName"], *(self._item_key(op["TableName"], op["Item"]) if kind == "Put"
                                    else self._key(op["TableName"], op["Key"])))
                for request in TransactItems for kind, op in request.items()]
        if len(set(keys)) < len(keys):
            raise ClientError({"Error": {"Code": "ValidationException", "Message": (
                "Transaction request cannot include multiple operations on one item")}}, "TransactWriteItems")
        with self._lock:
            planned = []
            for position, request in enumerate(TransactItems):
                (kind, op), = request.items()
                table = op["TableName"]
                key = self._item_key(table, op["Item"]) if kind == "Put" else self._key(table, op["Key"])
                before = self._get(table, *key)
                names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
                if kind == "Put":
                    after: dict[str, Any] | None = op["Item"]
                elif kind == "Delete":
                    after = None
                elif kind == "Update":
                    after = apply_update(before, op["Key"], op["UpdateExpression"], names, values)
                elif kind == "ConditionCheck":
                    after = before
                else:
                    raise NotImplementedError(f"transaction operation {kind}")
                self._check_size(after, "TransactWriteItems")
                self._book("TransactWriteItems", table, key[0], "WRU", 2 * write_units(before, after))
                condition = op.get("ConditionExpression")
                if condition and not condition_holds(condition, before, values, names):
                    self.failed_conditions[(self.phase, self.category(table, key[0]))] += 1
                    reasons = [{"Code": "None"} for _ in TransactItems]
                    reasons[position] = {"Code": "ConditionalCheckFailed",
                                         "Message": "The conditional request failed"}
                    raise TransactionCanceled(reasons)
                if kind != "ConditionCheck":
                    planned.append((table, key, before, after))
            for table, (pk, sk), before, after in planned:
                if after is None:
                    self._delete(table, pk, sk, before)
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
        inclusive = below = False
        if match := _KEY_EQ.match(KeyConditionExpression):
            names = (match.group(1),)
            pk = values[match.group(2)]["S"]
        elif match := _KEY_BETWEEN.match(KeyConditionExpression):
            names = (match.group(1), match.group(3))
            pk, lo, hi = (values[match.group(i)]["S"] for i in (2, 4, 5))
        elif match := _KEY_AFTER.match(KeyConditionExpression):
            names = (match.group(1), match.group(3))
            pk, after = values[match.group(2)]["S"], values[match.group(5)]["S"]
            inclusive, below = match.group(4).endswith("="), match.group(4).startswith("<")
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
            elif after is not None and below:
                keys = keys[:(bisect.bisect_right if inclusive else bisect.bisect_left)(keys, after)]
            elif after is not None:
                keys = keys[(bisect.bisect_left if inclusive else bisect.bisect_right)(keys, after):]
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

    def scan(self, TableName: str, ConsistentRead: bool = False, FilterExpression: str | None = None,
             ExpressionAttributeNames: dict[str, str] | None = None,
             ExpressionAttributeValues: dict[str, Any] | None = None, ProjectionExpression: str | None = None,
             ExclusiveStartKey: dict[str, Any] | None = None, Limit: int | None = None,
             **rest: Any) -> dict[str, Any]:
        """Every item of the table in key order, a page at a time (1 MB, or `Limit` items, read before
        filtering); billed for every item read, in category "scan"."""
        if rest:
            raise NotImplementedError(f"scan parameters {sorted(rest)}")
        pk_name, sk_name = self.key_schemas[TableName]
        with self._lock:
            keys = sorted((pk, sk) for pk, partition in self.tables[TableName].items() for sk in partition)
            if ExclusiveStartKey is not None:
                keys = keys[bisect.bisect_right(keys, self._key(TableName, ExclusiveStartKey)):]
            items, size, scanned, last = [], 0, 0, None
            for pk, sk in keys:
                item = self.tables[TableName][pk][sk]
                scanned += 1
                size += item_size(item)
                if FilterExpression is None or condition_holds(FilterExpression, item, ExpressionAttributeValues,
                                                               ExpressionAttributeNames):
                    items.append(self._project(item, ProjectionExpression, ExpressionAttributeNames))
                limited = Limit is not None and scanned >= Limit
                if size >= QUERY_PAGE_BYTES or limited:
                    if limited or (pk, sk) != keys[-1]:
                        last = {pk_name: {"S": pk}, **({sk_name: {"S": sk}} if sk_name else {})}
                    break
            self.read_bytes[(self.phase, "scan")] += size
            self.units[(self.phase, "scan", "RRU")] += read_units(size, ConsistentRead)
            self.calls[(self.phase, "Scan", "scan")] += 1
        response: dict[str, Any] = {"Items": items, "Count": len(items), "ScannedCount": scanned}
        if last is not None:
            response["LastEvaluatedKey"] = last
        return response

    # --- reporting ---

    def stored_items(self, ttl_attribute: str = "expiresAt") -> Iterator[tuple[str, str, int, int | None, bool]]:
        """(table, category, billed bytes, lifetime ms, index entry?) of every stored item and global
        secondary index entry. Billed bytes: the item's size (an index entry: its index and table keys)
        plus DynamoDB's 100 bytes of overhead per item. Lifetime: from the item's first write
        (`written_ms`) to its `ttl_attribute`; None when either is unknown (no `clock_ms` at the write, or
        an item that never expires)."""
        for table, partitions in self.tables.items():
            table_keys = tuple(name for name in self.key_schemas[table] if name)
            for pk, partition in partitions.items():
                category = self.category(table, pk)
                for sk, item in partition.items():
                    written, expires = self.written_ms.get((table, pk, sk)), item.get(ttl_attribute)
                    lifetime = None if written is None or expires is None else int(expires["N"]) * 1000 - written
                    yield table, category, item_size(item) + STORAGE_OVERHEAD_BYTES, lifetime, False
                    for partition_key, sort_key in self.indexes.get(table, ()):
                        if partition_key in item:
                            entry = {name: item[name] for name in (*table_keys, partition_key, sort_key)
                                     if name in item}
                            yield table, category, item_size(entry) + STORAGE_OVERHEAD_BYTES, lifetime, True

    def total(self, kind: str, phase: str | None = None, category: str | None = None) -> float:
        return sum(units for (p, c, k), units in self.units.items()
                   if k == kind and (phase is None or p == phase) and (category is None or c == category))

    def by_category(self, kind: str, phase: str | None = None) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for (p, c, k), units in self.units.items():
            if k == kind and (phase is None or p == phase):
                out[c] += units
        return dict(out)
