"""The DynamoDB tables, built from the shared TableSpecs (meterline.storage.tables.ALL_TABLES), the
same definitions the local stack creates its tables from: keys, stream and TTL are never restated here.
"""

from __future__ import annotations

from collections.abc import Iterable

from aws_cdk import aws_dynamodb as dynamodb
from constructs import Construct

from infra.config import MeterlineProps
from infra.lambdas import removal_policy
from meterline.storage.tables import ALL_TABLES, TableSpec

_ATTRIBUTE_TYPES = {
    "S": dynamodb.AttributeType.STRING,
    "N": dynamodb.AttributeType.NUMBER,
    "B": dynamodb.AttributeType.BINARY,
}


# Point-in-time recovery per table. The usage table holds only what the events table derives (counting
# rows, slots, index pages, work lists): `meterline recount` rebuilds a range of it from the events, so
# its continuous backups would cost as much as the counters themselves (docs/decisions.md).
POINT_IN_TIME_RECOVERY = {"Events": True, "Usage": False, "Catalog": True}


class Storage(Construct):
    """One on-demand table per spec, with point-in-time recovery where POINT_IN_TIME_RECOVERY says;
    deletion protection and RETAIN in production."""

    def __init__(
        self, scope: Construct, construct_id: str, *, props: MeterlineProps, specs: Iterable[TableSpec] = ALL_TABLES
    ) -> None:
        super().__init__(scope, construct_id)
        self.tables: dict[TableSpec, dynamodb.Table] = {}
        for spec in specs:
            self.tables[spec] = self._table(spec, props)

    def _table(self, spec: TableSpec, props: MeterlineProps) -> dynamodb.Table:
        types = {a["AttributeName"]: _ATTRIBUTE_TYPES[a["AttributeType"]] for a in spec.attribute_definitions()}
        keys = {k["KeyType"]: dynamodb.Attribute(name=k["AttributeName"], type=types[k["AttributeName"]])
                for k in spec.key_schema()}
        table = dynamodb.Table(
            self, spec.logical_name,
            partition_key=keys["HASH"],
            sort_key=keys.get("RANGE"),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=POINT_IN_TIME_RECOVERY[spec.logical_name]
            ),
            deletion_protection=props.production,
            removal_policy=removal_policy(props),
            stream=dynamodb.StreamViewType[spec.stream_view_type] if spec.stream_view_type else None,
            time_to_live_attribute=spec.ttl_attribute,
        )
        for index in spec.indexes:
            table.add_global_secondary_index(
                index_name=index.name,
                partition_key=dynamodb.Attribute(name=index.partition_key, type=dynamodb.AttributeType.STRING),
                sort_key=dynamodb.Attribute(name=index.sort_key, type=dynamodb.AttributeType.NUMBER),
                projection_type=dynamodb.ProjectionType.KEYS_ONLY,
            )
        return table

    def table(self, spec: TableSpec) -> dynamodb.Table:
        return self.tables[spec]
