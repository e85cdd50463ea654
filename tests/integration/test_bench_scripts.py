"""The CPU benchmarks still run (they drive the real handlers with in-memory storage): each prints its
figure as a `<name> <value>` line. Timing is not checked here; `make bench` reports it."""

from __future__ import annotations

import re
import subprocess
import sys

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
