"""The no-code gateway constructs (infra/metering.py): asserted on the synthesized example app
(examples/metered-api: Meterline plus an HTTP API with EntitlementAuthorizer and ApiMetering, cdk-nag on,
synthesized as `cdk synth` does), on a REST API variant, and on what they refuse at synth time."""

from __future__ import annotations

import importlib.util
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from infra.metering import ACCESS_LOG_METERING, ENTITLEMENT_AUTHORIZER
from meterline.domain.access_logs import ACCESS_LOG_METERING_ENV, AccessLogMeteringConfig, ApiKind, access_log_format
from meterline.domain.entitlement_gate import ENTITLEMENT_GATE_ENV, EntitlementGateConfig
from meterline.storage.tables import ALL_TABLES
from tests.infra.synth import REPO_ROOT, Synthesized, cdk_json_context, shared_synth

EXAMPLE_DIR = REPO_ROOT / "examples" / "metered-api"
LOG_ACTIONS = {"logs:CreateLogStream", "logs:PutLogEvents"}
READ = {"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query"}


def example_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("metered_api_app", EXAMPLE_DIR / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def example(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return shared_synth(tmp_path_factory, "metered-api", build=example_module().build_app)


def resource_id(synth: Synthesized, path: str) -> str:
    """Logical id of the resource of the construct at `path` under the stack (e.g. `Metering/AccessLogs`)."""
    full = f"{synth.stack_name}/{path}"
    found = [k for k, r in synth.data["Resources"].items()
             if r.get("Metadata", {}).get("aws:cdk:path") in (full, f"{full}/Resource")]
    assert len(found) == 1, f"{path}: {found}"
    return found[0]


def properties(synth: Synthesized, path: str) -> dict[str, Any]:
    return synth.data["Resources"][resource_id(synth, path)]["Properties"]


def policy_statements(synth: Synthesized, function_path: str) -> list[dict[str, Any]]:
    """Every statement of the policies of the function's role, with actions as sets."""
    role = properties(synth, function_path)["Role"]["Fn::GetAtt"][0]
    assert set(synth.data["Resources"][role]["Properties"]) == {"AssumeRolePolicyDocument", "Description"}
    return [{**statement, "Action": set(statement["Action"] if isinstance(statement["Action"], list)
                                         else [statement["Action"]])}
            for policy in synth.resources("AWS::IAM::Policy").values() if {"Ref": role} in policy["Properties"]["Roles"]
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]]


def table_arn(synth: Synthesized, logical_name: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [resource_id(synth, f"Meterline/Storage/{logical_name}"), "Arn"]}


def code_of(synth: Synthesized, function: dict[str, Any]) -> Path:
    """The staged asset folder of a function's code."""
    assets = json.loads(next(synth.outdir.glob("*.assets.json")).read_text())["files"]
    return synth.outdir / assets[function["Code"]["S3Key"].split(".")[0]]["source"]["path"]


def table_env(env: dict[str, Any]) -> set[str]:
    return {name for name in env if name in {spec.env_var for spec in ALL_TABLES}}


# Ids of constructs the refusal tests leave half-built in the shared stack.
CONSTRUCT_NUMBERS = itertools.count()

METERING_FUNCTION = "Metering/AccessLogMetering/Function"
AUTHORIZER_FUNCTION = "Entitlements/Authorizer/Function"


# --- the example app ----------------------------------------------------------------------------------

def test_the_example_passes_cdk_nag_acknowledging_only_the_runtime_pin_and_the_failure_queue(
        example: Synthesized) -> None:
    report = json.loads((example.outdir / "validation-report.json").read_text())
    (nag,) = [r for r in report["pluginReports"] if r["pluginName"] == "AwsSolutions"]
    assert nag["conclusion"] == "success" and nag["violations"] == []
    outside_meterline = {(v["ruleName"], c["constructPath"].removeprefix(f"{example.stack_name}/"))
                         for v in nag["suppressedViolations"] for c in v["violatingConstructs"]
                         if not c["constructPath"].startswith(f"{example.stack_name}/Meterline/")}
    assert outside_meterline == {
        ("AwsSolutions-L1", f"{METERING_FUNCTION}/Resource"),
        ("AwsSolutions-L1", f"{AUTHORIZER_FUNCTION}/Resource"),
        ("AwsSolutions-SQS3", "Metering/FailureQueue/Resource"),
    }


def test_the_example_has_no_cfn_lint_errors(example: Synthesized) -> None:
    from cfnlint.api import ManualArgs, lint

    template = next(example.outdir.glob("*.template.json")).read_text()
    matches = lint(template, config=ManualArgs(regions=["us-east-1"]))
    assert [f"{m.rule.id} {m.message}" for m in matches if m.rule.id.startswith("E")] == []
    assert {m.rule.id for m in matches} <= {"W3005"}


def test_the_example_runs_with_the_repositorys_cdk_settings() -> None:
    settings = json.loads((EXAMPLE_DIR / "cdk.json").read_text())
    assert settings["app"] == "../../.venv/bin/python app.py"
    assert settings["context"] == cdk_json_context()  # the same feature flags as Meterline's own app


def test_the_example_outputs_both_urls_and_the_tables_operator_commands_read(example: Synthesized) -> None:
    # `meterline keys --stack MeteredApi-dev` finds the catalog through the <Table>TableName outputs
    assert set(example.data["Outputs"]) == {"ApiUrl", "MeterlineUrl", *(f"{s.logical_name}TableName"
                                                                          for s in ALL_TABLES)}


# --- ApiMetering on an HTTP API -----------------------------------------------------------------------

def test_the_stage_logs_each_request_as_a_json_line_into_the_metering_log_group(example: Synthesized) -> None:
    settings = properties(example, "Api/DefaultStage")["AccessLogSettings"]
    log_group = resource_id(example, "Metering/AccessLogs")
    assert settings["DestinationArn"] == {"Fn::GetAtt": [log_group, "Arn"]}
    line = json.loads(settings["Format"])
    assert line == access_log_format(ApiKind.HTTP, "$context.authorizer.subject")
    assert {"$context.requestId", "$context.requestTimeEpoch", "$context.httpMethod", "$context.routeKey",
            "$context.status", "$context.authorizer.subject"} <= set(line.values())
    assert example.data["Resources"][log_group]["Properties"]["RetentionInDays"] == 30


def test_the_metering_function_is_subscribed_to_every_line_of_the_access_logs(example: Synthesized) -> None:
    log_group = resource_id(example, "Metering/AccessLogs")
    function = resource_id(example, METERING_FUNCTION)
    (subscription,) = example.resources("AWS::Logs::SubscriptionFilter").values()
    assert subscription["Properties"] == {"LogGroupName": {"Ref": log_group}, "FilterPattern": "",
                                          "DestinationArn": {"Fn::GetAtt": [function, "Arn"]}}
    (permission,) = [p["Properties"] for p in example.resources("AWS::Lambda::Permission").values()
                     if p["Properties"]["Principal"] == "logs.amazonaws.com"]
    assert permission["FunctionName"] == {"Fn::GetAtt": [function, "Arn"]}
    assert permission["SourceArn"] == {"Fn::GetAtt": [log_group, "Arn"]}


def test_the_metering_function_knows_its_meters_and_only_the_events_table(example: Synthesized) -> None:
    function = properties(example, METERING_FUNCTION)
    env = function["Environment"]["Variables"]
    config = AccessLogMeteringConfig.model_validate_json(env[ACCESS_LOG_METERING_ENV])
    assert config.model_dump(by_alias=True) == {"namespace": "default", "meters": [{"type": "request", "data": {}}],
                                                "meterOnStatusCodes": "200-299", "eventSource": "api-gateway"}
    assert table_env(env) == {"EVENTS_TABLE"}
    assert (function["Runtime"], function["Architectures"], function["Timeout"]) == ("python3.12", ["arm64"], 60)
    assert (code_of(example, function) / "handler.py").read_text() == (
        REPO_ROOT / "functions" / ACCESS_LOG_METERING / "handler.py").read_text()


def test_the_metering_function_may_only_store_events_and_send_failed_batches_to_its_queue(
        example: Synthesized) -> None:
    queue = resource_id(example, "Metering/FailureQueue")
    statements = policy_statements(example, METERING_FUNCTION)
    assert {frozenset(s["Action"]): json.dumps(s["Resource"], sort_keys=True) for s in statements} == {
        frozenset(LOG_ACTIONS): json.dumps({"Fn::GetAtt": [resource_id(example, "Metering/AccessLogMetering/Logs"),
                                                           "Arn"]}),
        frozenset({"dynamodb:PutItem", "dynamodb:BatchWriteItem"}): json.dumps(table_arn(example, "Events"),
                                                                               sort_keys=True),
        frozenset({"sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"}):
            json.dumps({"Fn::GetAtt": [queue, "Arn"]}),
    }
    (invoke,) = [c for c in example.resources("AWS::Lambda::EventInvokeConfig").values()
                 if c["Properties"]["FunctionName"] == {"Ref": resource_id(example, METERING_FUNCTION)}]
    assert invoke["Properties"]["MaximumRetryAttempts"] == 2
    assert invoke["Properties"]["MaximumEventAgeInSeconds"] == 6 * 3600
    assert invoke["Properties"]["DestinationConfig"] == {"OnFailure": {"Destination": {"Fn::GetAtt": [queue, "Arn"]}}}
    queue_props = example.data["Resources"][queue]["Properties"]
    assert queue_props["MessageRetentionPeriod"] == 14 * 24 * 3600 and queue_props["SqsManagedSseEnabled"] is True


def test_failed_batches_and_function_errors_alarm_on_meterlines_topic(example: Synthesized) -> None:
    topic = {"Ref": resource_id(example, "Meterline/Monitoring/AlarmTopic")}
    for path, metric in (("Metering/FailedBatches", "ApproximateNumberOfMessagesVisible"),
                         ("Metering/MeteringErrors", "Errors"), ("Entitlements/AuthorizerErrors", "Errors")):
        alarm = properties(example, path)
        assert alarm["MetricName"] == metric and alarm["AlarmActions"] == [topic], path
        assert alarm["Threshold"] == 1 and alarm["TreatMissingData"] == "notBreaching"


# --- EntitlementAuthorizer on an HTTP API -------------------------------------------------------------

def test_the_route_is_guarded_by_the_entitlement_authorizer_cached_30_s_per_subject(example: Synthesized) -> None:
    function = resource_id(example, AUTHORIZER_FUNCTION)
    (authorizer_id, authorizer), = [(k, r) for k, r in example.resources("AWS::ApiGatewayV2::Authorizer").items()
                                    if function in json.dumps(r["Properties"]["AuthorizerUri"])]
    props = authorizer["Properties"]
    assert (props["AuthorizerType"], props["AuthorizerPayloadFormatVersion"], props["EnableSimpleResponses"]) == (
        "REQUEST", "2.0", True)
    assert props["IdentitySource"] == ["$request.header.X-Customer-Id"]
    assert props["AuthorizerResultTtlInSeconds"] == 30
    (route,) = [r["Properties"] for r in example.resources("AWS::ApiGatewayV2::Route").values()
                if r["Properties"]["RouteKey"] == "GET /hello"]
    assert (route["AuthorizationType"], route["AuthorizerId"]) == ("CUSTOM", {"Ref": authorizer_id})


def test_the_authorizer_may_only_read_the_catalog_and_usage_tables(example: Synthesized) -> None:
    statements = policy_statements(example, AUTHORIZER_FUNCTION)
    dynamodb = [s for s in statements if any(a.startswith("dynamodb:") for a in s["Action"])]
    assert [s["Action"] for s in dynamodb] == [READ]
    assert sorted(map(json.dumps, dynamodb[0]["Resource"])) == sorted(
        json.dumps(table_arn(example, name)) for name in ("Catalog", "Usage"))
    assert all(s["Action"] <= LOG_ACTIONS for s in statements if s not in dynamodb)
    env = properties(example, AUTHORIZER_FUNCTION)["Environment"]["Variables"]
    assert table_env(env) == {"CATALOG_TABLE", "USAGE_TABLE"}
    assert EntitlementGateConfig.model_validate_json(env[ENTITLEMENT_GATE_ENV]).model_dump(by_alias=True) == {
        "namespace": "default", "requiredEntitlements": ["api_calls"], "subjectSource": "$request.header.X-Customer-Id"}
    function = properties(example, AUTHORIZER_FUNCTION)
    assert function["Timeout"] == 10
    assert (code_of(example, function) / "handler.py").read_text() == (
        REPO_ROOT / "functions" / ENTITLEMENT_AUTHORIZER / "handler.py").read_text()


# --- a REST API, and mistakes refused at synth time -----------------------------------------------------

@pytest.fixture(scope="module")
def meterline_stack() -> Iterator[tuple[Any, Any]]:
    """A stack with a Meterline construct to put the constructs beside (not synthesized by itself)."""
    import aws_cdk as cdk

    from infra.config import BUNDLE_DEPENDENCIES_CONTEXT
    from infra.construct import Meterline

    app = cdk.App(context={**cdk_json_context(), BUNDLE_DEPENDENCIES_CONTEXT: False})
    stack = cdk.Stack(app, "Gateway")
    yield stack, Meterline(stack, "Meterline")


def test_a_rest_api_stage_is_metered_and_guarded_the_same_way(meterline_stack: tuple[Any, Any]) -> None:
    from aws_cdk import aws_apigateway as apigw
    from aws_cdk.assertions import Template

    from infra.metering import ApiMetering, EntitlementAuthorizer

    stack, meterline = meterline_stack
    api = apigw.RestApi(stack, "RestApi")
    gate = EntitlementAuthorizer(stack, "RestGate", meterline=meterline, required_entitlements=["api_calls", "beta"],
                                 subject="$request.querystring.customer")
    api.root.add_resource("items").add_resource("{id}").add_method(
        "GET", apigw.MockIntegration(), authorizer=gate.rest_authorizer)
    ApiMetering(stack, "RestMetering", meterline=meterline, stage=api.deployment_stage,
                meters=[{"type": "request"}, {"type": "api-call", "data": {"weight": 2}}],
                subject="$context.authorizer.subject", meter_on_status_codes="200-299,304")
    template = Template.from_stack(stack).to_json()

    def only(kind: str) -> dict[str, Any]:
        (found,) = [r["Properties"] for r in template["Resources"].values() if r["Type"] == kind]
        return found

    stage = only("AWS::ApiGateway::Stage")
    assert json.loads(stage["AccessLogSetting"]["Format"]) == access_log_format(ApiKind.REST,
                                                                               "$context.authorizer.subject")
    assert "$context.resourcePath" in stage["AccessLogSetting"]["Format"]
    authorizer = only("AWS::ApiGateway::Authorizer")
    assert (authorizer["Type"], authorizer["IdentitySource"], authorizer["AuthorizerResultTtlInSeconds"]) == (
        "REQUEST", "method.request.querystring.customer", 30)
    assert only("AWS::ApiGateway::Method")["AuthorizationType"] == "CUSTOM"
    (metering,) = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::Function"
                   and ACCESS_LOG_METERING_ENV in r["Properties"]["Environment"]["Variables"]]
    config = AccessLogMeteringConfig.model_validate_json(metering["Environment"]["Variables"][ACCESS_LOG_METERING_ENV])
    assert [meter.type for meter in config.meters] == ["request", "api-call"] and 304 in config.status_codes


@pytest.mark.parametrize(("what", "arguments", "error"), [
    ("subject not a $context variable", {"subject": "$request.header.sub"}, "must be a \\$context variable"),
    ("status codes", {"meter_on_status_codes": "2xx"}, "'2xx' is not a status code"),
    ("a range upside down", {"meter_on_status_codes": "299-200"}, "the lower one first"),
    ("two meters of one type", {"meters": [{"type": "request"}, {"type": "request"}]}, "a type of its own"),
    ("no meter", {"meters": []}, "at least 1 item"),
    ("a namespace", {"namespace": "Not A Namespace"}, "namespace"),
])
def test_api_metering_refuses_mistakes_at_synth(meterline_stack: tuple[Any, Any], what: str,
                                                arguments: dict[str, Any], error: str) -> None:
    from aws_cdk import aws_apigatewayv2 as apigwv2

    from infra.metering import ApiMetering

    stack, meterline = meterline_stack
    number = next(CONSTRUCT_NUMBERS)
    stage = apigwv2.HttpApi(stack, f"Api{number}").default_stage
    assert stage is not None
    given = {"meters": [{"type": "request"}], "subject": "$context.authorizer.claims.sub", **arguments}
    with pytest.raises(ValueError, match=error):
        ApiMetering(stack, f"Metering{number}", meterline=meterline, stage=stage, **given)


def test_api_metering_refuses_a_stage_that_logs_access_already_and_anything_not_a_stage(
        meterline_stack: tuple[Any, Any]) -> None:
    from aws_cdk import aws_logs as logs

    from infra.metering import ApiMetering

    stack, meterline = meterline_stack
    meters = [{"type": "request"}]
    with pytest.raises(ValueError, match="already logs access"):
        ApiMetering(stack, "Twice", meterline=meterline, stage=meterline.api.stage, meters=meters,
                    subject="$context.authorizer.subject")
    with pytest.raises(TypeError, match="is not an API Gateway stage"):
        ApiMetering(stack, "NotAStage", meterline=meterline,
                    stage=logs.LogGroup(stack, "SomeLogGroup"),  # type: ignore[arg-type]  # a mistake on purpose
                    meters=meters, subject="$context.authorizer.subject")


@pytest.mark.parametrize(("arguments", "error"), [
    ({"cache_ttl_seconds": 61}, "cache_ttl must be at most 60"),
    ({"subject": "$context.authorizer.claims.sub"}, "must be \\$request.header"),
    ({"required_entitlements": ["Not A Key"]}, "String should match pattern"),
    ({"required_entitlements": []}, "at least 1 item"),
])
def test_the_entitlement_authorizer_refuses_mistakes_at_synth(meterline_stack: tuple[Any, Any],
                                                              arguments: dict[str, Any], error: str) -> None:
    from aws_cdk import Duration

    from infra.metering import EntitlementAuthorizer

    stack, meterline = meterline_stack
    given: dict[str, Any] = {"required_entitlements": ["api_calls"], "subject": "$request.header.X-Customer-Id",
                             **arguments}
    if "cache_ttl_seconds" in given:
        given["cache_ttl"] = Duration.seconds(given.pop("cache_ttl_seconds"))
    with pytest.raises(ValueError, match=error):
        EntitlementAuthorizer(stack, f"Gate{next(CONSTRUCT_NUMBERS)}", meterline=meterline, **given)
