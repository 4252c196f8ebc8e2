"""A DNS resolver of the test's own for proofs of host-name ownership: it answers TXT queries from a table it
holds (``records``: name -> strings) and NXDOMAIN for anything else, on 127.0.0.1, so no test query leaves the
machine. ``LocalResolver`` is the asyncio protocol (for tests that run a loop); ``resolver_thread`` serves one
on a fixed port from a thread of its own (for tests whose server processes were told the port at start)."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from collections.abc import Iterator
from typing import Any


class LocalResolver(asyncio.DatagramProtocol):
    """Answers TXT queries from ``records`` (name -> strings); NXDOMAIN for anything else."""

    def __init__(self) -> None:
        self.records: dict[str, list[str]] = {}
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        labels, offset = [], 12
        while data[offset]:
            labels.append(data[offset + 1 : offset + 1 + data[offset]].decode())
            offset += 1 + data[offset]
        question = data[12 : offset + 5]
        strings = self.records.get(".".join(labels), [])
        flags = 0x8180 if strings else 0x8183  # a response; NXDOMAIN when there is no record
        header = data[:2] + struct.pack("!HHHHH", flags, 1, len(strings), 0, 0)
        answers = b""
        for text in strings:
            payload = bytes([len(text)]) + text.encode()
            answers += b"\xc0\x0c" + struct.pack("!HHIH", 16, 1, 60, len(payload)) + payload
        self.transport.sendto(header + question + answers, addr)


@contextlib.contextmanager
def resolver_thread(port: int) -> Iterator[LocalResolver]:
    """A ``LocalResolver`` on 127.0.0.1:``port`` (UDP), served by an event loop in a thread until the end."""
    loop = asyncio.new_event_loop()
    resolver = LocalResolver()
    transport, _ = loop.run_until_complete(
        loop.create_datagram_endpoint(lambda: resolver, local_addr=("127.0.0.1", port))
    )
    thread = threading.Thread(target=loop.run_forever, name="test-dns-resolver", daemon=True)
    thread.start()
    try:
        yield resolver
    finally:
        loop.call_soon_threadsafe(transport.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()
