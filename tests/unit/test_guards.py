"""Guards against two lists drifting apart: the routes the gateway and CDK serve (functions/routes.py)
and the routes each handler's resolver answers; the dependency layer's pins and pyproject.toml's."""

from __future__ import annotations

import importlib
import re
import tomllib

import pytest

from functions.routes import HTTP_FUNCTIONS
from tests.conftest import REPO_ROOT


def _shape(path: str) -> str:
    """A path with its parameters made anonymous: /a/{idOrSlug} and /a/<id_or_slug> are one route."""
    return re.sub(r"\{[^}]+\}|<[^>]+>", "{}", path)


@pytest.mark.parametrize("function", HTTP_FUNCTIONS, ids=lambda f: f.name)
def test_each_function_answers_exactly_the_routes_it_is_given(function) -> None:
    app = importlib.import_module(function.module).app
    answered = {(route.method.upper(), _shape(route.path)) for route in app._static_routes + app._dynamic_routes}
    given = {(method, _shape(path)) for method, path in function.routes}
    assert answered == given


def test_the_dependency_layer_pins_what_pyproject_pins() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    layer = [line.strip() for line in (REPO_ROOT / "layers" / "deps" / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    # boto3 and botocore come with the Lambda runtime; everything else is bundled at the same pin.
    assert sorted(layer) == sorted(pin for pin in project if not pin.startswith(("boto3==", "botocore==")))
