"""The CPU benchmarks still run (they drive the real handlers with in-memory storage): each prints its
figure as a `<name> <value>` line. Timing is not checked here; `make bench` reports it. (The storage
benchmark is not run here: it takes minutes. Its DynamoDB stub is checked on its own.)"""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.parametrize(("script", "figure"), [("ingest_cpu.py", "ingest_cpu_us_per_event"),
                                                ("processor_cpu.py", "processor_cpu_us_per_event")])
def test_benchmark_runs_and_prints_its_figure(script: str, figure: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(REPO_ROOT)}  # a clean environment, as `make bench` has
    result = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / script)], capture_output=True, text=True,
                            timeout=120, env=env, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.fullmatch(rf"{figure} \d+\.\d\n", result.stdout), result.stdout


def test_entitlement_value_reads_stay_flat() -> None:
    """bench/entitlement_value.py checks each value against a recount; its read units are deterministic
    (the cost model), so their targets are checked here: at most 20 read units per check, and no more
    after 24 past periods than for a new entitlement."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "entitlement_value.py")], capture_output=True,
                            text=True, timeout=300, env=env, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = {name: float(value) for name, value in (line.split() for line in result.stdout.splitlines())}
    assert figures["entitlement_value_rru"] <= 20
    assert figures["entitlement_value_rru_after_24_periods"] <= figures["entitlement_value_rru"]
    assert figures["entitlement_value_rru_first_after_24_periods"] > figures["entitlement_value_rru"]


def test_the_dynamodb_stub_answers_botocore_as_dynamodb_does() -> None:
    """bench/dynamodb_stub.py, where the all-in cost benchmark measures Lambda CPU with real botocore, serves
    the cost model (tests/fakes.py) over DynamoDB's JSON protocol: binary values round-trip, a failed
    condition is botocore's ConditionalCheckFailedException, a cancelled transaction carries its reasons,
    an item over 400 KB is refused (ValidationException, unbilled), and the units come back by phase."""
    import json
    import urllib.request

    import boto3
    from botocore.exceptions import ClientError

    env = {"PATH": "/usr/bin:/bin", "HOME": str(REPO_ROOT)}
    server = subprocess.Popen([sys.executable, "-m", "bench.dynamodb_stub"], cwd=REPO_ROOT, env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{server.stdout.readline().strip()}"

        def control(target: str, body: dict[str, Any]) -> dict[str, Any]:
            request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"X-Amz-Target": target})
            with urllib.request.urlopen(request, timeout=30) as response:
                answer: dict[str, Any] = json.loads(response.read())
                return answer

        control("Bench.Reset", {"key_schemas": {"t": ["pk", "sk"]}, "category": "bench.categories:category",
                                "item_limit": 400 * 1024})
        client = boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x",
                              aws_secret_access_key="x")
        key = {"pk": {"S": "p"}, "sk": {"S": "s"}}
        client.put_item(TableName="t", Item={**key, "blob": {"B": b"\x00\xff" * 600}})
        assert client.get_item(TableName="t", Key=key, ConsistentRead=True)["Item"]["blob"]["B"] == b"\x00\xff" * 600
        with pytest.raises(client.exceptions.ConditionalCheckFailedException):
            client.put_item(TableName="t", Item=key, ConditionExpression="attribute_not_exists(pk)")
        with pytest.raises(client.exceptions.TransactionCanceledException) as cancelled:
            client.transact_write_items(TransactItems=[
                {"Update": {"TableName": "t", "Key": {"pk": {"S": "q"}, "sk": {"S": "s"}},
                            "UpdateExpression": "ADD n :one", "ExpressionAttributeValues": {":one": {"N": "1"}}}},
                {"Put": {"TableName": "t", "Item": key, "ConditionExpression": "attribute_not_exists(pk)"}}])
        reasons = [reason["Code"] for reason in cancelled.value.response["CancellationReasons"]]
        assert reasons == ["None", "ConditionalCheckFailed"]
        with pytest.raises(ClientError, match="ValidationException"):
            client.put_item(TableName="t", Item={**key, "big": {"S": "x" * 410_000}})
        units = {(phase, kind): value for phase, _, kind, value in control("Bench.Stats", {})["units"]}
        # the put (2 KB: 2 units), the failed put (billed, 2 units), the transaction (2 x 1 each), the read
        assert units == {("default", "WRU"): 2 + 2 + 2 * 1 + 2 * 2, ("default", "RRU"): 1.0}
    finally:
        server.kill()
        server.wait(10)
