"""The DynamoDB tables, defined once. The CDK stack, the local stack and the tests all build
their tables from these specs, so the three cannot drift apart."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TableSpec:
    """Keys, stream and TTL of one table. `logical_name` names it in CDK and in env vars."""

    logical_name: str
    env_var: str
    partition_key: str
    sort_key: str | None = None
    stream_view_type: str | None = None  # NEW_IMAGE, NEW_AND_OLD_IMAGES, ... or None
    ttl_attribute: str | None = None

    def key_schema(self) -> list[dict[str, str]]:
        schema = [{"AttributeName": self.partition_key, "KeyType": "HASH"}]
        if self.sort_key:
            schema.append({"AttributeName": self.sort_key, "KeyType": "RANGE"})
        return schema

    def attribute_definitions(self) -> list[dict[str, str]]:
        return [{"AttributeName": key["AttributeName"], "AttributeType": "S"} for key in self.key_schema()]

    def create_table_request(self, table_name: str) -> dict[str, Any]:
        """Arguments of DynamoDB CreateTable (on-demand), as the local stack and tests use them."""
        request: dict[str, Any] = {
            "TableName": table_name,
            "KeySchema": self.key_schema(),
            "AttributeDefinitions": self.attribute_definitions(),
            "BillingMode": "PAY_PER_REQUEST",
        }
        if self.stream_view_type:
            request["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": self.stream_view_type}
        return request


# Raw events, keyed by the idempotency key (namespace, source, id). Its stream feeds the processor,
# which needs only the new image: events are never updated, and expiry (REMOVE) is ignored.
EVENTS_TABLE = TableSpec(
    logical_name="Events",
    env_var="EVENTS_TABLE",
    partition_key="pk",
    stream_view_type="NEW_IMAGE",
    ttl_attribute="expiresAt",
)

# Everything derived from the events: the event index pages now, windowed counters later.
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
