"""The fine resolutions' retention defaults (meterline.settings): minute rows and quarter slots are kept
35 days unless configured, never longer than events and never with quarters shorter than minutes."""

from __future__ import annotations

import pytest

from meterline.settings import FINE_RETENTION_DAYS, Settings


@pytest.mark.parametrize(("env", "minute", "quarter"), [
    ({}, 35, 35),  # the default
    ({"METERLINE_RETENTION_DAYS": "30"}, None, None),  # events kept less than 35 days: as long as events
    ({"METERLINE_RETENTION_DAYS": "35"}, None, None),
    ({"METERLINE_MINUTE_RETENTION_DAYS": "60"}, 60, 60),  # quarters follow longer minutes
    ({"METERLINE_QUARTER_RETENTION_DAYS": "20"}, 20, 20),  # minutes follow shorter quarters
    ({"METERLINE_QUARTER_RETENTION_DAYS": "90"}, 35, 90),
    ({"METERLINE_MINUTE_RETENTION_DAYS": "400", "METERLINE_QUARTER_RETENTION_DAYS": "400"}, None, None),  # as events
    ({"METERLINE_MINUTE_RETENTION_DAYS": "35", "METERLINE_QUARTER_RETENTION_DAYS": "400"}, 35, None),
])
def test_fine_retention_defaults(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], minute: int | None,
                                 quarter: int | None) -> None:
    for name in ("METERLINE_RETENTION_DAYS", "METERLINE_MINUTE_RETENTION_DAYS", "METERLINE_QUARTER_RETENTION_DAYS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert (settings.minute_retention_days, settings.quarter_retention_days) == (minute, quarter)
    assert FINE_RETENTION_DAYS == 35
