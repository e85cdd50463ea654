"""Infrastructure tests synthesize the real app offline, with the dependency layer's pip step
switched off (`meterline:bundleDependencies=false`); everything else is what `make synth` builds."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# Before aws_cdk is imported: jsii's package cache inside the workspace, and no Node EOL banner.
os.environ.setdefault("JSII_RUNTIME_PACKAGE_CACHE_ROOT", str(REPO_ROOT / ".cdk" / "jsii-package-cache"))
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import pytest  # noqa: E402

from tests.infra.synth import Synthesized, shared_synth  # noqa: E402


@pytest.fixture(scope="session")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """The development stack with default props, synthesized once per test session (the synth
    dominates the run time) and shared by the modules that assert on it."""
    return shared_synth(tmp_path_factory, "dev")
