"""Benchmarks (`make bench`). Importing the package sets the environment the handlers read, before any
of them is imported: bench table names, quiet logs, the deployed counting timing."""

import os

for _name, _value in {
    "EVENTS_TABLE": "bench-events",
    "USAGE_TABLE": "bench-usage",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
    "METERLINE_COMPACTION_GRACE_SECONDS": "180",
    "METERLINE_WRITE_MARGIN_SECONDS": "90",
}.items():
    os.environ.setdefault(_name, _value)
