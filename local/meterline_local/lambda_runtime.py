"""Lambda-like execution environments for handler modules.

Each environment is a separate copy of the handler module (module state such as a resolver's current
event is per environment, as in Lambda), used by one invocation at a time.
"""

from __future__ import annotations

import importlib.util
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any


class LocalLambdaContext:
    """The parts of Lambda's context object that handlers and Powertools read."""

    def __init__(self, function_name: str, timeout_s: float = 30.0, memory_mb: int = 512) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:000000000000:function:{function_name}"
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def load_environment(module_name: str, copy: int) -> ModuleType:
    """A fresh copy of a handler module under a private name."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        raise ImportError(f"handler module {module_name} not found")
    private = f"{module_name}__env{copy}"
    copy_spec = importlib.util.spec_from_file_location(private, spec.origin)
    assert copy_spec is not None and copy_spec.loader is not None
    module = importlib.util.module_from_spec(copy_spec)
    sys.modules[private] = module
    copy_spec.loader.exec_module(module)
    return module


class LocalFunction:
    """A function with up to `concurrency` warm environments, created on demand."""

    def __init__(self, name: str, module_name: str, concurrency: int = 4) -> None:
        self.name = name
        self.module_name = module_name
        self._idle: queue.LifoQueue[ModuleType] = queue.LifoQueue()
        self._created = 0
        self._concurrency = concurrency
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(concurrency)

    def warm(self) -> None:
        with self._environment():
            pass

    @contextmanager
    def _environment(self) -> Iterator[ModuleType]:
        self._slots.acquire()
        try:
            try:
                module = self._idle.get_nowait()
            except queue.Empty:
                with self._lock:
                    self._created += 1
                    copy = self._created
                module = load_environment(self.module_name, copy)
            try:
                yield module
            finally:
                self._idle.put(module)
        finally:
            self._slots.release()

    def invoke(self, event: dict[str, Any]) -> Any:
        with self._environment() as module:
            handler: Callable[[dict[str, Any], Any], Any] = module.handler
            return handler(event, LocalLambdaContext(self.name))
