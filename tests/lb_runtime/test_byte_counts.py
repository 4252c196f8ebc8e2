"""Byte counts: every listener counts the bytes on its clients' connections (``bytes_in`` received from them,
``bytes_out`` written to them; over TLS the HTTP bytes, not the records) and every instance the bytes on the
connections to it (``bytes_in`` sent to it, ``bytes_out`` received from it), in HTTP, HTTPS and TCP mode; /stats
and /metrics show them.

Each count is checked against what the other end measured itself: the client counts what it wrote and what
it read to the end of the connection, the instance what it read and wrote. They differ between the two sides
by what the proxy rewrites (forwarded headers added, hop-by-hop headers dropped, bodies re-chunked), so each
side is compared with its own end, exactly.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.lb_runtime.support import TcpEchoBackend, listener, running_lb
from tests.lb_runtime.test_https import client_context, https_listener
from tests.support.certificates import make_ca

LENGTH_BODY = os.urandom(3000)
CHUNKS = (os.urandom(100), os.urandom(2500))
ANSWER_BODY = os.urandom(4000)
CHUNKED_ANSWER = (os.urandom(1024), os.urandom(333))
# Three requests, pipelined on one connection: a Content-Length upload, a chunked upload, and a GET whose
# answer is chunked and which closes the connection (so the client reads its answers to the end).
REQUESTS = b"".join(
    (
        b"POST /upload HTTP/1.1\r\nHost: web\r\nContent-Length: %d\r\n\r\n%s" % (len(LENGTH_BODY), LENGTH_BODY),
        b"POST /upload HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n",
        *(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in CHUNKS),
        b"0\r\n\r\n",
        b"GET /chunked HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n",
    )
)


@dataclass
class CountingBackend:
    """An HTTP/1.1 instance that counts every byte it reads and writes: a Content-Length answer of
    ANSWER_BODY, or on /chunked a chunked one of CHUNKED_ANSWER."""

    port: int = 0
    received: int = 0
    sent: int = 0
    server: asyncio.Server | None = None

    async def start(self) -> CountingBackend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    @property
    def instance(self) -> dict[str, Any]:
        return {"id": "counted", "address": "127.0.0.1", "port": self.port}

    async def _read(self, reader: asyncio.StreamReader, size: int | None = None) -> bytes:
        data = await (reader.readuntil(b"\r\n") if size is None else reader.readexactly(size))
        self.received += len(data)
        return data

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.received += len(head)
                lines = head.decode("latin-1").lower().split("\r\n")
                headers = dict(line.split(": ", 1) for line in lines[1:] if line)
                if "content-length" in headers:
                    await self._read(reader, int(headers["content-length"]))
                elif headers.get("transfer-encoding") == "chunked":
                    while size := int(await self._read(reader), 16):
                        await self._read(reader, size + 2)
                    await self._read(reader, 2)
                if lines[0].split(" ")[1] == "/chunked":
                    pieces = (b"%x\r\n%s\r\n" % (len(piece), piece) for piece in CHUNKED_ANSWER)
                    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(pieces) + b"0\r\n\r\n"
                else:
                    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Hop: a\r\n\r\n%s" % (
                        len(ANSWER_BODY),
                        ANSWER_BODY,
                    )
                self.sent += len(answer)
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def exchange(port: int, data: bytes, context: ssl.SSLContext | None = None) -> bytes:
    """Write ``data`` on a new connection (over TLS with ``context``), then read until the proxy closes it."""
    tls: dict[str, Any] = {"ssl": context, "server_hostname": "shop.example"} if context else {}
    reader, writer = await asyncio.open_connection("127.0.0.1", port, **tls)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


Counters = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def admin_figures(admin_port: int, listener_id: str) -> tuple[dict[str, Any], Counters]:
    """The listener's /stats and its byte counters from /metrics (by metric name and labels)."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{admin_port}") as admin:
        stats = (await admin.get("/stats", params={"listener": listener_id})).json()
        metrics = (await admin.get("/metrics")).text
    counters: Counters = {}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name.endswith("_bytes_total") and sample.labels.get("listener") == listener_id:
                counters[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return stats, counters


def metric(name: str, listener_id: str, instance: str | None = None) -> tuple[str, frozenset[tuple[str, str]]]:
    labels = {"listener": listener_id} | ({"instance": instance} if instance is not None else {})
    return name, frozenset(labels.items())


def assert_counted(
    stats: dict[str, Any],
    counters: Counters,
    client: tuple[int, int],
    instance: tuple[int, int],
) -> None:
    """The listener counted ``client`` (bytes the client wrote, bytes it read) and the instance ``instance``
    (bytes it read, bytes it wrote), in /stats and in /metrics."""
    [counted] = stats["instances"]
    assert (stats["bytes_in"], stats["bytes_out"]) == client
    assert (counted["bytes_in"], counted["bytes_out"]) == instance
    listener_id, instance_id = stats["id"], counted["id"]
    assert counters[metric("berth_lb_received_bytes_total", listener_id)] == client[0]
    assert counters[metric("berth_lb_sent_bytes_total", listener_id)] == client[1]
    assert counters[metric("berth_lb_upstream_sent_bytes_total", listener_id, instance_id)] == instance[0]
    assert counters[metric("berth_lb_upstream_received_bytes_total", listener_id, instance_id)] == instance[1]


async def test_http_counts_the_bytes_of_each_side_exactly() -> None:
    # GIVEN an HTTP listener in front of an instance that counts what it reads and writes
    backend = await CountingBackend().start()
    try:
        async with running_lb({"listeners": [listener("web", [backend.instance])]}) as (runtime, _):
            # WHEN a client sends a Content-Length upload, a chunked upload and a GET, on one connection
            answers = await exchange(runtime.listener_port("web"), REQUESTS)
            stats, counters = await admin_figures(runtime.admin_port, "web")
    finally:
        await backend.stop()
    # THEN all three were answered, the listener counted exactly what the client sent and read, and the
    # instance exactly what it read and wrote
    assert answers.count(b"HTTP/1.1 200 OK\r\n") == 3
    assert ANSWER_BODY in answers
    assert_counted(stats, counters, (len(REQUESTS), len(answers)), (backend.received, backend.sent))
    # AND the two sides differ by what the proxy adds: X-Forwarded-* and X-Request-Id to each request, the
    # request id and Connection to each answer
    assert backend.received > len(REQUESTS)
    assert len(answers) > backend.sent


async def test_https_counts_the_http_bytes_not_the_tls_records() -> None:
    # GIVEN an https listener in front of the counting instance
    ca = make_ca()
    backend = await CountingBackend().start()
    try:
        snapshot = {"listeners": [https_listener("secure", [backend.instance], ca.issue("shop.example"))]}
        async with running_lb(snapshot) as (runtime, _):
            # WHEN the same three requests arrive over TLS
            answers = await exchange(runtime.listener_port("secure"), REQUESTS, client_context(ca))
            stats, counters = await admin_figures(runtime.admin_port, "secure")
    finally:
        await backend.stop()
    # THEN the listener counted the decrypted HTTP bytes both ways (no handshake, no record overhead)
    assert answers.count(b"HTTP/1.1 200 OK\r\n") == 3
    assert_counted(stats, counters, (len(REQUESTS), len(answers)), (backend.received, backend.sent))


async def test_tcp_counts_the_stream_both_ways() -> None:
    # GIVEN a TCP listener in front of an echo instance (which adds "total=N" once the client half-closes)
    echo = await TcpEchoBackend().start()
    instance = {"id": "echo", "address": "127.0.0.1", "port": echo.port}
    payload = os.urandom(200_000)
    try:
        async with running_lb({"listeners": [listener("raw", [instance], protocol="tcp")]}) as (runtime, _):
            # WHEN a client sends 200,000 bytes, half-closes and reads to the end
            reader, writer = await asyncio.open_connection("127.0.0.1", runtime.listener_port("raw"))
            writer.write(payload)
            writer.write_eof()
            received = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            stats, counters = await admin_figures(runtime.admin_port, "raw")
    finally:
        await echo.stop()
    # THEN every byte is counted once each way, on the listener and on the instance alike
    assert received == payload + b"total=%d" % len(payload)
    assert_counted(stats, counters, (len(payload), len(received)), (len(payload), len(received)))
