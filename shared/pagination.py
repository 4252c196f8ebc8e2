"""Keyset pagination and id parsing shared by every list route: cursors are opaque to clients."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from shared.errors import BadRequest

Item = TypeVar("Item")

# Matches no row: an id that is not a UUID is simply not found, never a 500 or a 422.
NO_SUCH_ID = "00000000-0000-0000-0000-000000000000"


def parse_id(value: str) -> str:
    """``value`` as a canonical UUID, or an id that matches nothing."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return NO_SUCH_ID


_NOT_OURS = "The cursor is not one this API gave out; start again without it."

# Every string of these shapes is a cursor the API accepts (it may continue after nothing and answer an
# empty page); the OpenAPI document declares them as the cursor parameters' patterns, so a client or a
# fuzzer knows exactly which cursors are refused (400). A keyset cursor is "<microseconds since the
# epoch>.<row id as 32 hex digits>", a sequence cursor the serial id it continues after.
KEYSET_CURSOR_PATTERN = r"^[0-9]{1,16}\.[0-9a-f]{32}$"
SEQUENCE_CURSOR_PATTERN = r"^[0-9]{1,18}$"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def encode_cursor(row: dict[str, Any]) -> str:
    """The cursor that continues after ``row`` (ordered by created_at, id, newest first)."""
    micros = (row["created_at"] - _EPOCH) // _MICROSECOND
    return f"{micros}.{uuid.UUID(str(row['id'])).hex}"


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) a cursor names; 400 for anything this API did not give out."""
    if not re.fullmatch(KEYSET_CURSOR_PATTERN, cursor):
        raise BadRequest(_NOT_OURS)
    micros, _, row_id = cursor.partition(".")
    return _EPOCH + int(micros) * _MICROSECOND, str(uuid.UUID(row_id))


def encode_sequence_cursor(position: int) -> str:
    """The cursor that continues after ``position`` in a list ordered by a serial id (events, say)."""
    return str(position)


def decode_sequence_cursor(cursor: str) -> int:
    """The serial id a sequence cursor continues after; 400 for anything this API did not give out."""
    if not re.fullmatch(SEQUENCE_CURSOR_PATTERN, cursor):
        raise BadRequest(_NOT_OURS)
    return int(cursor)


def page_of(
    rows: list[dict[str, Any]],
    limit: int,
    item: Callable[[dict[str, Any]], Item],
    cursor_after: Callable[[dict[str, Any]], str] = encode_cursor,
) -> tuple[list[Item], str | None]:
    """One page from ``rows`` fetched with ``limit + 1`` (the extra row only says that more follow): the
    first ``limit`` as items, and the cursor after the last of them, or None on the last page."""
    more = len(rows) > limit
    rows = rows[:limit]
    return [item(row) for row in rows], cursor_after(rows[-1]) if more and rows else None
