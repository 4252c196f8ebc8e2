"""Length-prefixed JSON frames: how the gateway and a function instance talk over their socket pair.

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON. It is the cheapest IPC
that keeps an instance a separate process: one write and one read per direction per invocation.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Any

HEADER = struct.Struct(">I")
# Lambda's synchronous payload limit is 6 MB each way; leave room for base64 and the event's envelope.
MAX_FRAME_BYTES = 64 * 1024 * 1024


class FrameError(Exception):
    """The peer sent something that is not a frame (too large, not JSON)."""


def encode_frame(message: Any) -> bytes:
    payload = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    if len(payload) > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {len(payload)} bytes exceeds {MAX_FRAME_BYTES}")
    return HEADER.pack(len(payload)) + payload


def decode_payload(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError as exc:
        raise FrameError("frame is not JSON") from exc


async def read_frame(reader: asyncio.StreamReader) -> Any:
    """The next frame from ``reader``; ``asyncio.IncompleteReadError`` when the peer is gone."""
    (length,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    if length > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {length} bytes exceeds {MAX_FRAME_BYTES}")
    return decode_payload(await reader.readexactly(length))


def send_frame(sock: socket.socket, message: Any) -> None:
    sock.sendall(encode_frame(message))
