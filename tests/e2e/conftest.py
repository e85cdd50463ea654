"""A `meterline dev` process per test session (per xdist worker), on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


STACK_OUTPUT: list[str] = []  # what `meterline dev` printed after starting


@pytest.fixture(scope="session")
def local_stack() -> Iterator[str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.endswith("_TABLE")}
    process = subprocess.Popen(
        [sys.executable, "-m", "meterline_local.cli", "dev", "--port", str(port), "--in-memory"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    lines = []
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        lines.append(line)
        if "started in" in line:
            break
        if process.poll() is not None:
            pytest.fail("meterline dev exited:\n" + "".join(lines))
    else:
        process.kill()
        pytest.fail("meterline dev did not start:\n" + "".join(lines))
    # Keep draining output so the process never blocks on a full pipe.
    import threading

    threading.Thread(target=lambda: STACK_OUTPUT.extend(process.stdout), daemon=True).start()
    try:
        yield url
    finally:
        process.send_signal(2)  # Ctrl-C
        try:
            assert process.wait(timeout=10) == 0, "meterline dev did not shut down cleanly"
        finally:
            if process.poll() is None:
                process.kill()
