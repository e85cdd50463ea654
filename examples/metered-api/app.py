"""An HTTP API metered and guarded by Meterline without metering code in the API (issue 14, part 3):

- `EntitlementAuthorizer` lets a caller of GET /hello through only with access to the feature
  `api_calls` (the subject is the `X-Customer-Id` header your edge sets after authenticating callers);
- `ApiMetering` turns every 2xx answer into one `request` event of that subject, which the example
  meter `api_requests_total` counts by method and route.

Deploy (from this folder, after `make install` at the repository's root):

    ../../node_modules/.bin/cdk deploy -c stage=dev
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
# As infra/app.py: jsii's package cache inside the workspace, and no Node EOL banner.
os.environ.setdefault("JSII_RUNTIME_PACKAGE_CACHE_ROOT", str(REPO_ROOT / ".cdk" / "jsii-package-cache"))
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk  # noqa: E402  (after the jsii environment)
from aws_cdk import aws_apigatewayv2 as apigwv2  # noqa: E402
from aws_cdk import aws_apigatewayv2_integrations as integrations  # noqa: E402
from aws_cdk import aws_iam as iam  # noqa: E402
from aws_cdk import aws_lambda as lambda_  # noqa: E402
from aws_cdk import aws_logs as logs  # noqa: E402
from constructs import Construct  # noqa: E402

from infra import nag  # noqa: E402
from infra.config import MeterlineProps  # noqa: E402
from infra.construct import Meterline  # noqa: E402
from infra.metering import ApiMetering, EntitlementAuthorizer  # noqa: E402

FEATURE = "api_calls"
SUBJECT_HEADER = "X-Customer-Id"


class MeteredApiStack(cdk.Stack):
    def __init__(self, scope: Construct, construct_id: str, *, props: MeterlineProps, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        meterline = Meterline(self, "Meterline", props)

        api = apigwv2.HttpApi(self, "Api", description="Meterline example: a metered HTTP API")
        gate = EntitlementAuthorizer(self, "Entitlements", meterline=meterline, required_entitlements=[FEATURE],
                                     subject=f"$request.header.{SUBJECT_HEADER}")
        api.add_routes(path="/hello", methods=[apigwv2.HttpMethod.GET],
                       integration=integrations.HttpLambdaIntegration("Hello", _hello_function(self)),
                       authorizer=gate.http_authorizer)
        assert api.default_stage is not None
        ApiMetering(self, "Metering", meterline=meterline, stage=api.default_stage,
                    meters=[{"type": "request"}], subject="$context.authorizer.subject")

        cdk.CfnOutput(self, "ApiUrl", value=api.api_endpoint, description="The metered API (GET /hello)")
        cdk.CfnOutput(self, "MeterlineUrl", value=meterline.api_url, description="Meterline's OpenMeter v1 API")
        for spec, table in meterline.storage.tables.items():  # what `meterline keys --stack` looks for
            cdk.CfnOutput(self, f"{spec.logical_name}TableName", value=table.table_name)


def _hello_function(scope: Construct) -> lambda_.Function:
    """The API's own Lambda: its own role and log group, nothing else."""
    role = iam.Role(scope, "HelloRole", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    log_group = logs.LogGroup(scope, "HelloLogs", retention=logs.RetentionDays.ONE_MONTH,
                              removal_policy=cdk.RemovalPolicy.DESTROY)
    log_group.grant_write(role)
    return lambda_.Function(
        scope, "Hello",
        runtime=lambda_.Runtime.PYTHON_3_14,
        architecture=lambda_.Architecture.ARM_64,
        handler="handler.handler",
        code=lambda_.Code.from_asset(str(HERE / "hello"), exclude=["__pycache__", "*.pyc"]),
        role=role,
        log_group=log_group,
    )


def build_app(context: dict[str, Any] | None = None, outdir: str | None = None) -> tuple[cdk.App, cdk.Stack]:
    app = cdk.App(context=context, outdir=outdir)
    props = MeterlineProps.from_context(app.node)
    stack = MeteredApiStack(app, f"MeteredApi-{props.stage}", props=props,
                            description=f"Meterline example: a metered HTTP API ({props.stage})")
    nag.enable(app)
    return app, stack


if __name__ == "__main__":
    build_app()[0].synth()
