"""The DynamoDB tables, defined once. The CDK stack, the local stack and the tests all build
their tables from these specs, so the three cannot drift apart."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class IndexSpec:
    """A global secondary index projecting keys only: a string partition key and a number sort key."""

    name: str
    partition_key: str
    sort_key: str


@dataclass(frozen=True)
class TableSpec:
    """Keys, stream and TTL of one table. `logical_name` names it in CDK and in env vars."""

    logical_name: str
    env_var: str
    partition_key: str
    sort_key: str | None = None
    stream_view_type: str | None = None  # NEW_IMAGE, NEW_AND_OLD_IMAGES, ... or None
    ttl_attribute: str | None = None
    indexes: tuple[IndexSpec, ...] = ()

    def key_schema(self) -> list[dict[str, str]]:
        schema = [{"AttributeName": self.partition_key, "KeyType": "HASH"}]
        if self.sort_key:
            schema.append({"AttributeName": self.sort_key, "KeyType": "RANGE"})
        return schema

    def attribute_definitions(self) -> list[dict[str, str]]:
        definitions = [{"AttributeName": key["AttributeName"], "AttributeType": "S"} for key in self.key_schema()]
        for index in self.indexes:
            definitions += [{"AttributeName": index.partition_key, "AttributeType": "S"},
                            {"AttributeName": index.sort_key, "AttributeType": "N"}]
        return definitions

    def index_request(self, index: IndexSpec) -> dict[str, Any]:
        """One GlobalSecondaryIndexes entry of CreateTable (and of UpdateTable's Create)."""
        return {"IndexName": index.name,
                "KeySchema": [{"AttributeName": index.partition_key, "KeyType": "HASH"},
                              {"AttributeName": index.sort_key, "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"}}

    def create_table_request(self, table_name: str) -> dict[str, Any]:
        """Arguments of DynamoDB CreateTable (on-demand), as the local stack and tests use them."""
        request: dict[str, Any] = {
            "TableName": table_name,
            "KeySchema": self.key_schema(),
            "AttributeDefinitions": self.attribute_definitions(),
            "BillingMode": "PAY_PER_REQUEST",
        }
        if self.indexes:
            request["GlobalSecondaryIndexes"] = [self.index_request(index) for index in self.indexes]
        if self.stream_view_type:
            request["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": self.stream_view_type}
        return request


# Events by time: ingestion writes, per request, one manifest item per UTC hour of event time listing
# the events' keys by type; only manifests carry `timeIndex` (the namespace) and `hour` (ms), so this
# sparse index holds one small entry per manifest, not per event, and a namespace's events of any time
# range are one ranged Query away, in order. Recounts and backfills read it, never scanning the table.
# (One index partition per namespace takes a write per request and hour: far below a partition's
# 1,000 writes per second up to ~50,000 events per second per namespace at 100 events per request.)
EVENT_TIME_INDEX = IndexSpec(name="EventTime", partition_key="timeIndex", sort_key="hour")

# Raw events, keyed by the idempotency key (namespace, source, id), and the manifests of the time
# index. Its stream feeds the processor, which needs only the new image: events are never updated,
# manifests are skipped, and expiry (REMOVE) is ignored.
EVENTS_TABLE = TableSpec(
    logical_name="Events",
    env_var="EVENTS_TABLE",
    partition_key="pk",
    stream_view_type="NEW_IMAGE",
    ttl_attribute="expiresAt",
    indexes=(EVENT_TIME_INDEX,),
)

# Everything derived from the events: counting rows, slots, work lists (docs/architecture.md).
USAGE_TABLE = TableSpec(
    logical_name="Usage",
    env_var="USAGE_TABLE",
    partition_key="pk",
    sort_key="sk",
    ttl_attribute="expiresAt",
)

# What users configure (meters, usage export reports; entitlements later) and the history of report runs,
# which expires (TTL) after METERLINE_RUN_RETENTION_DAYS.
CATALOG_TABLE = TableSpec(
    logical_name="Catalog",
    env_var="CATALOG_TABLE",
    partition_key="pk",
    sort_key="sk",
    ttl_attribute="expiresAt",
)

ALL_TABLES = (EVENTS_TABLE, USAGE_TABLE, CATALOG_TABLE)
