"""Proof that a tenant controls a host name, before it routes on the shared ports: a DNS TXT record or an
HTTP token. ``OwnershipProof`` is the port; ``DnsHttpProof`` the real adapter (a TXT query to the configured
resolver over UDP, an HTTP GET to the name); tests pass their own resolver.

- DNS: ``_berth-challenge.<hostname>`` has a TXT record ``berth-verification=<token>``;
- HTTP: ``http://<hostname>/.well-known/berth-challenge/<claim id>`` answers 200 with the token as its body.
"""

from __future__ import annotations

import asyncio
import secrets
import struct
from pathlib import Path
from typing import Protocol

import httpx

TXT_PREFIX = "_berth-challenge."
TXT_VALUE_PREFIX = "berth-verification="
HTTP_PATH = "/.well-known/berth-challenge/"
TIMEOUT_SECONDS = 5.0


class OwnershipProof(Protocol):
    async def txt_records(self, name: str) -> list[str]:
        """The TXT strings of ``name`` (empty when there are none or the lookup failed)."""
        ...

    async def http_body(self, hostname: str, path: str) -> str | None:
        """The body of a 200 answer to GET http://hostname{path}, else None."""
        ...


def txt_name(hostname: str) -> str:
    return TXT_PREFIX + hostname


def txt_value(token: str) -> str:
    return TXT_VALUE_PREFIX + token


def http_path(claim_id: str) -> str:
    return HTTP_PATH + claim_id


def new_token() -> str:
    return secrets.token_urlsafe(24)


def system_resolver() -> tuple[str, int]:
    """The first nameserver of /etc/resolv.conf (127.0.0.1 when there is none)."""
    try:
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                return parts[1], 53
    except OSError:
        pass
    return "127.0.0.1", 53


class DnsHttpProof:
    """TXT records from ``resolver`` (host, port) over UDP; HTTP tokens with httpx."""

    def __init__(self, resolver: tuple[str, int] | None = None) -> None:
        self._resolver = resolver or system_resolver()

    async def txt_records(self, name: str) -> list[str]:
        """One TXT query (no recursion of our own: the resolver recurses)."""
        query_id = secrets.randbits(16)
        question = b"".join(bytes([len(label)]) + label.encode() for label in name.rstrip(".").split(".")) + b"\0"
        packet = struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + question + struct.pack("!HH", 16, 1)
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bytes] = loop.create_future()

        class _Query(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: object) -> None:
                if not answer.done() and data[:2] == packet[:2]:
                    answer.set_result(data)

            def error_received(self, exc: Exception) -> None:
                if not answer.done():
                    answer.set_exception(exc)

        transport, _ = await loop.create_datagram_endpoint(_Query, remote_addr=self._resolver)
        try:
            transport.sendto(packet)
            async with asyncio.timeout(TIMEOUT_SECONDS):
                data = await answer
        except (OSError, TimeoutError):
            return []
        finally:
            transport.close()
        return parse_txt_answer(data)

    async def http_body(self, hostname: str, path: str) -> str | None:
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS, follow_redirects=False) as client:
                answer = await client.get(f"http://{hostname}{path}")
        except httpx.HTTPError:
            return None
        return answer.text if answer.status_code == 200 else None


def parse_txt_answer(data: bytes) -> list[str]:
    """The TXT strings in a DNS answer (each record's character-strings joined)."""
    try:
        _, flags, questions, answers, _, _ = struct.unpack("!HHHHHH", data[:12])
        if flags & 0x000F:
            return []  # NXDOMAIN or another error
        offset = 12
        for _ in range(questions):
            offset = _skip_name(data, offset) + 4
        found = []
        for _ in range(answers):
            offset = _skip_name(data, offset)
            record_type, _, _, length = struct.unpack("!HHIH", data[offset : offset + 10])
            offset += 10
            if record_type == 16:
                strings, cursor = [], offset
                while cursor < offset + length:
                    size = data[cursor]
                    strings.append(data[cursor + 1 : cursor + 1 + size].decode(errors="replace"))
                    cursor += 1 + size
                found.append("".join(strings))
            offset += length
        return found
    except (struct.error, IndexError):
        return []


def _skip_name(data: bytes, offset: int) -> int:
    while True:
        size = data[offset]
        if size == 0:
            return offset + 1
        if size & 0xC0 == 0xC0:
            return offset + 2
        offset += 1 + size
