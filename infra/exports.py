"""Usage exports: each report has its own EventBridge Scheduler schedule (created at run time by the
reports function, in this construct's group) that invokes the exporter; manual runs reach the exporter
through the export-request queue. The exporter queries the report's window and puts one webhook
delivery per subject on the delivery queue; the sender signs and POSTs each, re-enqueues a failed one
itself with a growing DelaySeconds, and moves it to the delivery dead-letter queue after its last
attempt. The sender also consumes that dead-letter queue, to end as failed a delivery the queue's
redrive moved there (the sender crashed or timed out on it every time). Signing secrets are stored
encrypted with this construct's KMS key.

The reports function is created by the Api construct (it serves HTTP routes); this construct gives it
what it needs for exports: the environment, the scheduler, PassRole, KMS and export-queue permissions.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Aws, Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.config import MeterlineProps
from infra.lambdas import SIZING, MeterlineFunction, SharedLayers, removal_policy
from meterline.aws.signing_secrets import CONTEXT_KEYS
from meterline.storage.tables import TableSpec
from meterline.webhooks import DEADLINE_MARGIN_SECONDS

EXPORTER_NAME = "exporter"
SENDER_NAME = "sender"

# One export run per invocation: a run is a whole window of a report, and a failed one is retried alone.
EXPORTER_BATCH_SIZE = 1
SENDER_BATCH_SIZE = 10
# The sender may POST a batch's webhooks one after another; each waits at most this long (plus the
# deadline's margin). It starts no attempt it has no time left for, but a full batch should fit.
WEBHOOK_TIMEOUT_SECONDS = 10
assert SIZING[SENDER_NAME].timeout.to_seconds() > SENDER_BATCH_SIZE * (WEBHOOK_TIMEOUT_SECONDS
                                                                       + DEADLINE_MARGIN_SECONDS)

# The sender retries failed webhooks itself; a message is received again only when the function
# failed as a whole (a crash or timeout), and after this many receives it goes to the dead-letter queue.
MAX_RECEIVE_COUNT = 3

# The encryption context every signing-secret encryption carries (meterline.aws.signing_secrets); the
# key grants require exactly these keys.
SIGNING_CONTEXT_KEYS = CONTEXT_KEYS

# The contract variables each function reads (the local stack sets them all, meterline_local.stack).
# The exporter cannot be given its own ARN: its environment would depend on itself.
REPORTS_ENVIRONMENT = ("SCHEDULE_GROUP_NAME", "EXPORTER_FUNCTION_ARN", "SCHEDULER_ROLE_ARN", "EXPORT_QUEUE_URL",
                       "SIGNING_KEY_ID", "METERLINE_EXPORT_SETTLE_SECONDS", "METERLINE_WEBHOOK_ALLOW_LOOPBACK")
EXPORTER_ENVIRONMENT = ("DELIVERY_QUEUE_URL", "EXPORT_QUEUE_URL", "METERLINE_EXPORT_SETTLE_SECONDS",
                        "METERLINE_EXPORT_MAX_HOLD_SECONDS")
SENDER_ENVIRONMENT = ("DELIVERY_QUEUE_URL", "DELIVERY_DLQ_URL", "SIGNING_KEY_ID", "METERLINE_WEBHOOK_ALLOW_LOOPBACK",
                      "METERLINE_WEBHOOK_MAX_ATTEMPTS", "METERLINE_WEBHOOK_BACKOFF_BASE_SECONDS",
                      "METERLINE_WEBHOOK_BACKOFF_MAX_SECONDS", "METERLINE_WEBHOOK_TIMEOUT_SECONDS")

SCHEDULE_ACTIONS = ("scheduler:CreateSchedule", "scheduler:UpdateSchedule", "scheduler:DeleteSchedule",
                    "scheduler:GetSchedule")


class Exports(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        props: MeterlineProps,
        layers: SharedLayers,
        tables: Mapping[TableSpec, dynamodb.ITable],
        reports: MeterlineFunction,
    ) -> None:
        super().__init__(scope, construct_id)
        self.schedule_group = scheduler.ScheduleGroup(self, "ScheduleGroup", removal_policy=RemovalPolicy.DESTROY)
        self.schedules_arn = Stack.of(self).format_arn(
            service="scheduler", resource="schedule", resource_name=f"{self.schedule_group.schedule_group_name}/*"
        )
        # Only EventBridge Scheduler, on behalf of this account's schedules in this group, may assume it.
        self.scheduler_role = iam.Role(
            self, "SchedulerRole",
            description="Assumed by EventBridge Scheduler to invoke the Meterline exporter",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com",
                conditions={
                    "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                    "ArnLike": {"aws:SourceArn": self.schedules_arn},
                },
            ),
        )
        self.signing_key = kms.Key(
            self, "SigningKey",
            description="Encrypts the signing secrets of Meterline usage export webhooks",
            enable_key_rotation=True,
            removal_policy=removal_policy(props),
        )

        self.export_dlq = _dead_letter_queue(self, "ExportDeadLetterQueue")
        self.export_queue = _queue(self, "ExportQueue", self.export_dlq, consumer=EXPORTER_NAME)
        self.delivery_dlq = _dead_letter_queue(self, "DeliveryDeadLetterQueue", consumer=SENDER_NAME)
        self.delivery_queue = _queue(self, "DeliveryQueue", self.delivery_dlq, consumer=SENDER_NAME)

        self.exporter = MeterlineFunction(
            self, "Exporter",
            name=EXPORTER_NAME,
            description="Runs usage exports: queries a report's window, enqueues one webhook per subject",
            props=props, layers=layers, tables=tables,
        )
        self.sender = MeterlineFunction(
            self, "Sender",
            name=SENDER_NAME,
            description="Signs and POSTs usage webhooks, retrying failures with backoff",
            props=props, layers=layers, tables=tables,
        )
        self.environment = {
            "SCHEDULE_GROUP_NAME": self.schedule_group.schedule_group_name,
            "EXPORTER_FUNCTION_ARN": self.exporter.function.function_arn,
            "SCHEDULER_ROLE_ARN": self.scheduler_role.role_arn,
            "EXPORT_QUEUE_URL": self.export_queue.queue_url,
            "DELIVERY_QUEUE_URL": self.delivery_queue.queue_url,
            "DELIVERY_DLQ_URL": self.delivery_dlq.queue_url,
            "SIGNING_KEY_ID": self.signing_key.key_arn,
            "METERLINE_EXPORT_SETTLE_SECONDS": str(props.export_settle_seconds),
            "METERLINE_EXPORT_MAX_HOLD_SECONDS": str(props.export_max_hold_seconds),
            "METERLINE_WEBHOOK_ALLOW_LOOPBACK": "false",  # never on AWS: a webhook must not reach the function's host
            "METERLINE_WEBHOOK_MAX_ATTEMPTS": str(props.webhook_max_attempts),
            "METERLINE_WEBHOOK_BACKOFF_BASE_SECONDS": str(props.webhook_backoff_base_seconds),
            "METERLINE_WEBHOOK_BACKOFF_MAX_SECONDS": str(props.webhook_backoff_max_seconds),
            "METERLINE_WEBHOOK_TIMEOUT_SECONDS": str(WEBHOOK_TIMEOUT_SECONDS),
        }
        for function, names in ((reports, REPORTS_ENVIRONMENT), (self.exporter, EXPORTER_ENVIRONMENT),
                                (self.sender, SENDER_ENVIRONMENT)):
            for name in names:
                function.function.add_environment(name, self.environment[name])

        # Reports: manage the group's schedules (pointing them at the exporter through the scheduler
        # role), encrypt signing secrets, request manual runs.
        reports.role.add_to_principal_policy(iam.PolicyStatement(
            actions=list(SCHEDULE_ACTIONS), resources=[self.schedules_arn],
        ))
        reports.role.add_to_principal_policy(iam.PolicyStatement(
            actions=["iam:PassRole"], resources=[self.scheduler_role.role_arn],
            conditions={"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}},
        ))
        self._grant_signing_key(reports.role, "kms:Encrypt")
        self._grant_signing_key(reports.role, "kms:Decrypt")  # a PUT that keeps redacted endpoint headers
        self.export_queue.grant_send_messages(reports.role)

        self.allow_scheduler_to_invoke(self.exporter.function)
        self.exporter.function.add_event_source(sources.SqsEventSource(
            self.export_queue, batch_size=EXPORTER_BATCH_SIZE, report_batch_item_failures=True,
            max_concurrency=props.queue_max_concurrency,
        ))
        self.delivery_queue.grant_send_messages(self.exporter.role)
        self.export_queue.grant_send_messages(self.exporter.role)  # a manual run waiting for a backfill

        self.sender.function.add_event_source(sources.SqsEventSource(
            self.delivery_queue, batch_size=SENDER_BATCH_SIZE, report_batch_item_failures=True,
            max_concurrency=props.queue_max_concurrency,
        ))
        # What SQS dead-letters there (the sender crashed or timed out on it every time) the sender ends as
        # failed on its run; what it dead-lettered itself has ended already.
        self.sender.function.add_event_source(sources.SqsEventSource(
            self.delivery_dlq, batch_size=SENDER_BATCH_SIZE, report_batch_item_failures=True,
            max_concurrency=props.queue_max_concurrency,
        ))
        self._grant_signing_key(self.sender.role, "kms:Decrypt")
        self.delivery_queue.grant_send_messages(self.sender.role)  # retries, delayed
        self.delivery_dlq.grant_send_messages(self.sender.role)  # after the last attempt

    def allow_scheduler_to_invoke(self, function: lambda_.IFunction) -> None:
        """Let the schedules of this group invoke `function` (the unqualified function only)."""
        self.scheduler_role.add_to_principal_policy(iam.PolicyStatement(
            actions=["lambda:InvokeFunction"], resources=[function.function_arn],
        ))

    def _grant_signing_key(self, role: iam.IRole, action: str) -> None:
        """`action` on the signing key, only with the signing secrets' encryption context."""
        role.add_to_principal_policy(iam.PolicyStatement(
            actions=[action], resources=[self.signing_key.key_arn],
            conditions={
                "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": list(SIGNING_CONTEXT_KEYS)},
                "Null": {"kms:EncryptionContextKeys": "false"},
            },
        ))


def _dead_letter_queue(scope: Construct, construct_id: str, *, consumer: str | None = None) -> sqs.Queue:
    return sqs.Queue(
        scope, construct_id,
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        # Consumed (by the sender) like the other queues: six times the consumer's timeout, as in _queue.
        visibility_timeout=Duration.seconds(6 * SIZING[consumer].timeout.to_seconds()) if consumer else None,
        retention_period=Duration.days(14),
    )


def _queue(scope: Construct, construct_id: str, dead_letter_queue: sqs.Queue, *, consumer: str) -> sqs.Queue:
    return sqs.Queue(
        scope, construct_id,
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        # AWS's advice for SQS event sources: six times the function's timeout, so a batch the
        # mapping retries after throttling is not received twice meanwhile.
        visibility_timeout=Duration.seconds(6 * SIZING[consumer].timeout.to_seconds()),
        retention_period=Duration.days(4),
        dead_letter_queue=sqs.DeadLetterQueue(queue=dead_letter_queue, max_receive_count=MAX_RECEIVE_COUNT),
    )
