"""Offline validation of the synthesized template: cdk-nag, cfn-lint, and the table definitions the
local stack and the CDK stack share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from infra import nag
from meterline.storage.tables import ALL_TABLES
from tests.infra.synth import Synthesized

# Every finding Meterline acknowledges (infra/nag.py); a new one must be added here on purpose.
EXPECTED_ACKNOWLEDGED = {
    "AwsSolutions-IAM5[Resource::*]",
    "AwsSolutions-L1",
    "AwsSolutions-SQS3",
    "AwsSolutions-SMG4",
    "AwsSolutions-DDB3",  # the usage table, derived from the events, has no point-in-time recovery
}


def expected_acknowledged(dev: Synthesized) -> set[str]:
    """EXPECTED_ACKNOWLEDGED, and the reports function's schedules of this stack's group (IAM5)."""
    (group,) = dev.resources("AWS::Scheduler::ScheduleGroup").values()
    return EXPECTED_ACKNOWLEDGED | {nag.report_schedules_finding(group["Properties"]["Name"])}



def _nag_report(outdir: Path) -> dict[str, Any]:
    report = json.loads((outdir / "validation-report.json").read_text())
    (aws_solutions,) = [r for r in report["pluginReports"] if r["pluginName"] == "AwsSolutions"]
    return aws_solutions


def test_cdk_nag_aws_solutions_passes_with_only_the_known_acknowledgments(dev: Synthesized) -> None:
    # The synth itself raises on an unacknowledged finding; the report says what was checked.
    report = _nag_report(dev.outdir)
    assert report["conclusion"] == "success"
    assert report["violations"] == []
    assert {v["ruleName"] for v in report["suppressedViolations"]} == expected_acknowledged(dev)


def test_every_acknowledgment_carries_a_reason(dev: Synthesized) -> None:
    metadata = json.loads(next(dev.outdir.glob("*.metadata.json")).read_text())
    acknowledged = {rule: reason for entries in metadata.values() for entry in entries
                    if entry["type"] == "aws:cdk:acknowledged-rules" for rule, reason in entry["data"].items()}
    assert {rule.split("::", 1)[1] for rule in acknowledged} == expected_acknowledged(dev)
    assert all(len(reason) > 40 for reason in acknowledged.values())


def test_cdk_nag_fails_the_synth_on_an_unacknowledged_finding(tmp_path: Path) -> None:
    import aws_cdk as cdk
    from aws_cdk import aws_sqs as sqs

    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "Careless")
    sqs.Queue(stack, "PlainQueue")  # no DLQ, no TLS enforcement
    nag.enable(app)
    with pytest.raises(Exception, match=r"ValidationFailed[\s\S]*AwsSolutions-SQS4"):
        app.synth()


def test_cfn_lint_reports_no_errors(dev: Synthesized) -> None:
    from cfnlint.api import ManualArgs, lint

    template = next(dev.outdir.glob("*.template.json")).read_text()
    matches = lint(template, config=ManualArgs(regions=["us-east-1"]))
    errors = [f"{m.rule.id} {m.message}" for m in matches if m.rule.id.startswith("E")]
    assert errors == []
    # CDK's own redundant DependsOn (W3005) is the only warning tolerated.
    assert {m.rule.id for m in matches} <= {"W3005"}


def test_local_stack_and_cdk_create_tables_from_the_same_definitions(dev: Synthesized) -> None:
    """The local stack calls CreateTable with `spec.create_table_request(name)` (and enables TTL on
    `spec.ttl_attribute`); CDK builds its tables from the same specs. Create the local tables in moto
    exactly that way and compare what DynamoDB reports with the synthesized template."""
    import boto3
    from moto import mock_aws

    tables = dev.resources("AWS::DynamoDB::Table")
    assert len(tables) == len(ALL_TABLES)
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        for spec in ALL_TABLES:
            request = spec.create_table_request(f"local-{spec.logical_name}")
            local = client.create_table(**request)["TableDescription"]
            cdk_props = tables[dev.logical_id(f"Storage/{spec.logical_name}")]["Properties"]

            assert cdk_props["KeySchema"] == request["KeySchema"] == local["KeySchema"]
            assert sorted(cdk_props["AttributeDefinitions"], key=str) == sorted(request["AttributeDefinitions"],
                                                                                 key=str)
            assert cdk_props["BillingMode"] == request["BillingMode"]
            local_stream = local.get("StreamSpecification", {}).get("StreamViewType")
            cdk_stream = cdk_props.get("StreamSpecification", {}).get("StreamViewType")
            assert cdk_stream == local_stream == spec.stream_view_type
            cdk_ttl = cdk_props.get("TimeToLiveSpecification", {}).get("AttributeName")
            assert cdk_ttl == spec.ttl_attribute
            # the events table's time index (KEYS_ONLY), and no other index anywhere
            indexes = {i["IndexName"]: (i["KeySchema"], i["Projection"])
                       for i in cdk_props.get("GlobalSecondaryIndexes", [])}
            assert indexes == {i["IndexName"]: (i["KeySchema"], i["Projection"])
                               for i in local.get("GlobalSecondaryIndexes", [])}
            assert indexes == {i.name: (spec.index_request(i)["KeySchema"], {"ProjectionType": "KEYS_ONLY"})
                               for i in spec.indexes}
