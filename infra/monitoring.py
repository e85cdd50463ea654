"""Alarms to an SNS topic (optionally mailed), and one CloudWatch dashboard.

Alarms: API 5xx rate, per-function errors and throttles, the stream's iterator age (the processor
falling behind), the compactor's lag behind its schedule, and messages in any dead-letter or
on-failure queue. Missing data is not breaching:
an idle stack is a healthy one.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.config import MeterlineProps
from infra.lambdas import SERVICE_NAME
from meterline.observability import METRICS_NAMESPACE
from meterline.services.compaction import LAG_METRIC

PERIOD = Duration.minutes(5)
COMPACTION_LAG_ALARM_SECONDS = 30 * 60
_NOT_BREACHING = cloudwatch.TreatMissingData.NOT_BREACHING
_AT_LEAST = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
_ABOVE = cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD


class Monitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        props: MeterlineProps,
        http_api: apigwv2.HttpApi,
        functions: Mapping[str, lambda_.Function],  # every Meterline function, by name
        stream_function: lambda_.Function,  # the one that consumes the events stream
        dead_letter_queues: Mapping[str, sqs.Queue],
        tables: Mapping[str, dynamodb.Table],
    ) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(self, "AlarmTopic", display_name=f"Meterline {props.stage} alarms", enforce_ssl=True)
        if props.alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(props.alarm_email))
        self._action = actions.SnsAction(self.topic)
        self.alarms: dict[str, cloudwatch.Alarm] = {}

        requests = http_api.metric_count(period=PERIOD, statistic="Sum")
        server_errors = http_api.metric_server_error(period=PERIOD, statistic="Sum")
        error_rate = cloudwatch.MathExpression(
            expression="IF(requests > 0, 100 * errors / requests, 0)",
            using_metrics={"requests": requests, "errors": server_errors},
            period=PERIOD,
            label="5xx %",
        )
        self._alarm("Api5xxRate", error_rate, threshold=props.api_5xx_alarm_percent, comparison=_ABOVE,
                    evaluation_periods=3, datapoints_to_alarm=2,
                    description=f"More than {props.api_5xx_alarm_percent}% of API requests answered 5xx")

        for name, function in functions.items():
            label = name.capitalize()
            self._alarm(f"{label}Errors", function.metric_errors(period=PERIOD, statistic="Sum"), threshold=1,
                        description=f"The {name} function failed (unhandled error or timeout)")
            self._alarm(f"{label}Throttles", function.metric_throttles(period=PERIOD, statistic="Sum"), threshold=1,
                        description=f"The {name} function was throttled")

        iterator_age = stream_function.metric("IteratorAge", period=PERIOD, statistic="Maximum")
        self._alarm("StreamIteratorAge", iterator_age, threshold=props.iterator_age_alarm_seconds * 1000,
                    comparison=_ABOVE, evaluation_periods=2,
                    description=f"The processor is more than {props.iterator_age_alarm_seconds} s behind the "
                                "events stream (counters are stale; records expire from the stream after 24 h)")

        # The compactor's own metric (functions/compactor): how far behind its schedule it is. Queries stay
        # exact while it lags (they read raw rows instead of slots), but cost more the further behind it is.
        compaction_lag = cloudwatch.Metric(namespace=METRICS_NAMESPACE, metric_name=LAG_METRIC,
                                           dimensions_map={"service": SERVICE_NAME}, period=PERIOD,
                                           statistic="Maximum", unit=cloudwatch.Unit.SECONDS)
        self._alarm("CompactionLag", compaction_lag, threshold=COMPACTION_LAG_ALARM_SECONDS, comparison=_ABOVE,
                    evaluation_periods=2,
                    # The compactor reports every minute: no datapoint means it is not running at all.
                    missing_data=cloudwatch.TreatMissingData.BREACHING,
                    description=f"The compactor is more than {COMPACTION_LAG_ALARM_SECONDS // 60} minutes behind "
                                "(usage queries read raw rows for the unfolded time and get slower and costlier)")

        for name, queue in dead_letter_queues.items():
            depth = queue.metric_approximate_number_of_messages_visible(period=PERIOD, statistic="Maximum")
            self._alarm(f"{name}Depth", depth, threshold=1,
                        description=f"Messages are waiting in the {name} queue: something failed for good")

        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", default_interval=Duration.hours(6))
        self.dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(title="Alarms", alarms=list(self.alarms.values()), width=24)
        )
        self.dashboard.add_widgets(
            _graph("API requests", [requests, http_api.metric_client_error(period=PERIOD, statistic="Sum"),
                                    server_errors]),
            _graph("API latency (ms)", [http_api.metric_latency(period=PERIOD, statistic="p50"),
                                        http_api.metric_latency(period=PERIOD, statistic="p99")]),
            _graph("API 5xx %", [error_rate]),
        )
        self.dashboard.add_widgets(
            _graph("Invocations", [f.metric_invocations(period=PERIOD, statistic="Sum", label=n)
                                   for n, f in functions.items()]),
            _graph("Errors and throttles", [
                m for n, f in functions.items()
                for m in (f.metric_errors(period=PERIOD, statistic="Sum", label=f"{n} errors"),
                          f.metric_throttles(period=PERIOD, statistic="Sum", label=f"{n} throttles"))
            ]),
            _graph("Duration p99 (ms)", [f.metric_duration(period=PERIOD, statistic="p99", label=n)
                                         for n, f in functions.items()]),
        )
        self.dashboard.add_widgets(
            _graph("Stream iterator age (ms)", [iterator_age]),
            _graph("DynamoDB consumed capacity", [
                m for n, t in tables.items()
                for m in (t.metric_consumed_write_capacity_units(period=PERIOD, statistic="Sum", label=f"{n} WCU"),
                          t.metric_consumed_read_capacity_units(period=PERIOD, statistic="Sum", label=f"{n} RCU"))
            ]),
            _graph("Queue depth", [q.metric_approximate_number_of_messages_visible(period=PERIOD, label=n)
                                   for n, q in dead_letter_queues.items()]),
        )

        self.dashboard.add_widgets(_graph("Compaction lag (s)", [compaction_lag]))

    def _alarm(
        self,
        construct_id: str,
        metric: cloudwatch.IMetric,
        *,
        threshold: float,
        description: str,
        comparison: cloudwatch.ComparisonOperator = _AT_LEAST,
        evaluation_periods: int = 1,
        datapoints_to_alarm: int | None = None,
        missing_data: cloudwatch.TreatMissingData = _NOT_BREACHING,
    ) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self, construct_id,
            metric=metric,
            threshold=threshold,
            comparison_operator=comparison,
            evaluation_periods=evaluation_periods,
            datapoints_to_alarm=datapoints_to_alarm,
            treat_missing_data=missing_data,
            alarm_description=description,
        )
        alarm.add_alarm_action(self._action)
        alarm.add_ok_action(self._action)
        self.alarms[construct_id] = alarm
        return alarm


def _graph(title: str, metrics: list[cloudwatch.IMetric]) -> cloudwatch.GraphWidget:
    return cloudwatch.GraphWidget(title=title, left=metrics, width=8, height=6)
