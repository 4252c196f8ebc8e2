"""shared.instants reads exactly what the document's `format: date-time` and `format: date` allow: every string
the format validator (the one schemathesis judges with) accepts is an instant, every other string is None."""

from __future__ import annotations

from datetime import UTC, datetime

import jsonschema_rs
import pytest

from shared.instants import EARLIEST, LATEST, parse_date, parse_date_time

DATE_TIME = jsonschema_rs.validator_for({"type": "string", "format": "date-time"}, validate_formats=True)
DATE = jsonschema_rs.validator_for({"type": "string", "format": "date"}, validate_formats=True)


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        ("2026-05-01T12:00:00Z", datetime(2026, 5, 1, 12, tzinfo=UTC)),
        ("2026-05-01t12:00:00z", datetime(2026, 5, 1, 12, tzinfo=UTC)),
        ("2026-05-01T12:00:00.123456789+02:00", datetime(2026, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)),
        ("2026-05-01T00:30:00-01:00", datetime(2026, 5, 1, 1, 30, tzinfo=UTC)),
        ("2024-02-29T00:00:00Z", datetime(2024, 2, 29, tzinfo=UTC)),
        ("2016-12-31T23:59:60Z", datetime(2017, 1, 1, tzinfo=UTC)),  # a leap second: the next second
        ("2017-01-01T00:59:60+01:00", datetime(2017, 1, 1, tzinfo=UTC)),
        ("0000-06-01T00:00:00Z", EARLIEST),  # RFC 3339 allows year 0000; a datetime starts at 0001
        ("0001-01-01T00:30:00+01:00", EARLIEST),
        ("9999-12-31T23:59:59-23:59", LATEST),
    ],
)
def test_rfc3339_date_times_are_read_as_utc_instants(text: str, instant: datetime) -> None:
    assert DATE_TIME.is_valid(text)
    assert parse_date_time(text) == instant


@pytest.mark.parametrize(
    "text",
    [
        "2026-05-01T12:00:00",  # no offset
        "2026-05-01 12:00:00Z",  # ISO 8601 allows the space, RFC 3339's grammar not
        "2026-05-01T12:00Z",  # no seconds
        "2026-05-01T12:00:00.Z",
        "2026-05-01T12:00:00+0200",
        "2026-05-01T12:00:00+24:00",
        "2026-05-01T24:00:00Z",
        "2026-05-01T12:00:60Z",  # a leap second that does not end a UTC day
        "2023-02-29T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "20260501T120000Z",
        "2026-W18-5T12:00:00Z",
        "\uff11\uff19\uff17\uff10-01-01T00:00:00Z",  # fullwidth digits: not ASCII
        "1714560000",  # Unix seconds
        "",
    ],
)
def test_anything_else_is_not_a_date_time(text: str) -> None:
    assert not DATE_TIME.is_valid(text)
    assert parse_date_time(text) is None


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        ("2026-05-01", datetime(2026, 5, 1, tzinfo=UTC)),
        ("2024-02-29", datetime(2024, 2, 29, tzinfo=UTC)),
        ("0000-02-29", EARLIEST),
        ("2026-02-30", None),
        ("2026-5-01", None),
        ("2026-05-01T00:00:00Z", None),
    ],
)
def test_dates_are_midnight_utc(text: str, instant: datetime | None) -> None:
    assert DATE.is_valid(text) is (instant is not None)
    assert parse_date(text) == instant
