"""The client's examples: they import, the gateway example's Lambda handler meters into `meterline dev`, and
both scripts run to the end against it (the OpenAI one against the fake OpenAI server)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import uuid
from pathlib import Path
from types import ModuleType

import pytest

from tests.client.apigw_events import http_api_event, jwt_authorizer
from tests.client.stack import settled_usage
from tests.conftest import REPO_ROOT, lambda_context
from tests.fake_openai import fake_openai

pytestmark = pytest.mark.e2e

GATEWAY_EXAMPLE = REPO_ROOT / "examples" / "gateway-policy"
OPENAI_EXAMPLE = REPO_ROOT / "examples" / "openai" / "meter_openai.py"


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{uuid.uuid4().hex}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(script: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env}, cwd=REPO_ROOT)


def test_the_examples_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METERLINE_URL", "http://127.0.0.1:9")
    gateway = load(GATEWAY_EXAMPLE / "app.py")
    assert callable(gateway.lambda_handler)
    gateway.meterline.close()
    assert callable(load(OPENAI_EXAMPLE).main)


def test_the_gateway_example_meters_into_the_stack(local_stack: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METERLINE_URL", local_stack)
    monkeypatch.delenv("REQUIRED_FEATURES", raising=False)
    example = load(GATEWAY_EXAMPLE / "app.py")
    subject = f"example-{uuid.uuid4().hex[:8]}"
    claims = jwt_authorizer({"sub": subject})
    text = "one two three"

    answer = example.lambda_handler(http_api_event("GET", "/items/5", "GET /items/{item_id}", authorizer=claims),
                                    lambda_context())
    assert answer["statusCode"] == 200
    answer = example.lambda_handler(http_api_event("POST", "/summaries", "POST /summaries", authorizer=claims,
                                                   body=text), lambda_context())
    assert answer["statusCode"] == 200
    example.meterline.close()
    assert settled_usage(local_stack, "api_requests_total", subject, 2) == 2
    assert settled_usage(local_stack, "api_request_ingress_bytes", subject, len(text)) == len(text)


def test_run_local_runs_against_the_stack(local_stack: str) -> None:
    ran = run(GATEWAY_EXAMPLE / "run_local.py", METERLINE_URL=local_stack)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "-> 403" in ran.stdout and "-> 401" in ran.stdout
    assert '{"/items/{item_id}": 2, "/summaries": 1}' in ran.stdout


def test_the_openai_example_runs_against_the_fake_openai(local_stack: str, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("METERLINE_URL", local_stack)
    monkeypatch.setenv("OPENAI_API_KEY", "fake")
    subject = f"example-{uuid.uuid4().hex[:8]}"
    with fake_openai() as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        load(OPENAI_EXAMPLE).main(subject)  # exits non-zero if Meterline did not count what was sent
    assert f"tokens_total of {subject} now: {{'input': 11.0, 'output': 10.0}}" in capsys.readouterr().out
    assert [request.get("stream_options") for request in fake.requests] == [None, {"include_usage": True}]
