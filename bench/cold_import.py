"""The slowest fresh-interpreter import of any handler module, as a Lambda cold start pays it.
Prints `cold_import_ms_max <value>` (budget <= 300) and one `cold_import_ms_<function>` per handler.
Each import runs in a new interpreter; the median of several runs is reported."""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = 5
PROBE = ("import time; t = time.perf_counter(); import {module}; "
         "print((time.perf_counter() - t) * 1000)")


def handler_modules() -> list[str]:
    return sorted(f"functions.{p.parent.name}.handler" for p in (ROOT / "functions").glob("*/handler.py"))


def cold_import_ms(module: str) -> float:
    samples = []
    for _ in range(RUNS):
        out = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], cwd=ROOT, check=True,
                             capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "EVENTS_TABLE": "x"})
        samples.append(float(out.stdout.strip()))
    return statistics.median(samples)


def main() -> None:
    results = {module: cold_import_ms(module) for module in handler_modules()}
    for module, ms in results.items():
        print(f"cold_import_ms_{module.split('.')[1]} {ms:.0f}")
    print(f"cold_import_ms_max {max(results.values()):.0f}")


if __name__ == "__main__":
    main()
