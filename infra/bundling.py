"""Lambda layer assets built without Docker (CDK local bundling).

- The core layer ships `layers/core/meterline` as `python/meterline` (a plain copy).
- The dependency layer is `pip install --target python/` of `layers/deps/requirements.txt` for the
  Lambda platform (manylinux2014 aarch64, CPython 3.12, wheels only), whatever machine synthesizes.
  Its asset hash covers the requirements and the target platform, so a change of either rebuilds it
  and an unchanged one is reused from cdk.out without running pip.

pip reads its usual environment (PIP_INDEX_URL, PIP_FIND_LINKS, PIP_NO_INDEX, ...), so a mirror or a
local wheelhouse works for air-gapped synths.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_

REPO_ROOT = Path(__file__).resolve().parent.parent
CORE_PACKAGE = REPO_ROOT / "layers" / "core" / "meterline"
DEPS_DIR = REPO_ROOT / "layers" / "deps"
REQUIREMENTS = DEPS_DIR / "requirements.txt"

# The Lambda runtime the layers are built for; infra/lambdas.py takes its runtime from here.
PYTHON_VERSION = "3.12"
PIP_PLATFORM = "manylinux2014_aarch64"
PIP_IMPLEMENTATION = "cp"
PIP_TARGET_FLAGS = (
    "--platform", PIP_PLATFORM,
    "--implementation", PIP_IMPLEMENTATION,
    "--python-version", PYTHON_VERSION,
    "--only-binary=:all:",
)
IGNORED = ("__pycache__", "*.pyc", "*.pyo")

# Only used if local bundling is unavailable, which it never is: CDK requires an image.
_UNUSED_IMAGE = DockerImage.from_registry(f"public.ecr.aws/sam/build-python{PYTHON_VERSION}")


@jsii.implements(ILocalBundling)
class _CopyPackage:
    """Copies a Python package into `<output>/python/<name>`."""

    def __init__(self, package_dir: Path) -> None:
        self.package_dir = package_dir

    def try_bundle(self, output_dir: str, *args: object, **kwargs: object) -> bool:
        target = Path(output_dir) / "python" / self.package_dir.name
        shutil.copytree(self.package_dir, target, ignore=shutil.ignore_patterns(*IGNORED), dirs_exist_ok=True)
        return True


@jsii.implements(ILocalBundling)
class _PipInstall:
    """`pip install -r requirements.txt --target <output>/python` for the Lambda platform."""

    def __init__(self, requirements: Path) -> None:
        self.requirements = requirements

    def try_bundle(self, output_dir: str, *args: object, **kwargs: object) -> bool:
        command = [
            sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
            "--requirement", str(self.requirements), "--target", str(Path(output_dir) / "python"),
            *PIP_TARGET_FLAGS,
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"building the dependency layer failed ({' '.join(command)}):\n{result.stdout}{result.stderr}"
            )
        return True


def core_layer_code() -> lambda_.Code:
    """The shared core package, as `python/meterline` (hash: the package's source)."""
    return lambda_.Code.from_asset(
        str(CORE_PACKAGE.parent),
        exclude=[f"**/{pattern}" for pattern in IGNORED],
        bundling=BundlingOptions(image=_UNUSED_IMAGE, local=_CopyPackage(CORE_PACKAGE)),
    )


def dependency_layer_hash() -> str:
    digest = hashlib.sha256(REQUIREMENTS.read_bytes())
    digest.update(" ".join(PIP_TARGET_FLAGS).encode())
    return digest.hexdigest()


def dependency_layer_code(bundle: bool = True) -> lambda_.Code:
    """The third-party packages. `bundle=False` (tests only) ships the requirements file as is: the
    template is the same apart from the asset, and no pip or network is needed."""
    if not bundle:
        return lambda_.Code.from_asset(str(DEPS_DIR))
    return lambda_.Code.from_asset(
        str(DEPS_DIR),
        asset_hash_type=AssetHashType.CUSTOM,
        asset_hash=dependency_layer_hash(),
        bundling=BundlingOptions(image=_UNUSED_IMAGE, local=_PipInstall(REQUIREMENTS)),
    )
