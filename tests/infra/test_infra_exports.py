"""Usage exports in the synthesized development stack: the exporter and the sender on their queues,
what the scheduler role and the reports, exporter and sender functions may do, the signing key, and
the environment the handlers read."""

from __future__ import annotations

import json
from typing import Any

from infra.exports import SIGNING_CONTEXT_KEYS, WEBHOOK_TIMEOUT_SECONDS
from meterline.aws.signing_secrets import SigningSecrets
from meterline.domain.processing_lag import LagPolicy
from meterline.webhooks import DEADLINE_MARGIN_SECONDS
from tests.infra.synth import Synthesized
from tests.infra.test_infra_stack import LOG_ACTIONS, arn, role_statements, table_actions

READ = {"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query"}
SEND = {"sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"}
CONSUME = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes",
           "sqs:GetQueueUrl"}
ENCRYPTION_CONTEXT_CONDITION = {
    "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": list(SIGNING_CONTEXT_KEYS)},
    "Null": {"kms:EncryptionContextKeys": "false"},
}


def ids(dev: Synthesized) -> dict[str, str]:
    paths = {
        "reports": "Api/Reports/Function", "exporter": "Exports/Exporter/Function", "sender": "Exports/Sender/Function",
        "export_queue": "Exports/ExportQueue", "export_dlq": "Exports/ExportDeadLetterQueue",
        "delivery_queue": "Exports/DeliveryQueue", "delivery_dlq": "Exports/DeliveryDeadLetterQueue",
        "signing_key": "Exports/SigningKey", "scheduler_role": "Exports/SchedulerRole",
        "group": "Exports/ScheduleGroup", "catalog": "Storage/Catalog", "usage": "Storage/Usage",
    }
    return {name: dev.logical_id(path) for name, path in paths.items()}


def grants(statements: list[dict[str, Any]], prefix: str) -> dict[str, set[str]]:
    """Actions starting with `prefix`, by resource (as JSON)."""
    granted: dict[str, set[str]] = {}
    for statement in statements:
        actions = {a for a in statement["Action"] if a.startswith(prefix)}
        for resource in statement["Resource"]:
            if actions:
                granted.setdefault(json.dumps(resource, sort_keys=True), set()).update(actions)
    return granted


def statements_with(statements: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    return [s for s in statements if action in s["Action"]]


def environment(dev: Synthesized, function_id: str) -> dict[str, Any]:
    return dev.data["Resources"][function_id]["Properties"]["Environment"]["Variables"]


def test_the_exporter_and_the_sender_consume_their_queues_with_partial_batch_responses(dev: Synthesized) -> None:
    i = ids(dev)
    mappings = {json.dumps(m["Properties"]["EventSourceArn"]): m["Properties"]
                for m in dev.resources("AWS::Lambda::EventSourceMapping").values()}
    queues = dev.resources("AWS::SQS::Queue")
    # the sender also consumes the delivery dead-letter queue: it ends what SQS dead-letters there as failed
    for function, queue, batch_size in (("exporter", "export_queue", 1), ("sender", "delivery_queue", 10),
                                        ("sender", "delivery_dlq", 10)):
        mapping = mappings[json.dumps({"Fn::GetAtt": [i[queue], "Arn"]})]
        assert (mapping["FunctionName"], mapping["BatchSize"]) == ({"Ref": i[function]}, batch_size)
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        # Lambda refuses an SQS mapping whose queue hides messages for less than the function may run.
        timeout = dev.data["Resources"][i[function]]["Properties"]["Timeout"]
        assert queues[i[queue]]["Properties"]["VisibilityTimeout"] >= 6 * timeout
    # A batch of webhooks POSTed one after another, each within its deadline, fits in the sender's timeout.
    assert dev.data["Resources"][i["sender"]]["Properties"]["Timeout"] > 10 * (WEBHOOK_TIMEOUT_SECONDS
                                                                               + DEADLINE_MARGIN_SECONDS)


def test_the_scheduler_role_may_invoke_only_the_exporter_for_this_groups_schedules(dev: Synthesized) -> None:
    i = ids(dev)
    role = dev.data["Resources"][i["scheduler_role"]]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    group = dev.data["Resources"][i["group"]]["Properties"]["Name"]
    assert json.dumps(trust["Condition"]["ArnLike"]["aws:SourceArn"]).endswith(f':schedule/{group}/*"]]}}')
    policies = [p for p in dev.resources("AWS::IAM::Policy").values()
                if {"Ref": i["scheduler_role"]} in p["Properties"]["Roles"]]
    statements = [s for p in policies for s in p["Properties"]["PolicyDocument"]["Statement"]]
    assert statements == [{"Action": "lambda:InvokeFunction", "Effect": "Allow",
                           "Resource": {"Fn::GetAtt": [i["exporter"], "Arn"]}}]


def test_the_reports_function_manages_only_its_groups_schedules_and_passes_only_the_scheduler_role(
        dev: Synthesized) -> None:
    i = ids(dev)
    statements = role_statements(dev, i["reports"])
    group = dev.data["Resources"][i["group"]]["Properties"]["Name"]
    (schedules,) = statements_with(statements, "scheduler:CreateSchedule")
    assert set(schedules["Action"]) == {"scheduler:CreateSchedule", "scheduler:UpdateSchedule",
                                        "scheduler:DeleteSchedule", "scheduler:GetSchedule"}
    (resource,) = schedules["Resource"]
    parts = resource["Fn::Join"][1]
    assert parts[0] == "arn:" and ":scheduler:" in parts and parts[-1] == f":schedule/{group}/*"
    (pass_role,) = statements_with(statements, "iam:PassRole")
    assert pass_role["Resource"] == [{"Fn::GetAtt": [i["scheduler_role"], "Arn"]}]
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}}
    # Decrypt: a PUT that keeps redacted endpoint headers (CDK merges the two grants into one statement)
    (key_use,) = statements_with(statements, "kms:Encrypt")
    assert sorted(key_use["Action"]) == ["kms:Decrypt", "kms:Encrypt"]
    assert key_use["Resource"] == [{"Fn::GetAtt": [i["signing_key"], "Arn"]}]
    assert key_use["Condition"] == ENCRYPTION_CONTEXT_CONDITION
    assert grants(statements, "sqs:") == {arn(i["export_queue"]): SEND}
    actions = {a for s in statements for a in s["Action"]}
    assert {a for a in actions if not a.startswith(("dynamodb:", "scheduler:", "sqs:"))} == (
        LOG_ACTIONS | {"iam:PassRole", "kms:Encrypt", "kms:Decrypt"}
    )
    assert table_actions(statements) == {
        arn(i["catalog"]): READ | {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"},
    }


def test_the_exporter_reads_usage_writes_runs_and_enqueues_deliveries(dev: Synthesized) -> None:
    i = ids(dev)
    statements = role_statements(dev, i["exporter"])
    assert table_actions(statements) == {
        # a window claim and its run are written in one TransactWriteItems, deliveries in batches
        arn(i["catalog"]): READ | {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:BatchWriteItem"},
        arn(i["usage"]): READ,
    }
    # the export queue also takes back a manual run that waits for its meter's backfill
    assert grants(statements, "sqs:") == {arn(i["export_queue"]): CONSUME | SEND, arn(i["delivery_queue"]): SEND}
    assert not [a for s in statements for a in s["Action"] if a.startswith(("kms:", "scheduler:", "iam:"))]


def test_the_sender_decrypts_secrets_and_re_enqueues_or_dead_letters_deliveries(dev: Synthesized) -> None:
    i = ids(dev)
    statements = role_statements(dev, i["sender"])
    assert table_actions(statements) == {
        arn(i["catalog"]): READ | {"dynamodb:UpdateItem"},
    }
    assert grants(statements, "sqs:") == {arn(i["delivery_queue"]): CONSUME | SEND,
                                          arn(i["delivery_dlq"]): CONSUME | SEND}
    (decrypt,) = statements_with(statements, "kms:Decrypt")
    assert decrypt["Action"] == ["kms:Decrypt"] and decrypt["Condition"] == ENCRYPTION_CONTEXT_CONDITION
    assert decrypt["Resource"] == [{"Fn::GetAtt": [i["signing_key"], "Arn"]}]
    assert {a for s in statements for a in s["Action"] if a.startswith("kms:")} == {"kms:Decrypt"}


def test_the_signing_key_rotates_and_its_grants_match_the_secrets_encryption_context(dev: Synthesized) -> None:
    (key,) = dev.resources("AWS::KMS::Key").values()
    assert key["Properties"]["EnableKeyRotation"] is True
    assert set(SigningSecrets._context("default", "01H")) == set(SIGNING_CONTEXT_KEYS)


def test_each_function_gets_the_export_settings_it_reads_with_the_aws_defaults(dev: Synthesized) -> None:
    i = ids(dev)
    reports, exporter, sender = (environment(dev, i[name]) for name in ("reports", "exporter", "sender"))
    assert reports["SCHEDULE_GROUP_NAME"] == dev.data["Resources"][i["group"]]["Properties"]["Name"]
    assert reports["EXPORTER_FUNCTION_ARN"] == {"Fn::GetAtt": [i["exporter"], "Arn"]}
    assert reports["SCHEDULER_ROLE_ARN"] == {"Fn::GetAtt": [i["scheduler_role"], "Arn"]}
    assert reports["EXPORT_QUEUE_URL"] == {"Ref": i["export_queue"]}
    assert reports["SIGNING_KEY_ID"] == sender["SIGNING_KEY_ID"] == {"Fn::GetAtt": [i["signing_key"], "Arn"]}
    assert reports["METERLINE_EXPORT_SETTLE_SECONDS"] == exporter["METERLINE_EXPORT_SETTLE_SECONDS"] == "180"
    # a schedule fires once the lag policy could find the window final: one invocation per window
    assert int(exporter["METERLINE_EXPORT_SETTLE_SECONDS"]) * 1000 >= LagPolicy().settle_ms
    assert exporter["METERLINE_EXPORT_MAX_HOLD_SECONDS"] == "3600"
    assert exporter["DELIVERY_QUEUE_URL"] == sender["DELIVERY_QUEUE_URL"] == {"Ref": i["delivery_queue"]}
    assert sender["DELIVERY_DLQ_URL"] == {"Ref": i["delivery_dlq"]}
    assert reports["METERLINE_WEBHOOK_ALLOW_LOOPBACK"] == sender["METERLINE_WEBHOOK_ALLOW_LOOPBACK"] == "false"
    assert (sender["METERLINE_WEBHOOK_MAX_ATTEMPTS"], sender["METERLINE_WEBHOOK_BACKOFF_BASE_SECONDS"],
            sender["METERLINE_WEBHOOK_BACKOFF_MAX_SECONDS"], sender["METERLINE_WEBHOOK_TIMEOUT_SECONDS"]) == (
        "8", "30", "900", "10")


def test_export_functions_and_dead_letter_queues_are_alarmed(dev: Synthesized) -> None:
    i = ids(dev)
    watched = [(a["Properties"].get("MetricName"), [d["Value"] for d in a["Properties"].get("Dimensions", [])])
               for a in dev.resources("AWS::CloudWatch::Alarm").values()]
    for function in ("exporter", "sender"):
        assert ("Errors", [{"Ref": i[function]}]) in watched
    for queue in ("export_dlq", "delivery_dlq"):
        assert ("ApproximateNumberOfMessagesVisible", [{"Fn::GetAtt": [i[queue], "QueueName"]}]) in watched
