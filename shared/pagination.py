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


def encode_cursor(row: dict[str, Any]) -> str:
    """The cursor that continues after ``row`` (ordered by created_at, id, newest first)."""
    raw = f"{row['created_at'].isoformat()}|{row['id']}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) a cursor names; 400 for anything this API did not give out."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, _, row_id = raw.partition("|")
        return datetime.fromisoformat(created), str(uuid.UUID(row_id))
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadRequest("The cursor is not one this API gave out; start again without it.") from exc
