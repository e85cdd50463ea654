"""Properties of the synthesized development stack (default props), asserted on the template."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk.assertions import Match

from functions.routes import HTTP_FUNCTIONS
from infra.api import function_construct_id
from infra.lambdas import TABLE_ACCESS
from meterline.storage.tables import ALL_TABLES, EVENTS_TABLE, USAGE_TABLE
from tests.infra.synth import Synthesized

LOG_ACTIONS = {"logs:CreateLogStream", "logs:PutLogEvents"}



def _ids(dev: Synthesized) -> dict[str, str]:
    """Logical ids of the resources the tests talk about, by construct path."""
    ids = {spec.name: dev.logical_id(f"Api/{function_construct_id(spec.name)}/Function") for spec in HTTP_FUNCTIONS}
    ids["authorizer"] = dev.logical_id("Api/ApiKeyAuthorizer/Function")
    ids["processor"] = dev.logical_id("Processing/Processor/Function")
    ids["compactor"] = dev.logical_id("Processing/Compactor/Function")
    ids["compaction_schedule"] = dev.logical_id("Processing/CompactionSchedule")
    ids["backfill"] = dev.logical_id("Processing/Backfill/Function")
    ids["backfill_schedule"] = dev.logical_id("Processing/BackfillSchedule")
    ids["replay"] = dev.logical_id("Processing/Replay/Function")
    ids["exporter"] = dev.logical_id("Exports/Exporter/Function")
    ids["sender"] = dev.logical_id("Exports/Sender/Function")
    for spec in ALL_TABLES:
        ids[spec.logical_name] = dev.logical_id(f"Storage/{spec.logical_name}")
    ids["failure_queue"] = dev.logical_id("Processing/FailureQueue")
    ids["delivery_queue"] = dev.logical_id("Exports/DeliveryQueue")
    ids["delivery_dlq"] = dev.logical_id("Exports/DeliveryDeadLetterQueue")
    ids["export_queue"] = dev.logical_id("Exports/ExportQueue")
    ids["export_dlq"] = dev.logical_id("Exports/ExportDeadLetterQueue")
    ids["signing_key"] = dev.logical_id("Exports/SigningKey")
    ids["scheduler_role"] = dev.logical_id("Exports/SchedulerRole")
    ids["topic"] = dev.logical_id("Monitoring/AlarmTopic")
    ids["http_api"] = dev.logical_id("Api/HttpApi")
    ids["access_logs"] = dev.logical_id("Api/AccessLogs")
    ids["core_layer"] = dev.logical_id("Layers/Core")
    return ids


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def role_statements(dev: Synthesized, function_id: str) -> list[dict[str, Any]]:
    """Every statement of every policy attached to the function's role, actions and resources as lists."""
    role_ref = dev.data["Resources"][function_id]["Properties"]["Role"]["Fn::GetAtt"][0]
    role = dev.data["Resources"][role_ref]["Properties"]
    assert "ManagedPolicyArns" not in role and "Policies" not in role
    statements = []
    for policy in dev.resources("AWS::IAM::Policy").values():
        if {"Ref": role_ref} in policy["Properties"]["Roles"]:
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                statements.append({**statement, "Action": _as_list(statement["Action"]),
                                   "Resource": _as_list(statement["Resource"])})
    return statements


def table_actions(statements: list[dict[str, Any]]) -> dict[str, set[str]]:
    """DynamoDB actions by resource (as JSON), leaving out ListStreams (resource '*')."""
    granted: dict[str, set[str]] = {}
    for statement in statements:
        assert statement["Effect"] == "Allow"
        actions = {a for a in statement["Action"] if a.startswith("dynamodb:") and a != "dynamodb:ListStreams"}
        for resource in statement["Resource"]:
            if actions:
                granted.setdefault(json.dumps(resource, sort_keys=True), set()).update(actions)
    return granted


def arn(logical_id: str, attribute: str = "Arn") -> str:
    return json.dumps({"Fn::GetAtt": [logical_id, attribute]}, sort_keys=True)


def test_stream_event_source_mapping_settings(dev: Synthesized) -> None:
    ids = _ids(dev)
    # the stream, and three queues (exports: export requests, deliveries and the deliveries' dead letters)
    dev.template.resource_count_is("AWS::Lambda::EventSourceMapping", 5)
    dev.template.has_resource_properties("AWS::Lambda::EventSourceMapping", {
        "EventSourceArn": {"Fn::GetAtt": [ids["Events"], "StreamArn"]},
        "FunctionName": {"Ref": ids["processor"]},
        "StartingPosition": "TRIM_HORIZON",
        "BatchSize": 1000,
        "MaximumBatchingWindowInSeconds": 5,
        "BisectBatchOnFunctionError": True,
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
        # No retry count: a failing batch is retried (bisected) until its records are 20 h old, inside the
        # stream's 24 h retention; only then does its position go to the on-failure queue.
        "MaximumRetryAttempts": -1,
        "MaximumRecordAgeInSeconds": 72_000,
        "ParallelizationFactor": 1,
        "DestinationConfig": {"OnFailure": {"Destination": {"Fn::GetAtt": [ids["failure_queue"], "Arn"]}}},
        # the time index's manifests (items with timeIndex) are filtered out before batching
        "FilterCriteria": {"Filters": [
            {"Pattern": '{"dynamodb":{"NewImage":{"timeIndex":{"S":[{"exists":false}]}}}}'}]},
    })


def test_the_stream_failure_queue_keeps_messages_14_days_and_goes_with_a_dev_stack(dev: Synthesized) -> None:
    queue = dev.data["Resources"][_ids(dev)["failure_queue"]]
    assert queue["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600  # SQS's maximum
    assert queue["DeletionPolicy"] == queue["UpdateReplacePolicy"] == "Delete"


def test_ingest_role_may_only_put_items_in_the_events_table(dev: Synthesized) -> None:
    """Events by PutItem, and the time-index manifests of a request by BatchWriteItem (puts only: IAM has
    no separate action for BatchWriteItem's deletes, and the ingest code sends none)."""
    ids = _ids(dev)
    statements = role_statements(dev, ids["ingest"])
    actions = {a for s in statements for a in s["Action"]}
    assert actions == {"dynamodb:PutItem", "dynamodb:BatchWriteItem"} | LOG_ACTIONS
    assert table_actions(statements) == {arn(ids["Events"]): {"dynamodb:PutItem", "dynamodb:BatchWriteItem"}}
    for statement in statements:
        if set(statement["Action"]) & LOG_ACTIONS:
            log_group = dev.data["Resources"][ids["ingest"]]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
            assert statement["Resource"] == [{"Fn::GetAtt": [log_group, "Arn"]}]
        assert statement["Resource"] != ["*"]


def test_api_role_reads_events_and_usage_and_manages_the_catalog(dev: Synthesized) -> None:
    ids = _ids(dev)
    read = {"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query"}
    assert table_actions(role_statements(dev, ids["api"])) == {
        arn(ids["Events"]): read,
        arn(ids["Usage"]): read,
        arn(ids["Catalog"]): read | {"dynamodb:PutItem", "dynamodb:DeleteItem"},
    }


def test_processor_role_reads_the_stream_and_meters_and_writes_only_the_usage_table(dev: Synthesized) -> None:
    ids = _ids(dev)
    statements = role_statements(dev, ids["processor"])
    assert table_actions(statements) == {
        arn(ids["Usage"]): {"dynamodb:PutItem", "dynamodb:BatchWriteItem", "dynamodb:UpdateItem", "dynamodb:GetItem",
                            "dynamodb:Query"},
        arn(ids["Catalog"]): {"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query"},
        arn(ids["Events"], "StreamArn"): {"dynamodb:DescribeStream", "dynamodb:GetRecords",
                                          "dynamodb:GetShardIterator"},
    }
    sqs = {a for s in statements for a in s["Action"] if a.startswith("sqs:")}
    assert sqs == {"sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"}
    assert all(s["Resource"] == [{"Fn::GetAtt": [ids["failure_queue"], "Arn"]}]
               for s in statements if set(s["Action"]) & sqs)


def test_the_failure_queue_feeds_the_replay_function_which_reads_the_stream_and_writes_as_the_processor(
        dev: Synthesized) -> None:
    ids = _ids(dev)
    [mapping] = [m["Properties"] for m in dev.resources("AWS::Lambda::EventSourceMapping").values()
                 if m["Properties"]["FunctionName"] == {"Ref": ids["replay"]}]
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": [ids["failure_queue"], "Arn"]}
    assert (mapping["BatchSize"], mapping["FunctionResponseTypes"]) == (1, ["ReportBatchItemFailures"])
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": 2}  # beside the processor, few stream readers
    replay = dev.data["Resources"][ids["replay"]]["Properties"]
    queue = dev.data["Resources"][ids["failure_queue"]]["Properties"]
    assert queue["VisibilityTimeout"] >= replay["Timeout"]  # a replay finishes before its message reappears
    statements = role_statements(dev, ids["replay"])
    processor = table_actions(role_statements(dev, ids["processor"]))
    assert table_actions(statements) == {
        arn(ids["Usage"]): processor[arn(ids["Usage"])],
        arn(ids["Catalog"]): processor[arn(ids["Catalog"])],
        arn(ids["Events"], "StreamArn"): {"dynamodb:DescribeStream", "dynamodb:GetRecords",
                                          "dynamodb:GetShardIterator"},
    }
    sqs = {a for s in statements for a in s["Action"] if a.startswith("sqs:")}
    assert sqs == {"sqs:ReceiveMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueUrl", "sqs:DeleteMessage",
                   "sqs:GetQueueAttributes"}
    assert all(s["Resource"] == [{"Fn::GetAtt": [ids["failure_queue"], "Arn"]}]
               for s in statements if set(s["Action"]) & sqs)


def test_compactor_runs_every_minute_alone_with_least_privilege(dev: Synthesized) -> None:
    ids = _ids(dev)
    props = dev.data["Resources"][ids["compactor"]]["Properties"]
    assert props["ReservedConcurrentExecutions"] == 1  # the compactor must never run concurrently
    env = props["Environment"]["Variables"]
    # a stream batch decides on-time/late a margin longer than the processor's timeout before folding
    processor_timeout = dev.data["Resources"][ids["processor"]]["Properties"]["Timeout"]
    assert float(env["METERLINE_WRITE_MARGIN_SECONDS"]) > processor_timeout
    assert float(env["METERLINE_COMPACTION_GRACE_SECONDS"]) > float(env["METERLINE_WRITE_MARGIN_SECONDS"])
    rule = dev.data["Resources"][ids["compaction_schedule"]]["Properties"]
    assert rule["ScheduleExpression"] == "rate(1 minute)"
    assert rule["Targets"][0]["Arn"] == {"Fn::GetAtt": [ids["compactor"], "Arn"]}
    read = {"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query"}
    assert table_actions(role_statements(dev, ids["compactor"])) == {
        arn(ids["Usage"]): read | {"dynamodb:PutItem", "dynamodb:BatchWriteItem", "dynamodb:UpdateItem"},
        arn(ids["Catalog"]): read,  # the meters; no Scan
    }


def test_backfills_run_every_minute_alone_reading_events_only_through_the_time_index(dev: Synthesized) -> None:
    ids = _ids(dev)
    props = dev.data["Resources"][ids["backfill"]]["Properties"]
    assert props["ReservedConcurrentExecutions"] == 1 and props["Timeout"] == 120
    rule = dev.data["Resources"][ids["backfill_schedule"]]["Properties"]
    assert rule["ScheduleExpression"] == "rate(1 minute)"
    assert rule["Targets"][0]["Arn"] == {"Fn::GetAtt": [ids["backfill"], "Arn"]}
    read = {"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query"}
    assert table_actions(role_statements(dev, ids["backfill"])) == {
        arn(ids["Events"]): {"dynamodb:BatchGetItem"},  # manifests and events, by key (no Scan)...
        json.dumps({"Fn::Join": ["", [{"Fn::GetAtt": [ids["Events"], "Arn"]}, "/index/EventTime"]]},
                   sort_keys=True): {"dynamodb:Query"},  # ...found through the event time index alone
        # raw rows and work lists; the recount requests (one partition's Query, a conditional delete each)
        arn(ids["Usage"]): {"dynamodb:BatchWriteItem", "dynamodb:Query", "dynamodb:DeleteItem"},
        arn(ids["Catalog"]): read | {"dynamodb:PutItem", "dynamodb:DeleteItem"},  # due markers, progress
    }


def test_every_function_has_a_declared_access_to_defined_tables(dev: Synthesized) -> None:
    assert set(TABLE_ACCESS) == {spec.name for spec in HTTP_FUNCTIONS} | {"authorizer", "processor", "compactor",
                                                                          "backfill", "replay", "exporter", "sender"}
    dev.template.resource_count_is("AWS::Lambda::Function", len(HTTP_FUNCTIONS) + 7)
    defined = {spec.logical_name for spec in ALL_TABLES}
    used = {table for access in TABLE_ACCESS.values() for table in access}
    assert used == defined  # no grant to an unknown table, and no table nobody may touch


def test_tables_are_built_from_the_table_specs(dev: Synthesized) -> None:
    ids = _ids(dev)
    tables = dev.resources("AWS::DynamoDB::Table")
    assert len(tables) == len(ALL_TABLES)
    for spec in ALL_TABLES:
        table = tables[ids[spec.logical_name]]
        props = table["Properties"]
        assert props["KeySchema"] == spec.key_schema()
        assert sorted(props["AttributeDefinitions"], key=str) == sorted(spec.attribute_definitions(), key=str)
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        # The usage table is derived from the events (recount rebuilds it): no continuous backups.
        assert props["PointInTimeRecoverySpecification"] == {
            "PointInTimeRecoveryEnabled": spec.logical_name != "Usage"}
        assert props.get("StreamSpecification") == (
            {"StreamViewType": spec.stream_view_type} if spec.stream_view_type else None
        )
        assert props.get("TimeToLiveSpecification") == (
            {"AttributeName": spec.ttl_attribute, "Enabled": True} if spec.ttl_attribute else None
        )
        # A development stage can be torn down completely.
        assert props["DeletionProtectionEnabled"] is False
        assert table["DeletionPolicy"] == "Delete"
        assert "TableName" not in props


def test_functions_are_arm64_python_with_json_logs_no_tracing_and_their_own_log_group(dev: Synthesized) -> None:
    ids = _ids(dev)
    log_groups = dev.resources("AWS::Logs::LogGroup")
    for name in TABLE_ACCESS:
        props = dev.data["Resources"][ids[name]]["Properties"]
        assert props["Runtime"] == "python3.12"
        assert props["Architectures"] == ["arm64"]
        assert props["Handler"] == "handler.handler"
        assert "TracingConfig" not in props or props["TracingConfig"] == {"Mode": "PassThrough"}
        assert props["LoggingConfig"]["LogFormat"] == "JSON"
        assert props["LoggingConfig"]["ApplicationLogLevel"] == "INFO"
        assert log_groups[props["LoggingConfig"]["LogGroup"]["Ref"]]["Properties"]["RetentionInDays"] == 30
        assert len(props["Layers"]) == 2
        env = props["Environment"]["Variables"]
        assert env["POWERTOOLS_SERVICE_NAME"] == "meterline"
        assert env["POWERTOOLS_LOG_LEVEL"] == "INFO"
        assert env["METERLINE_DEFAULT_NAMESPACE"] == "default"
        assert env["METERLINE_RETENTION_DAYS"] == "400"
        # Each function knows the names of exactly the tables it may touch.
        table_vars = {k: v for k, v in env.items() if k in {s.env_var for s in ALL_TABLES}}
        assert table_vars == {spec.env_var: {"Ref": ids[spec.logical_name]}
                              for spec in ALL_TABLES if spec.logical_name in TABLE_ACCESS[name]}
        assert "FunctionName" not in props


def test_function_code_is_the_handler_folder_and_the_core_layer_ships_python_meterline(dev: Synthesized) -> None:
    from infra.bundling import CORE_PACKAGE, REPO_ROOT

    assets = json.loads(next(dev.outdir.glob("*.assets.json")).read_text())["files"]
    staged = {key.split(".")[0]: dev.outdir / entry["source"]["path"] for key, entry in assets.items()}

    def asset_dir(code: dict[str, Any]) -> Any:
        return staged[code["S3Key"].split(".")[0]]

    ids = _ids(dev)
    for name in TABLE_ACCESS:
        code = asset_dir(dev.data["Resources"][ids[name]]["Properties"]["Code"])
        assert (code / "handler.py").read_text() == (REPO_ROOT / "functions" / name / "handler.py").read_text()
        assert not list(code.rglob("__pycache__"))  # the asset hash must not depend on local byte code
    layer = asset_dir(dev.data["Resources"][ids["core_layer"]]["Properties"]["Content"])
    assert (layer / "python" / "meterline" / "storage" / "tables.py").read_text() == (
        CORE_PACKAGE / "storage" / "tables.py"
    ).read_text()
    assert not list(layer.rglob("__pycache__"))


def test_http_routes_come_from_the_function_catalog(dev: Synthesized) -> None:
    ids = _ids(dev)
    integrations = dev.resources("AWS::ApiGatewayV2::Integration")
    routes = dev.resources("AWS::ApiGatewayV2::Route").values()
    by_key = {route["Properties"]["RouteKey"]: route["Properties"] for route in routes}
    expected = {f"{method} {path}": spec.name for spec in HTTP_FUNCTIONS for method, path in spec.routes}
    assert set(by_key) == set(expected)
    for key, name in expected.items():
        integration_id = by_key[key]["Target"]["Fn::Join"][1][1]["Ref"]
        assert integrations[integration_id]["Properties"]["IntegrationUri"] == {"Fn::GetAtt": [ids[name], "Arn"]}
        assert integrations[integration_id]["Properties"]["PayloadFormatVersion"] == "2.0"
    # API Gateway may invoke each HTTP function and the authorizer, through this API only, with one
    # permission each.
    permissions = [p for p in dev.resources("AWS::Lambda::Permission").values()
                   if p["Properties"]["Principal"] != "events.amazonaws.com"]  # the compaction schedule's
    assert sorted(p["Properties"]["FunctionName"]["Fn::GetAtt"][0] for p in permissions) == sorted(
        [ids[spec.name] for spec in HTTP_FUNCTIONS] + [ids["authorizer"]]
    )
    for permission in permissions:
        assert permission["Properties"]["Principal"] == "apigateway.amazonaws.com"
        assert {"Ref": ids["http_api"]} in permission["Properties"]["SourceArn"]["Fn::Join"][1]


def test_every_route_has_the_api_key_authorizer_by_default(dev: Synthesized) -> None:
    ids = _ids(dev)
    (authorizer_id,) = dev.resources("AWS::ApiGatewayV2::Authorizer")
    dev.template.has_resource_properties("AWS::ApiGatewayV2::Authorizer", {
        "AuthorizerType": "REQUEST",
        "AuthorizerPayloadFormatVersion": "2.0",
        "EnableSimpleResponses": True,
        "IdentitySource": ["$request.header.Authorization"],
        "AuthorizerResultTtlInSeconds": 60,  # a revoked key stops working within a minute
    })
    authorizer = dev.data["Resources"][authorizer_id]["Properties"]
    assert ids["authorizer"] in str(authorizer["AuthorizerUri"])
    for route in dev.resources("AWS::ApiGatewayV2::Route").values():
        assert route["Properties"]["AuthorizationType"] == "CUSTOM"
        assert route["Properties"]["AuthorizerId"] == {"Ref": authorizer_id}
    for name in [spec.name for spec in HTTP_FUNCTIONS]:
        assert dev.data["Resources"][ids[name]]["Properties"]["Environment"]["Variables"]["METERLINE_AUTH"] == "api-key"
    statements = role_statements(dev, ids["authorizer"])
    assert table_actions(statements) == {arn(ids["Catalog"]): {"dynamodb:GetItem", "dynamodb:UpdateItem"}}


def test_the_api_function_alone_reads_the_portal_token_secret(dev: Synthesized) -> None:
    ids = _ids(dev)
    (secret_id,) = dev.resources("AWS::SecretsManager::Secret")
    readers = [name for name in TABLE_ACCESS if any(
        "secretsmanager:GetSecretValue" in s["Action"] for s in role_statements(dev, ids[name]))]
    assert readers == ["api"]
    env = dev.data["Resources"][ids["api"]]["Properties"]["Environment"]["Variables"]
    assert env["PORTAL_SECRET_ARN"] == {"Ref": secret_id}


def test_management_routes_are_throttled_harder_and_queue_sources_are_capped(dev: Synthesized) -> None:
    from infra.api import management_routes

    (stage,) = dev.resources("AWS::ApiGatewayV2::Stage").values()
    settings = stage["Properties"]["RouteSettings"]
    assert set(settings) == set(management_routes(HTTP_FUNCTIONS))
    assert {"POST /api/v1/meters", "DELETE /api/v1/reports/{slug}", "POST /api/v1/reports/{slug}/runs"} <= set(settings)
    assert not {"POST /api/v1/events", "POST /api/v1/meters/{idOrSlug}/query", "GET /api/v1/meters"} & set(settings)
    assert all(s == {"ThrottlingRateLimit": 20, "ThrottlingBurstLimit": 40} for s in settings.values())
    sqs_sources = [m for m in dev.resources("AWS::Lambda::EventSourceMapping").values()
                   if "Queue" in str(m["Properties"]["EventSourceArn"])
                   and m["Properties"]["FunctionName"] != {"Ref": _ids(dev)["replay"]}]
    assert len(sqs_sources) == 3
    assert all(m["Properties"]["ScalingConfig"] == {"MaximumConcurrency": 5} for m in sqs_sources)
    ingest = dev.data["Resources"][_ids(dev)["ingest"]]["Properties"]
    assert "ReservedConcurrentExecutions" not in ingest  # the account's pool unless configured


def test_http_api_stage_throttles_logs_access_and_allows_cors(dev: Synthesized) -> None:
    access_logs = _ids(dev)["access_logs"]
    dev.template.has_resource_properties("AWS::ApiGatewayV2::Stage", {
        "StageName": "$default",
        "AutoDeploy": True,
        "DefaultRouteSettings": {"ThrottlingRateLimit": 500, "ThrottlingBurstLimit": 1000},
        "AccessLogSettings": {
            "DestinationArn": {"Fn::GetAtt": [access_logs, "Arn"]},
            "Format": Match.string_like_regexp(r'"requestId":"\$context.requestId"'),
        },
    })
    stage = next(iter(dev.resources("AWS::ApiGatewayV2::Stage").values()))
    assert "requestId" in json.loads(stage["Properties"]["AccessLogSettings"]["Format"])
    dev.template.has_resource_properties("AWS::ApiGatewayV2::Api", {
        "ProtocolType": "HTTP",
        "CorsConfiguration": {
            "AllowOrigins": ["*"],
            "AllowCredentials": False,
            "AllowHeaders": Match.array_with(["authorization", "content-type"]),
        },
    })


def test_exports_schedule_group_scheduler_role_and_delivery_queues(dev: Synthesized) -> None:
    ids = _ids(dev)
    dev.template.resource_count_is("AWS::Scheduler::ScheduleGroup", 1)
    group = next(iter(dev.resources("AWS::Scheduler::ScheduleGroup").values()))
    role_id = ids["scheduler_role"]
    trust = dev.data["Resources"][role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert len(trust) == 1
    assert trust[0]["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert trust[0]["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    source_arn = json.dumps(trust[0]["Condition"]["ArnLike"]["aws:SourceArn"])
    assert f":schedule/{group['Properties']['Name']}/*" in source_arn
    # It may invoke the exporter (unqualified) and nothing else.
    statements = [s for p in dev.resources("AWS::IAM::Policy").values() if {"Ref": role_id} in p["Properties"]["Roles"]
                  for s in p["Properties"]["PolicyDocument"]["Statement"]]
    assert statements == [{"Action": "lambda:InvokeFunction", "Effect": "Allow",
                           "Resource": {"Fn::GetAtt": [ids["exporter"], "Arn"]}}]

    queues = dev.resources("AWS::SQS::Queue")
    for queue, dlq in (("delivery_queue", "delivery_dlq"), ("export_queue", "export_dlq")):
        assert queues[ids[queue]]["Properties"]["RedrivePolicy"] == {
            "deadLetterTargetArn": {"Fn::GetAtt": [ids[dlq], "Arn"]}, "maxReceiveCount": 3,
        }


def test_every_queue_is_encrypted_and_refuses_plain_http(dev: Synthesized) -> None:
    queues = dev.resources("AWS::SQS::Queue")
    assert len(queues) == 5
    for queue in queues.values():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True
    policies = dev.resources("AWS::SQS::QueuePolicy").values()
    protected = {q["Ref"] for p in policies for q in p["Properties"]["Queues"]
                 if any(s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
                        for s in p["Properties"]["PolicyDocument"]["Statement"])}
    assert protected == set(queues)


def _alarm_metrics(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    props = alarm["Properties"]
    if "MetricName" in props:
        return [props]
    return [m["MetricStat"]["Metric"] for m in props.get("Metrics", []) if "MetricStat" in m]


def test_alarms_cover_api_functions_stream_and_dead_letter_queues(dev: Synthesized) -> None:
    ids = _ids(dev)
    alarms = dev.resources("AWS::CloudWatch::Alarm").values()
    for alarm in alarms:
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": ids["topic"]}]
        # quiet metrics are healthy, except the compactor's lag, which it reports every minute
        expected = "breaching" if alarm["Properties"].get("MetricName") == "CompactionLag" else "notBreaching"
        assert alarm["Properties"]["TreatMissingData"] == expected

    def watched(metric_name: str, dimension_value: Any) -> bool:
        return any(m["MetricName"] == metric_name and dimension_value in [d["Value"] for d in m["Dimensions"]]
                   for alarm in alarms for m in _alarm_metrics(alarm))

    api = _ids(dev)["http_api"]
    assert watched("5xx", {"Ref": api}) and watched("Count", {"Ref": api})
    rate = [a for a in alarms if any(m.get("Expression", "").startswith("IF(requests")
                                     for m in a["Properties"].get("Metrics", []))]
    assert len(rate) == 1 and rate[0]["Properties"]["Threshold"] == 1
    for name in TABLE_ACCESS:
        assert watched("Errors", {"Ref": ids[name]}), name
        assert watched("Throttles", {"Ref": ids[name]}), name
    assert watched("IteratorAge", {"Ref": ids["processor"]})
    for queue in ("failure_queue", "delivery_dlq", "export_dlq"):
        assert watched("ApproximateNumberOfMessagesVisible", {"Fn::GetAtt": [ids[queue], "QueueName"]}), queue
    assert len(alarms) == 1 + 2 * len(TABLE_ACCESS) + 1 + 3 + 1  # ... + compaction lag (test_infra_compaction.py)
    dev.template.resource_count_is("AWS::CloudWatch::Dashboard", 1)
    dev.template.resource_count_is("AWS::SNS::Subscription", 0)  # no alarmEmail given


def test_outputs_include_the_api_url(dev: Synthesized) -> None:
    url = dev.data["Outputs"]["ApiUrl"]["Value"]
    api = _ids(dev)["http_api"]
    assert url == {"Fn::Join": ["", ["https://", {"Ref": api}, ".execute-api.", {"Ref": "AWS::Region"}, ".",
                                     {"Ref": "AWS::URLSuffix"}, "/"]]}
    assert {"EventsTableName", "UsageTableName", "AlarmTopicArn", "ScheduleGroupName"} <= set(dev.data["Outputs"])
    assert {EVENTS_TABLE.env_var, USAGE_TABLE.env_var} <= {
        o["Description"].split("(")[-1].rstrip(")") for o in dev.data["Outputs"].values()
    }


def test_no_hard_coded_physical_names(dev: Synthesized) -> None:
    named = {
        "AWS::DynamoDB::Table": "TableName", "AWS::Lambda::Function": "FunctionName",
        "AWS::SQS::Queue": "QueueName", "AWS::Logs::LogGroup": "LogGroupName", "AWS::SNS::Topic": "TopicName",
        "AWS::IAM::Role": "RoleName", "AWS::CloudWatch::Alarm": "AlarmName",
        "AWS::CloudWatch::Dashboard": "DashboardName",
    }
    for kind, prop in named.items():
        for logical_id, resource in dev.resources(kind).items():
            assert prop not in resource["Properties"], logical_id
