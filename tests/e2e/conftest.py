"""`meterline dev` processes for end-to-end tests: one per test session (per xdist worker), in memory, on a
free port; tests of the stack's own lifecycle start their own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meterline_local.engine import free_port


def wait_for(predicate: Any, timeout_s: float, what: str) -> Any:
    """The predicate's first truthy value, polled every 0.25 s; fails the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    pytest.fail(f"timed out waiting for {what}")


def children(pid: int) -> set[int]:
    """The live child processes of `pid` (Linux /proc)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found.update(int(child) for child in (task / "children").read_text().split())
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class DevProcess:
    """`meterline dev` in a child process, its output collected."""

    def __init__(self, *args: str, port: int | None = None, ignore_sigint: bool = False) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.endswith("_TABLE")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "meterline_local.cli", "dev", "--port", str(self.port), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
            # as a parent that ignores SIGINT (nohup, some test runners' workers) starts it
            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None,
        )
        self.lines: list[str] = []

    def wait_started(self, timeout_s: float = 60) -> DevProcess:
        deadline = time.monotonic() + timeout_s
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            self.lines.append(line)
            if "started in" in line:
                # Keep draining output so the process never blocks on a full pipe.
                threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True).start()
                return self
            if self.process.poll() is not None:
                pytest.fail("meterline dev exited:\n" + "".join(self.lines))
        self.process.kill()
        pytest.fail("meterline dev did not start:\n" + "".join(self.lines))

    def engine_pids(self) -> set[int]:
        """The DynamoDB Local JVM(s) this stack started."""
        return {pid for pid in children(self.process.pid)
                if "DynamoDBLocal" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")}

    def stop(self, sig: int = signal.SIGINT, timeout_s: float = 10) -> int:
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout_s)
        finally:
            if self.process.poll() is None:
                self.process.kill()


STACK_OUTPUT: list[str] = []  # what the session's `meterline dev` printed


@pytest.fixture(scope="session")
def local_stack() -> Iterator[str]:
    stack = DevProcess("--in-memory")
    stack.lines = STACK_OUTPUT
    stack.wait_started()
    try:
        yield stack.url
    finally:
        assert stack.stop() == 0, "meterline dev did not shut down cleanly"


def keys(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`meterline keys ... --data-dir DATA_DIR`, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "meterline_local.cli", "keys", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=120)


def new_key(data_dir: Path, namespace: str, scope: str) -> str:
    made = keys(data_dir, "create", "--namespace", namespace, "--scope", scope)
    assert made.returncode == 0, made.stderr
    return made.stdout.splitlines()[-1]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`meterline dev --auth` on a data directory of its own (one per test module); keys via `new_key`."""
    data_dir = tmp_path_factory.mktemp("auth") / "data"
    stack = DevProcess("--auth", "--data-dir", str(data_dir)).wait_started()
    try:
        yield stack.url, data_dir
    finally:
        assert stack.stop() == 0
