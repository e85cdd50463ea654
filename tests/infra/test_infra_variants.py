"""A production stage with every option set from context, and the validation of the props."""

from __future__ import annotations

from typing import Any

import pytest

from infra.config import MeterlineProps
from tests.infra.synth import Synthesized, shared_synth

AUTHORIZER_ARN = "arn:aws:lambda:us-east-1:123456789012:function:meterline-api-keys"
CERTIFICATE_ARN = "arn:aws:acm:us-east-1:123456789012:certificate/11111111-2222-3333-4444-555555555555"
CONTEXT = {
    "stage": "prod",
    "retentionDays": "730",
    "minuteRetentionDays": "14",
    "quarterRetentionDays": "90",
    "logLevel": "warning",
    "logRetentionDays": "365",
    "alarmEmail": "ops@example.com",
    "domainName": "meter.example.com",
    "certificateArn": CERTIFICATE_ARN,
    "auth": "lambda",
    "authorizerFunctionArn": AUTHORIZER_ARN,
    "streamBatchSize": "250",
    "ingestReservedConcurrency": "50",
    "processorReservedConcurrency": "4",
    "queueMaxConcurrency": "10",
    "streamBatchingWindowSeconds": "1",
    "streamMaxRecordAgeSeconds": "43200",
    "corsAllowOrigins": "https://app.example.com, https://admin.example.com",
    "exportSettleSeconds": "120",
    "webhookMaxAttempts": "5",
    "webhookBackoffBaseSeconds": "10",
    "webhookBackoffMaxSeconds": "600",
}


@pytest.fixture(scope="module")
def prod(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    # Synthesizing at all means cdk-nag passed (no route without an authorizer: APIG4).
    return shared_synth(tmp_path_factory, "prod", **CONTEXT)


def test_production_data_is_retained_and_protected(prod: Synthesized) -> None:
    assert prod.stack_name == "Meterline-prod"
    for table in prod.resources("AWS::DynamoDB::Table").values():
        assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"
        assert table["Properties"]["DeletionProtectionEnabled"] is True
    for log_group in prod.resources("AWS::Logs::LogGroup").values():
        assert log_group["DeletionPolicy"] == "Retain"
        assert log_group["Properties"]["RetentionInDays"] == 365


def test_context_reaches_functions_and_stream_mapping(prod: Synthesized) -> None:
    for function in prod.resources("AWS::Lambda::Function").values():
        props = function["Properties"]
        assert props["Environment"]["Variables"]["POWERTOOLS_LOG_LEVEL"] == "WARNING"
        assert props["Environment"]["Variables"]["METERLINE_RETENTION_DAYS"] == "730"
        assert props["Environment"]["Variables"]["METERLINE_MINUTE_RETENTION_DAYS"] == "14"
        assert props["Environment"]["Variables"]["METERLINE_QUARTER_RETENTION_DAYS"] == "90"
        assert props["LoggingConfig"]["ApplicationLogLevel"] == "WARN"
    prod.template.has_resource_properties("AWS::Lambda::EventSourceMapping", {
        "BatchSize": 250, "MaximumBatchingWindowInSeconds": 1, "MaximumRetryAttempts": -1,
        "MaximumRecordAgeInSeconds": 43_200, "ParallelizationFactor": 1, "BisectBatchOnFunctionError": True,
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
    })
    prod.template.has_resource_properties("AWS::ApiGatewayV2::Api", {
        "CorsConfiguration": {"AllowOrigins": ["https://app.example.com", "https://admin.example.com"]},
    })
    sender = prod.data["Resources"][prod.logical_id("Exports/Sender/Function")]
    assert {k: v for k, v in sender["Properties"]["Environment"]["Variables"].items()
            if k.startswith("METERLINE_WEBHOOK_")} == {
        "METERLINE_WEBHOOK_MAX_ATTEMPTS": "5", "METERLINE_WEBHOOK_BACKOFF_BASE_SECONDS": "10",
        "METERLINE_WEBHOOK_BACKOFF_MAX_SECONDS": "600", "METERLINE_WEBHOOK_TIMEOUT_SECONDS": "10",
        "METERLINE_WEBHOOK_ALLOW_LOOPBACK": "false",
    }
    for path in ("Api/Reports/Function", "Exports/Exporter/Function"):
        env = prod.data["Resources"][prod.logical_id(path)]["Properties"]["Environment"]["Variables"]
        assert env["METERLINE_EXPORT_SETTLE_SECONDS"] == "120"
    (key,) = prod.resources("AWS::KMS::Key").values()
    assert key["DeletionPolicy"] == "Retain"  # the signing secrets of retained reports stay readable


def test_the_stream_failure_queue_is_retained_in_production(prod: Synthesized) -> None:
    # A batch given up on is recorded only there: it outlives a destroyed stack, like the tables.
    failure_queue = prod.logical_id("Processing/FailureQueue")
    queue = prod.data["Resources"][failure_queue]
    assert queue["DeletionPolicy"] == queue["UpdateReplacePolicy"] == "Retain"
    assert queue["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    prod.template.has_resource_properties("AWS::Lambda::EventSourceMapping", {
        "DestinationConfig": {"OnFailure": {"Destination": {"Fn::GetAtt": [failure_queue, "Arn"]}}},
    })


def test_concurrency_settings_reach_the_functions_and_queue_sources(prod: Synthesized) -> None:
    ingest = prod.data["Resources"][prod.logical_id("Api/Ingest/Function")]["Properties"]
    processor = prod.data["Resources"][prod.logical_id("Processing/Processor/Function")]["Properties"]
    assert (ingest["ReservedConcurrentExecutions"], processor["ReservedConcurrentExecutions"]) == (50, 4)
    replay = {"Ref": prod.logical_id("Processing/Replay/Function")}
    sqs_sources = [m for m in prod.resources("AWS::Lambda::EventSourceMapping").values()
                   if "ScalingConfig" in m["Properties"] and m["Properties"]["FunctionName"] != replay]
    assert [m["Properties"]["ScalingConfig"] for m in sqs_sources] == [{"MaximumConcurrency": 10}] * 3


def test_the_authorizer_seam_guards_every_route(prod: Synthesized) -> None:
    (authorizer_id,) = prod.resources("AWS::ApiGatewayV2::Authorizer")
    prod.template.has_resource_properties("AWS::ApiGatewayV2::Authorizer", {
        "AuthorizerType": "REQUEST",
        "AuthorizerPayloadFormatVersion": "2.0",
        "EnableSimpleResponses": True,  # its context lands in requestContext.authorizer.lambda
        "IdentitySource": ["$request.header.Authorization"],
    })
    for route in prod.resources("AWS::ApiGatewayV2::Route").values():
        assert route["Properties"]["AuthorizationType"] == "CUSTOM"
        assert route["Properties"]["AuthorizerId"] == {"Ref": authorizer_id}
    prod.template.has_resource_properties("AWS::Lambda::Permission", {
        "Action": "lambda:InvokeFunction", "FunctionName": AUTHORIZER_ARN, "Principal": "apigateway.amazonaws.com",
    })


def test_custom_domain_alarm_email_and_outputs(prod: Synthesized) -> None:
    prod.template.has_resource_properties("AWS::ApiGatewayV2::DomainName", {
        "DomainName": "meter.example.com",
        "DomainNameConfigurations": [{"CertificateArn": CERTIFICATE_ARN, "EndpointType": "REGIONAL",
                                      "SecurityPolicy": "TLS_1_2"}],
    })
    prod.template.resource_count_is("AWS::ApiGatewayV2::ApiMapping", 1)
    prod.template.has_resource_properties("AWS::SNS::Subscription", {
        "Protocol": "email", "Endpoint": "ops@example.com",
    })
    outputs = prod.data["Outputs"]
    assert outputs["CustomDomainUrl"]["Value"] == "https://meter.example.com/"
    assert {"ApiUrl", "CustomDomainTarget"} <= set(outputs)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"stage": "Prod!"}, "stage"),
        ({"retention_days": 0}, "retentionDays"),
        ({"minute_retention_days": 1}, "minuteRetentionDays"),
        ({"quarter_retention_days": 500}, "quarterRetentionDays"),
        ({"minute_retention_days": 30, "quarter_retention_days": 7}, "must not exceed"),
        ({"log_level": "TRACE"}, "logLevel"),
        ({"log_retention_days": 10}, "logRetentionDays"),
        ({"alarm_email": "nobody"}, "alarmEmail"),
        ({"domain_name": "meter.example.com"}, "domainName and certificateArn"),
        ({"stream_batch_size": 0}, "streamBatchSize"),
        ({"stream_batching_window_seconds": 301}, "streamBatchingWindowSeconds"),
        ({"stream_retry_attempts": -2}, "streamRetryAttempts"),
        ({"stream_retry_attempts": 10_001}, "streamRetryAttempts"),
        ({"stream_max_record_age_seconds": 59}, "streamMaxRecordAgeSeconds"),
        ({"stream_max_record_age_seconds": 604_801}, "streamMaxRecordAgeSeconds"),
        ({"default_namespace": "Not Valid"}, "defaultNamespace"),
        ({"auth": "lambda", "authorizer_function_arn": "my-function"}, "authorizerFunctionArn"),
        ({"auth": "basic"}, "auth must be one of"),
        ({"auth": "lambda"}, "auth=lambda needs authorizerFunctionArn"),
        ({"authorizer_function_arn": AUTHORIZER_ARN}, "with auth=lambda only"),
        ({"auth": "jwt", "jwt_issuer": "https://issuer.example.com"}, "jwtIssuer and jwtAudience"),
        ({"jwt_issuer": "https://issuer.example.com"}, "with auth=jwt only"),
        ({"stage": "prod", "auth": "none"}, "without authentication"),
        ({"management_throttle_rate_limit": 501}, "managementThrottleRateLimit"),
        ({"ingest_reserved_concurrency": 0}, "ingestReservedConcurrency"),
        ({"queue_max_concurrency": 1}, "queueMaxConcurrency"),
        ({"stage": "staging", "auth": "none"}, "allowUnauthenticated"),
        ({"export_settle_seconds": 0}, "exportSettleSeconds"),
        ({"webhook_max_attempts": 0}, "webhookMaxAttempts"),
        ({"webhook_backoff_max_seconds": 901}, "900"),
        ({"webhook_backoff_base_seconds": 60, "webhook_backoff_max_seconds": 30}, "base <= max"),
    ],
)
def test_invalid_props_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MeterlineProps(**changes)


def test_stream_retries_default_to_until_the_record_age_limit() -> None:
    props = MeterlineProps()
    assert (props.stream_retry_attempts, props.stream_max_record_age_seconds) == (-1, 72_000)
    assert MeterlineProps(stream_retry_attempts=0, stream_max_record_age_seconds=60).stream_retry_attempts == 0
    assert MeterlineProps(stream_max_record_age_seconds=604_800).stream_max_record_age_seconds == 604_800


def test_every_stage_but_dev_is_production() -> None:
    assert MeterlineProps(stage="prod").production
    assert MeterlineProps(stage="staging").production
    assert not MeterlineProps().production
    assert MeterlineProps(stage="dev", auth="none").auth == "none"
    assert MeterlineProps(stage="staging", auth="none", allow_unauthenticated=True).production


def test_a_stage_other_than_dev_without_an_authorizer_does_not_synthesize(tmp_path: Any) -> None:
    from tests.infra.synth import synthesize

    with pytest.raises(ValueError, match="allowUnauthenticated"):
        synthesize(tmp_path / "open", stage="staging", auth="none")


def test_an_explicitly_open_stage_acknowledges_apig4(tmp_path_factory: pytest.TempPathFactory) -> None:
    open_stage = shared_synth(tmp_path_factory, "open", stage="demo", auth="none", allowUnauthenticated="true")
    for route in open_stage.resources("AWS::ApiGatewayV2::Route").values():
        assert route["Properties"]["AuthorizationType"] == "NONE"
    open_stage.template.resource_count_is("AWS::ApiGatewayV2::Authorizer", 0)
    for function in open_stage.resources("AWS::Lambda::Function").values():
        assert function["Properties"]["Environment"]["Variables"]["METERLINE_AUTH"] == "none"


def test_jwt_auth_puts_a_jwt_authorizer_on_every_route(tmp_path_factory: pytest.TempPathFactory) -> None:
    jwt = shared_synth(tmp_path_factory, "jwt", stage="jwt", auth="jwt", jwtIssuer="https://issuer.example.com",
                       jwtAudience="meterline", jwtNamespaceClaim="custom:tenant")
    (authorizer_id,) = jwt.resources("AWS::ApiGatewayV2::Authorizer")
    jwt.template.has_resource_properties("AWS::ApiGatewayV2::Authorizer", {
        "AuthorizerType": "JWT",
        "JwtConfiguration": {"Issuer": "https://issuer.example.com", "Audience": ["meterline"]},
    })
    for route in jwt.resources("AWS::ApiGatewayV2::Route").values():
        assert route["Properties"]["AuthorizationType"] == "JWT"
        assert route["Properties"]["AuthorizerId"] == {"Ref": authorizer_id}
    ingest = jwt.data["Resources"][jwt.logical_id("Api/Ingest/Function")]["Properties"]["Environment"]["Variables"]
    assert (ingest["METERLINE_AUTH"], ingest["METERLINE_JWT_NAMESPACE_CLAIM"]) == ("jwt", "custom:tenant")
