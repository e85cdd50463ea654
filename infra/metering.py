"""Metering and guarding any API Gateway API with a deployed Meterline, without touching the API's code.

- `ApiMetering` turns on a stage's access logging as JSON (meterline.domain.access_logs) and subscribes
  a Meterline function to that log group: every request answered with a metered status becomes one usage
  event per meter, whatever the API's integrations are (Lambda, HTTP proxy, AWS service).
- `EntitlementAuthorizer` is a Lambda authorizer for HTTP and REST APIs that lets a request through only
  if its subject has access to every required feature, reading entitlements straight from Meterline's
  tables with the engine that answers entitlement values.

    meterline = Meterline(stack, "Meterline")
    gate = EntitlementAuthorizer(stack, "Gate", meterline=meterline, required_entitlements=["api_calls"],
                                 subject="$request.header.X-Customer-Id")
    api.add_routes(path="/items", methods=[HttpMethod.GET], integration=..., authorizer=gate.http_authorizer)
    ApiMetering(stack, "Metering", meterline=meterline, stage=api.default_stage, meters=[{"type": "request"}],
                subject="$context.authorizer.subject")

Both run beside the Meterline construct (they take it as `meterline=`), so Meterline's own stack is the
same with or without them. They are not exported from `infra/__init__.py`: importing `infra` must not
import aws_cdk (infra/app.py sets jsii's environment first).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from aws_cdk import Duration
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_logs as logs
from aws_cdk import aws_logs_destinations as logs_destinations
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra import nag
from infra.lambdas import MeterlineFunction, removal_policy
from meterline.domain.access_logs import (
    ACCESS_LOG_METERING_ENV,
    DEFAULT_EVENT_SOURCE,
    DEFAULT_STATUS_CODES,
    AccessLogMeteringConfig,
    ApiKind,
    access_log_format,
)
from meterline.domain.entitlement_gate import ENTITLEMENT_GATE_ENV, EntitlementGateConfig

if TYPE_CHECKING:
    from infra.construct import Meterline

ACCESS_LOG_METERING = "access_log_metering"  # functions/access_log_metering
ENTITLEMENT_AUTHORIZER = "entitlement_authorizer"  # functions/entitlement_authorizer

# How long API Gateway reuses an authorizer's answer for a subject: a subject whose balance runs out
# keeps access at most this long. Entitlements should bite within a minute, so no more than that.
DEFAULT_AUTHORIZER_CACHE = Duration.seconds(30)
MAX_AUTHORIZER_CACHE = Duration.seconds(60)

# CloudWatch Logs invokes the metering function asynchronously: Lambda tries a failed batch twice more
# within this time, then sends it to the failure queue (from which it can be replayed: ids make that safe).
ASYNC_RETRY_ATTEMPTS = 2
ASYNC_MAX_EVENT_AGE = Duration.hours(6)


class ApiMetering(Construct):
    """Meters every request of `stage` whose status is in `meter_on_status_codes`: one event per meter
    ({"type": ..., "data": {...}}), of the subject at the $context variable `subject`, in `namespace`
    (Meterline's default namespace unless given). The event's data is the meter's data plus the request's
    `method`, `route` (the template), `status` and `duration_seconds`; its id is the request id.

    The stage must not log access already: its access logging becomes this construct's. A REST API stage
    also needs API Gateway's account-level CloudWatch Logs role, as any REST access logging does.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        meterline: Meterline,
        stage: apigwv2.IHttpStage | apigw.IStage,
        meters: Sequence[Mapping[str, Any]],
        subject: str,
        meter_on_status_codes: str = DEFAULT_STATUS_CODES,
        event_source: str = DEFAULT_EVENT_SOURCE,
        namespace: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        props = meterline.props
        # Validated here, so a mistake fails the synth rather than the function.
        self.config = AccessLogMeteringConfig(namespace=namespace or props.default_namespace,
                                              meters=[dict(meter) for meter in meters],
                                              meter_on_status_codes=meter_on_status_codes, event_source=event_source)
        kind, cfn_stage = _stage_resource(stage)
        log_format = json.dumps(access_log_format(kind, subject), separators=(",", ":"))

        self.log_group = logs.LogGroup(self, "AccessLogs", retention=props.log_retention,
                                       removal_policy=removal_policy(props))
        if isinstance(cfn_stage, apigwv2.CfnStage):
            destination = apigwv2.LogGroupLogDestination(self.log_group).bind(cast(apigwv2.IHttpStage, stage))
            cfn_stage.access_log_settings = apigwv2.CfnStage.AccessLogSettingsProperty(
                destination_arn=destination.destination_arn, format=log_format)
        else:
            rest_destination = apigw.LogGroupLogDestination(self.log_group).bind(cast(apigw.IStage, stage))
            cfn_stage.access_log_setting = apigw.CfnStage.AccessLogSettingProperty(
                destination_arn=rest_destination.destination_arn, format=log_format)

        self.function = MeterlineFunction(
            self, "AccessLogMetering",
            name=ACCESS_LOG_METERING,
            description="Meters the requests of an API Gateway stage from its access logs",
            props=props, layers=meterline.layers, tables=meterline.storage.tables,
        )
        self.function.function.add_environment(ACCESS_LOG_METERING_ENV, self.config.model_dump_json(by_alias=True))
        # Batches Lambda gave up on: the only trace of requests not yet metered, kept SQS's maximum 14 days.
        self.failure_queue = sqs.Queue(
            self, "FailureQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
            removal_policy=removal_policy(props),
        )
        self.function.function.configure_async_invoke(
            on_failure=destinations.SqsDestination(self.failure_queue),
            retry_attempts=ASYNC_RETRY_ATTEMPTS,
            max_event_age=ASYNC_MAX_EVENT_AGE,
        )
        self.subscription = logs.SubscriptionFilter(
            self, "Subscription",
            log_group=self.log_group,
            destination=logs_destinations.LambdaDestination(self.function.function),
            # every line: the function decides what is metered, and logs what it skips
            filter_pattern=logs.FilterPattern.all_events(),
        )

        _alarm(self, "FailedBatches", meterline,
               self.failure_queue.metric_approximate_number_of_messages_visible(period=_PERIOD, statistic="Maximum"),
               "Access log batches could not be metered: requests are missing from usage until the batches in "
               "the failure queue are replayed")
        _alarm(self, "MeteringErrors", meterline, _errors(self.function.function),
               "The access-log metering function failed (it is retried; see its failure queue)")
        nag.acknowledge_gateway(self.function, self.failure_queue)


class EntitlementAuthorizer(Construct):
    """A Lambda authorizer that denies a request unless its subject has access to every feature of
    `required_entitlements` (feature keys), in `namespace` (Meterline's default unless given).

    `subject` names where a request carries its subject, as an HTTP API identity source:
    `$request.header.<name>` or `$request.querystring.<name>`. The authorizer checks entitlements, not
    identity: the subject must come from something callers cannot forge (a header set by your edge or
    proxy after it authenticated them). Answers are cached per subject for `cache_ttl` (at most 60 s).

    Use `http_authorizer` on HTTP API routes and `rest_authorizer` on REST API methods; both pass the
    subject on as `$context.authorizer.subject` (for `ApiMetering` and the integrations). One API each.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        meterline: Meterline,
        required_entitlements: Sequence[str],
        subject: str,
        cache_ttl: Duration = DEFAULT_AUTHORIZER_CACHE,
        namespace: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        if not 0 <= cache_ttl.to_seconds() <= MAX_AUTHORIZER_CACHE.to_seconds():
            raise ValueError(f"cache_ttl must be at most {MAX_AUTHORIZER_CACHE.to_seconds()} s, so that a subject "
                             "whose entitlements change is answered anew within a minute")
        props = meterline.props
        self.config = EntitlementGateConfig(namespace=namespace or props.default_namespace,
                                            required_entitlements=list(required_entitlements), subject_source=subject)
        self.cache_ttl = cache_ttl
        self.function = MeterlineFunction(
            self, "Authorizer",
            name=ENTITLEMENT_AUTHORIZER,
            description="Lets a request through only if its subject has access to the required features",
            props=props, layers=meterline.layers, tables=meterline.storage.tables,
        )
        self.function.function.add_environment(ENTITLEMENT_GATE_ENV, self.config.model_dump_json(by_alias=True))
        _alarm(self, "AuthorizerErrors", meterline, _errors(self.function.function),
               "The entitlement authorizer failed: API Gateway answers its requests 500")
        nag.acknowledge_gateway(self.function)
        self._http: authorizers.HttpLambdaAuthorizer | None = None
        self._rest: apigw.RequestAuthorizer | None = None

    @property
    def http_authorizer(self) -> authorizers.HttpLambdaAuthorizer:
        """For an HTTP API's routes (payload format 2.0, simple responses)."""
        if self._http is None:
            self._http = authorizers.HttpLambdaAuthorizer(
                f"{self.node.id}Authorizer", self.function.function,
                response_types=[authorizers.HttpLambdaResponseType.SIMPLE],
                identity_source=[self.config.subject.http_identity_source],
                results_cache_ttl=self.cache_ttl,
            )
        return self._http

    @property
    def rest_authorizer(self) -> apigw.RequestAuthorizer:
        """For a REST API's methods (a REQUEST authorizer; the answer is an IAM policy)."""
        if self._rest is None:
            self._rest = apigw.RequestAuthorizer(
                self, "RestAuthorizer",
                handler=self.function.function,
                identity_sources=[self.config.subject.rest_identity_source],
                results_cache_ttl=self.cache_ttl,
            )
        return self._rest


_PERIOD = Duration.minutes(5)


def _stage_resource(stage: apigwv2.IHttpStage | apigw.IStage) -> tuple[ApiKind, apigwv2.CfnStage | apigw.CfnStage]:
    resource = stage.node.default_child
    if isinstance(resource, apigwv2.CfnStage):
        kind, has_logs = ApiKind.HTTP, resource.access_log_settings is not None
    elif isinstance(resource, apigw.CfnStage):
        kind, has_logs = ApiKind.REST, resource.access_log_setting is not None
    else:
        raise TypeError(f"{stage.node.path} is not an API Gateway stage of this app: pass an HTTP API stage "
                        "(aws_apigatewayv2.HttpStage, e.g. http_api.default_stage) or a REST API stage "
                        "(aws_apigateway.Stage, e.g. rest_api.deployment_stage)")
    if has_logs:
        raise ValueError(f"{stage.node.path} already logs access; ApiMetering needs the stage's access log "
                         "(a JSON format of its own): remove the stage's access log settings")
    return kind, resource


def _errors(function: lambda_.IFunction) -> cloudwatch.IMetric:
    return function.metric_errors(period=_PERIOD, statistic="Sum")


def _alarm(scope: Construct, construct_id: str, meterline: Meterline, metric: cloudwatch.IMetric,
           description: str) -> None:
    """An alarm on Meterline's alarm topic, as Meterline's own (infra/monitoring.py): idle is healthy."""
    alarm = cloudwatch.Alarm(
        scope, construct_id,
        metric=metric,
        threshold=1,
        evaluation_periods=1,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        alarm_description=description,
    )
    alarm.add_alarm_action(actions.SnsAction(meterline.monitoring.topic))
