"""The stack `cdk deploy` creates: the Meterline construct and its outputs."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from infra.config import MeterlineProps
from infra.construct import Meterline


class MeterlineStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, props: MeterlineProps, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.meterline = meterline = Meterline(self, "Meterline", props)

        CfnOutput(self, "ApiUrl", value=meterline.api_url,
                  description="Base URL of the OpenMeter v1 API (point the OpenMeter SDKs here)")
        if meterline.api.domain_name is not None:
            CfnOutput(self, "CustomDomainUrl", value=f"https://{props.domain_name}/",
                      description="The API on its custom domain")
            CfnOutput(self, "CustomDomainTarget", value=meterline.api.domain_name.regional_domain_name,
                      description="Point the custom domain's DNS (CNAME or alias) at this name")
        CfnOutput(self, "AlarmTopicArn", value=meterline.monitoring.topic.topic_arn,
                  description="SNS topic the alarms notify")
        CfnOutput(self, "DashboardName", value=meterline.monitoring.dashboard.dashboard_name,
                  description="CloudWatch dashboard")
        for spec, table in meterline.storage.tables.items():
            CfnOutput(self, f"{spec.logical_name}TableName", value=table.table_name,
                      description=f"DynamoDB table ({spec.env_var})")
        CfnOutput(self, "ScheduleGroupName", value=meterline.exports.schedule_group.schedule_group_name,
                  description="EventBridge Scheduler group of the usage exports")
