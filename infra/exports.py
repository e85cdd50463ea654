"""Usage exports: the EventBridge Scheduler group that report schedules are created in (at run time,
by the API, one schedule per report), the role Scheduler assumes to invoke the exporter, and the
webhook delivery queue with its dead-letter queue.

The exporter and the webhook sender Lambdas do not exist yet; when they land they are attached with
`allow_scheduler_to_invoke(exporter)` and an SQS event source on `delivery_queue`. Nothing here is a
placeholder: the role has no permissions until a function is granted to it.
"""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_sqs as sqs
from constructs import Construct

# A webhook that keeps failing is retried this many times (with the queue's visibility timeout
# between tries) before its message moves to the dead-letter queue.
DELIVERY_MAX_RECEIVE_COUNT = 5
DELIVERY_VISIBILITY_TIMEOUT = Duration.minutes(5)


class Exports(Construct):
    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.schedule_group = scheduler.ScheduleGroup(
            self, "ScheduleGroup",
            removal_policy=RemovalPolicy.DESTROY,
        )
        # Only EventBridge Scheduler, on behalf of this account's schedules in this group, may assume it.
        self.scheduler_role = iam.Role(
            self, "SchedulerRole",
            description="Assumed by EventBridge Scheduler to invoke the Meterline exporter",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com",
                conditions={
                    "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                    "ArnLike": {
                        "aws:SourceArn": f"arn:{Aws.PARTITION}:scheduler:{Aws.REGION}:{Aws.ACCOUNT_ID}:schedule/"
                        f"{self.schedule_group.schedule_group_name}/*"
                    },
                },
            ),
        )
        self.delivery_dlq = sqs.Queue(
            self, "DeliveryDeadLetterQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        self.delivery_queue = sqs.Queue(
            self, "DeliveryQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=DELIVERY_VISIBILITY_TIMEOUT,
            retention_period=Duration.days(4),
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.delivery_dlq, max_receive_count=DELIVERY_MAX_RECEIVE_COUNT
            ),
        )

    def allow_scheduler_to_invoke(self, function: lambda_.IFunction) -> None:
        """Let the schedules of this group invoke `function` (the exporter, when it exists)."""
        function.grant_invoke(self.scheduler_role)
