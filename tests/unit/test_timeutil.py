import pytest

from meterline.domain.timeutil import format_ms, parse_rfc3339, to_epoch_ms


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-01-01T00:00:00.001Z", "2024-01-01T00:00:00.001Z"),
        ("2024-01-01T00:00:00Z", "2024-01-01T00:00:00.000Z"),
        ("2024-01-01t00:00:00z", "2024-01-01T00:00:00.000Z"),
        ("2024-01-01 00:00:00Z", "2024-01-01T00:00:00.000Z"),
        ("2024-01-01T05:30:00.5+05:30", "2024-01-01T00:00:00.500Z"),
        ("2023-12-31T19:00:00.123456789-05:00", "2024-01-01T00:00:00.123Z"),  # truncated to ms
        ("2024-02-29T23:59:59.999Z", "2024-02-29T23:59:59.999Z"),
    ],
)
def test_parses_rfc3339_to_utc_milliseconds(raw: str, expected: str) -> None:
    assert format_ms(to_epoch_ms(parse_rfc3339(raw))) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "2024-01-01",  # a date is not a date-time
        "2024-01-01T00:00:00",  # no offset: ambiguous
        "2024-13-01T00:00:00Z",
        "2023-02-29T00:00:00Z",
        "2024-01-01T24:00:00Z",
        "2024-01-01T00:00:00+24:00",
        "1704067200",
        "yesterday",
        "",
    ],
)
def test_rejects_what_is_not_rfc3339(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339(raw)


def test_format_before_epoch() -> None:
    assert format_ms(-1) == "1969-12-31T23:59:59.999Z"
