"""Instants as the API takes them in query parameters: exactly what the document's `format: date-time`
(RFC 3339, section 5.6) and `format: date` allow, nothing looser.

A date-time is `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`: `T` and `Z` in either case, any number of
fraction digits (read to the microsecond), an offset always (no local times), a leap second only where the
UTC time is 23:59:60 (read as the next second). A date is `YYYY-MM-DD`, read as midnight UTC. Days are checked
against their month (29 February only in leap years). What RFC 3339 allows beyond what a `datetime` holds
(year 0000, or an offset that carries a time past year 9999) is clamped to the first or last instant a
`datetime` holds, so every instant the format allows is answered, never refused. Anything else is ``None``:
the caller answers 422. Python's ``datetime.fromisoformat`` is looser (a space, no offset, week dates, basic
format) and is not used here.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta

_DATE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))", re.ASCII
)
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})", re.ASCII)
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)
# 0001-01-01T00:00:00Z, in seconds since the proleptic Gregorian 0000-01-01T00:00:00Z (a leap year: 366 days).
_EARLIEST_SECONDS = 366 * 86400


def _valid_day(year: int, month: int, day: int) -> bool:
    if not 1 <= month <= 12:
        return False
    # Year 0000 is a leap year in the proleptic Gregorian calendar, as 2000 is (calendar handles year >= 1).
    days = 29 if month == 2 and (year == 0 or calendar.isleap(year)) else calendar.monthrange(2001, month)[1]
    return 1 <= day <= days


def _seconds_since_year_zero(year: int, month: int, day: int) -> int:
    """Midnight of the day, in seconds since 0000-01-01T00:00:00Z (year 0 included)."""
    if year == 0:
        return (datetime(2000, month, day) - datetime(2000, 1, 1)).days * 86400  # 2000 is a leap year, as 0 is
    return _EARLIEST_SECONDS + (datetime(year, month, day) - datetime(1, 1, 1)).days * 86400


def _instant(seconds: int, microseconds: int) -> datetime:
    """``seconds`` since 0000-01-01T00:00:00Z and ``microseconds``, clamped to the range a datetime holds."""
    if seconds < _EARLIEST_SECONDS:
        return EARLIEST
    try:
        return EARLIEST + timedelta(seconds=seconds - _EARLIEST_SECONDS, microseconds=microseconds)
    except OverflowError:
        return LATEST


def parse_date_time(text: str) -> datetime | None:
    """The UTC instant of an RFC 3339 date-time, or None when ``text`` is not one."""
    match = _DATE_TIME.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.group(1, 2, 3, 4, 5, 6))
    fraction, zulu, sign, offset_hours, offset_minutes = match.group(7, 8, 9, 10, 11)
    if not _valid_day(year, month, day) or hour > 23 or minute > 59 or second > 60:
        return None
    offset = 0
    if not zulu:
        if int(offset_hours) > 23 or int(offset_minutes) > 59:
            return None
        offset = (int(offset_hours) * 60 + int(offset_minutes)) * 60 * (1 if sign == "+" else -1)
    local = _seconds_since_year_zero(year, month, day) + hour * 3600 + minute * 60 + second
    utc = local - offset
    if second == 60 and utc % 86400 != 0:  # a leap second ends a UTC day: 23:59:60Z, read as the next midnight
        return None
    microseconds = int((fraction or "0")[:6].ljust(6, "0"))
    return _instant(utc, microseconds)


def parse_date(text: str) -> datetime | None:
    """Midnight UTC of an RFC 3339 full-date (`YYYY-MM-DD`), or None when ``text`` is not one."""
    match = _DATE.fullmatch(text)
    if match is None:
        return None
    year, month, day = (int(part) for part in match.groups())
    if not _valid_day(year, month, day):
        return None
    return _instant(_seconds_since_year_zero(year, month, day), 0)
