"""The events-table stream consumer: DynamoDB Streams -> the processor Lambda.

The mapping delivers batches in order per shard with one concurrent batch per shard
(ParallelizationFactor 1), honours partial batch responses (ReportBatchItemFailures), bisects a batch
whose invocation fails and retries it until its records are `streamMaxRecordAgeSeconds` old (20 h by
default; no retry count, so a fault that lasts hours blocks the shard, and raises the iterator-age alarm,
instead of skipping batches); only then does it record the batch's position in an SQS on-failure queue,
while the stream (24 h retention) still holds the records. The queue keeps messages 14 days and is
retained in protected stages. The events table stays the source of truth for a recount.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.config import MeterlineProps
from infra.lambdas import MeterlineFunction, SharedLayers, removal_policy
from meterline.storage.tables import EVENT_TIME_INDEX, EVENTS_TABLE, TableSpec

PROCESSOR_NAME = "processor"
COMPACTOR_NAME = "compactor"
BACKFILL_NAME = "backfill"
REPLAY_NAME = "replay"


class StreamProcessing(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        props: MeterlineProps,
        layers: SharedLayers,
        tables: Mapping[TableSpec, dynamodb.ITable],
        source: TableSpec = EVENTS_TABLE,
    ) -> None:
        super().__init__(scope, construct_id)
        if not source.stream_view_type:
            raise ValueError(f"the {source.logical_name} table has no stream to process")

        # Holds the shard and sequence-number range of each batch given up on (records too old): the
        # only trace of what the counters may miss until a replay or a recount, so kept SQS's maximum 14
        # days and retained with the tables in protected stages. Its visibility timeout covers a replay.
        self.failure_queue = sqs.Queue(
            self, "FailureQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
            visibility_timeout=Duration.minutes(15),
            removal_policy=removal_policy(props),
        )
        self.processor = MeterlineFunction(
            self, "Processor",
            name=PROCESSOR_NAME,
            description="Consumes the events stream: event index and windowed counters",
            props=props, layers=layers, tables=tables, reserved_concurrency=props.processor_reserved_concurrency,
        )
        self.event_source = sources.DynamoEventSource(
            tables[source],
            starting_position=lambda_.StartingPosition.TRIM_HORIZON,
            batch_size=props.stream_batch_size,
            max_batching_window=props.stream_batching_window,
            bisect_batch_on_error=True,
            report_batch_item_failures=True,
            retry_attempts=props.stream_retry_attempts,
            max_record_age=Duration.seconds(props.stream_max_record_age_seconds),
            parallelization_factor=1,
            on_failure=sources.SqsDlq(self.failure_queue),
            # the time index's manifests never reach the processor (nor cost an invocation)
            filters=[lambda_.FilterCriteria.filter(
                {"dynamodb": {"NewImage": {EVENT_TIME_INDEX.partition_key: {"S": lambda_.FilterRule.not_exists()}}}})],
        )
        self.processor.function.add_event_source(self.event_source)

        # Replays what the mapping gave up on, from the stream while it still holds the records (a batch
        # is given up at 20 h, the stream keeps 24 h); a message it cannot replay stays on the queue.
        self.replay = MeterlineFunction(
            self, "Replay", name=REPLAY_NAME,
            description="Replays stream batches the processor gave up on, from the on-failure queue",
            props=props, layers=layers, tables=tables,
        )
        # the records of a named shard only: no ListStreams (which grant_stream_read adds on "*")
        self.replay.role.add_to_principal_policy(iam.PolicyStatement(
            actions=["dynamodb:DescribeStream", "dynamodb:GetShardIterator", "dynamodb:GetRecords"],
            resources=[tables[source].table_stream_arn]))
        # Few at once (SQS's least): a shard's records are read by at most two readers at a time, one of
        # them the processor's mapping.
        self.replay.function.add_event_source(sources.SqsEventSource(
            self.failure_queue, batch_size=1, report_batch_item_failures=True, max_concurrency=2))

        # The compactor folds counting rows into quarter-hour and day slots. It must never run twice at
        # once (reserved concurrency 1); a run that finds nothing to do is a few reads.
        self.compactor, self.compaction_schedule = self._every_minute(
            "Compactor", COMPACTOR_NAME, "Folds counting rows into quarter-hour and day slots",
            "CompactionSchedule", "Runs the Meterline compactor every minute", props, layers, tables)
        # Backfills of new meters, in steps that resume: apart from the compactor, so folding never waits.
        self.backfill, self.backfill_schedule = self._every_minute(
            "Backfill", BACKFILL_NAME, "Recounts new meters over their namespace's stored events",
            "BackfillSchedule", "Runs Meterline meter backfills every minute", props, layers, tables)

    def _every_minute(self, construct_id: str, name: str, description: str, rule_id: str, rule_description: str,
                      props: MeterlineProps, layers: SharedLayers, tables: Mapping[TableSpec, dynamodb.ITable]
                      ) -> tuple[MeterlineFunction, events.Rule]:
        """A function that never runs twice at once (reserved concurrency 1), invoked every minute."""
        function = MeterlineFunction(self, construct_id, name=name, description=description, props=props,
                                     layers=layers, tables=tables, reserved_concurrency=1)
        rule = events.Rule(self, rule_id, description=rule_description,
                           schedule=events.Schedule.rate(Duration.minutes(1)),
                           targets=[targets.LambdaFunction(function.function, retry_attempts=0)])
        return function, rule

    @property
    def function(self) -> lambda_.Function:
        return self.processor.function
