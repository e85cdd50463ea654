"""cdk-nag: the AwsSolutions checks run on every synth of the app, and every finding Meterline
acknowledges is listed here, with its reason, in one place.

`acknowledge` is called by the Meterline construct itself, so an app that embeds the construct and
runs its own cdk-nag sees the same acknowledgments. Each one is scoped to the constructs it is about;
nothing is acknowledged stack-wide.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Acknowledgment, App, Validations
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct

from functions.routes import REPORTS
from infra.storage import POINT_IN_TIME_RECOVERY
from meterline.settings import AuthMode

if TYPE_CHECKING:
    from aws_cdk import aws_sqs as sqs

    from infra.construct import Meterline
    from infra.lambdas import MeterlineFunction

LIST_STREAMS_WILDCARD = (
    "DynamoDB ListStreams (added by the stream event source) supports no resource-level permissions: "
    "AWS requires Resource '*'. Every DynamoDB table and stream action is scoped to its ARN."
)
PINNED_RUNTIME = (
    "Python 3.12 is pinned on purpose: the dependency layer is built for cp312 (infra/bundling.py "
    "PYTHON_VERSION) and the two must move together; 3.12 is a supported Lambda runtime. Moving on is "
    "a one-line change plus a re-run of the tests."
)
UNAUTHENTICATED = (
    "auth=none was chosen explicitly: the development stage, or -c allowUnauthenticated=true. Every "
    "request is served in the default namespace; every other stage refuses to synthesize without an "
    "authorizer (infra/config.py)."
)
PORTAL_SECRET_ROTATION = (
    "The portal token secret is an HMAC key: rotating it invalidates every outstanding portal token at "
    "once, so it is rotated by an operator (docs/infrastructure.md), not on a schedule. Tokens live at "
    "most 30 days."
)
STREAM_FAILURE_QUEUE = (
    "This queue is the on-failure destination of the stream event source mapping: it is itself the "
    "dead-letter queue of the stream processor (retained 14 days, alarmed on depth), so a DLQ of its "
    "own would only move the same messages once more."
)
USAGE_TABLE_WITHOUT_BACKUPS = (
    "The usage table holds only items derived from the events table (counting rows, slots, index pages, "
    "work lists), which keeps point-in-time recovery: `meterline recount` rebuilds any range of it from the "
    "events. Its continuous backups would cost about as much as its storage (docs/decisions.md)."
)

REPORT_SCHEDULES = (
    "The reports function creates one schedule per report at run time, named after the report, so no "
    "schedule ARN is known at deploy time. The wildcard is the schedules of this stack's own schedule "
    "group only (schedule/<group>/*); PassRole of the scheduler role is conditioned on "
    "iam:PassedToService scheduler.amazonaws.com."
)


def report_schedules_finding(group_name: str) -> str:
    """The IAM5 finding of the reports function's scheduler statement, as cdk-nag names it."""
    arn = f"arn:<AWS::Partition>:scheduler:<AWS::Region>:<AWS::AccountId>:schedule/{group_name}/*"
    return f"AwsSolutions-IAM5[Resource::{arn}]"


def enable(app: App) -> None:
    """Run AwsSolutions on the app's synth: an unacknowledged finding fails it."""
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))


def acknowledge(meterline: Meterline) -> None:
    functions = [*meterline.api.functions.values(), meterline.processing.processor, meterline.processing.compactor,
                 meterline.processing.backfill, meterline.processing.replay, meterline.exports.exporter,
                 meterline.exports.sender]
    if meterline.api.authorizer_function is not None:
        functions.append(meterline.api.authorizer_function)
    for function in functions:
        _ack(function.function, "AwsSolutions-L1", PINNED_RUNTIME)
    _ack(meterline.processing.processor.role, "AwsSolutions-IAM5[Resource::*]", LIST_STREAMS_WILDCARD)
    if meterline.props.auth_mode is AuthMode.NONE:
        _ack(meterline.api.http_api, "AwsSolutions-APIG4", UNAUTHENTICATED)
    _ack(meterline.processing.failure_queue, "AwsSolutions-SQS3", STREAM_FAILURE_QUEUE)
    _ack(meterline.api.portal_secret, "AwsSolutions-SMG4", PORTAL_SECRET_ROTATION)
    for spec, table in meterline.storage.tables.items():
        if not POINT_IN_TIME_RECOVERY[spec.logical_name]:
            _ack(table, "AwsSolutions-DDB3", USAGE_TABLE_WITHOUT_BACKUPS)
    _ack(meterline.api.functions[REPORTS.name].role,
         report_schedules_finding(meterline.exports.schedule_group.schedule_group_name), REPORT_SCHEDULES)


ACCESS_LOG_FAILURE_QUEUE = (
    "This queue is the on-failure destination of the access-log metering function's asynchronous "
    "invocations: it is itself where failed log batches go (retained 14 days, alarmed on depth), so a DLQ "
    "of its own would only move the same messages once more."
)


def acknowledge_gateway(function: MeterlineFunction, failure_queue: sqs.IQueue | None = None) -> None:
    """A Meterline function beside the Meterline construct (infra/metering.py), and its failure queue."""
    _ack(function.function, "AwsSolutions-L1", PINNED_RUNTIME)
    if failure_queue is not None:
        _ack(failure_queue, "AwsSolutions-SQS3", ACCESS_LOG_FAILURE_QUEUE)


def _ack(scope: IConstruct, rule: str, reason: str) -> None:
    Validations.of(scope).acknowledge(Acknowledgment(id=f"AwsSolutions::{rule}", reason=reason))
