"""Keyset pagination and id parsing shared by every list route: cursors are opaque to clients."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import Any

from shared.errors import BadRequest

# Matches no row: an id that is not a UUID is simply not found, never a 500 or a 422.
NO_SUCH_ID = "00000000-0000-0000-0000-000000000000"


def parse_id(value: str) -> str:
    """``value`` as a canonical UUID, or an id that matches nothing."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return NO_SUCH_ID


_NOT_OURS = "The cursor is not one this API gave out; start again without it."


def _encode(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(cursor: str) -> str:
    return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()


def encode_cursor(row: dict[str, Any]) -> str:
    """The cursor that continues after ``row`` (ordered by created_at, id, newest first)."""
    return _encode(f"{row['created_at'].isoformat()}|{row['id']}")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) a cursor names; 400 for anything this API did not give out."""
    try:
        created, _, row_id = _decode(cursor).partition("|")
        return datetime.fromisoformat(created), str(uuid.UUID(row_id))
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadRequest(_NOT_OURS) from exc


def encode_sequence_cursor(kind: str, position: int) -> str:
    """The cursor that continues after ``position`` in a list ordered by a serial id (events, say)."""
    return _encode(f"{kind}|{position}")


def decode_sequence_cursor(kind: str, cursor: str) -> int:
    """The serial id a ``kind`` cursor continues after; 400 for anything this API did not give out."""
    try:
        found, _, position = _decode(cursor).partition("|")
        if found != kind or not position.isdigit() or len(position) > 18:
            raise ValueError(found)
        return int(position)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadRequest(_NOT_OURS) from exc
