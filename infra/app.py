"""The CDK app: one Meterline stack per stage, configured from context (see infra/config.py).

    npx cdk synth -c stage=prod -c alarmEmail=ops@example.com
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
# jsii's package cache inside the workspace (not the home directory), and no Node EOL banner.
os.environ.setdefault("JSII_RUNTIME_PACKAGE_CACHE_ROOT", str(REPO_ROOT / ".cdk" / "jsii-package-cache"))
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk  # noqa: E402  (after the jsii environment)

from infra import nag  # noqa: E402
from infra.config import MeterlineProps  # noqa: E402
from infra.stack import MeterlineStack  # noqa: E402


def build_app(context: dict[str, Any] | None = None, outdir: str | None = None) -> tuple[cdk.App, MeterlineStack]:
    app = cdk.App(context=context, outdir=outdir)
    props = MeterlineProps.from_context(app.node)
    stack = MeterlineStack(
        app, f"Meterline-{props.stage}",
        props=props,
        description=f"Meterline usage metering ({props.stage})",
    )
    nag.enable(app)
    return app, stack


def main() -> None:
    app, _ = build_app()
    app.synth()


if __name__ == "__main__":
    main()
