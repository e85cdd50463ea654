"""Synthesize the Meterline app the way the CDK CLI does (cdk.json's context, cdk-nag on), once per
test session: the first process (pytest-xdist worker) to ask for a variant synthesizes it into the
session's shared temp dir under a file lock; the others read the result. Assertions address resources
by construct path (`Storage/Events`), not by construct objects, so a read result serves as well as a
fresh one."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template

from infra.app import build_app
from infra.config import BUNDLE_DEPENDENCIES_CONTEXT

REPO_ROOT = Path(__file__).resolve().parents[2]
CONSTRUCT_ID = "Meterline"  # the construct's id in MeterlineStack
# What builds an app: infra.app.build_app, or an example's (`(context, outdir) -> (app, stack)`).
AppBuilder = Callable[..., tuple[Any, Any]]


@dataclass
class Synthesized:
    stack_name: str
    data: dict[str, Any]  # the template as JSON
    outdir: Path

    @cached_property
    def template(self) -> Template:
        return Template.from_json(self.data)

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        return {k: r for k, r in self.data["Resources"].items() if r["Type"] == kind}

    def logical_id(self, path: str) -> str:
        """Logical id of the CloudFormation resource of the construct at `path` under the Meterline
        construct, e.g. `Storage/Events` or `Api/Ingest/Function`."""
        full = f"{self.stack_name}/{CONSTRUCT_ID}/{path}"
        found = [k for k, r in self.data["Resources"].items()
                 if r.get("Metadata", {}).get("aws:cdk:path") in (full, f"{full}/Resource")]
        assert len(found) == 1, f"{path}: {found}"
        return found[0]


def cdk_json_context() -> dict[str, Any]:
    return json.loads((REPO_ROOT / "cdk.json").read_text())["context"]


def synthesize(outdir: Path, build: AppBuilder = build_app, **context: Any) -> Synthesized:
    """Build and synthesize the app; raises if cdk-nag reports an unacknowledged finding."""
    app, stack = build(
        context={
            **cdk_json_context(),
            "aws:cdk:enable-path-metadata": True,  # as the CLI sets it
            BUNDLE_DEPENDENCIES_CONTEXT: False,
            **context,
        },
        outdir=str(outdir),
    )
    app.synth()
    return load(outdir)


def load(outdir: Path) -> Synthesized:
    (template_file,) = outdir.glob("*.template.json")
    stack_name = template_file.name.removesuffix(".template.json")
    return Synthesized(stack_name=stack_name, data=json.loads(template_file.read_text()), outdir=outdir)


def shared_synth(tmp_path_factory: pytest.TempPathFactory, name: str, build: AppBuilder = build_app,
                 **context: Any) -> Synthesized:
    """`synthesize` once per test session, shared between xdist workers."""
    root = tmp_path_factory.getbasetemp()
    if root.name.startswith("popen-gw"):  # an xdist worker: its parent is shared by the session
        root = root.parent
    outdir = root / f"cdk-{name}"
    done = root / f"cdk-{name}.done"
    with (root / f"cdk-{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if done.exists():
                return load(outdir)
            synthesized = synthesize(outdir, build, **context)
            done.touch()
            return synthesized
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
