"""HTTP mode end to end: keep-alive and pooling, forwarded headers, bodies both ways, error answers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys

import httpx
import pytest
from lb_runtime.hot_path import HotPathBuild

from tests.lb_runtime.support import listener, running_lb
from tests.support.ports import free_port
from tests.support.waiting import wait_until_async


async def test_keep_alive_reuses_one_upstream_connection(http_backends) -> None:
    # GIVEN one instance
    backend = await http_backends("a")
    async with running_lb({"listeners": [listener("web", [backend.instance])]}) as (runtime, _):
        url = f"http://127.0.0.1:{runtime.listener_port('web')}"
        # WHEN 50 sequential requests go over one client keep-alive connection
        async with httpx.AsyncClient(base_url=url) as client:
            answers = [await client.get("/") for _ in range(50)]
    # THEN all were served over a single pooled upstream connection
    assert [a.status_code for a in answers] == [200] * 50
    assert backend.requests == 50
    assert backend.connections == 1


async def test_pool_keeps_concurrent_connections_for_reuse(http_backends) -> None:
    backend = await http_backends("a")
    backend.delay = 0.05
    async with running_lb({"listeners": [listener("web", [backend.instance])]}, upstream_pool_size=8) as (rt, _):
        url = f"http://127.0.0.1:{rt.listener_port('web')}"
        async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=8)) as client:
            for _ in range(5):  # five waves of eight concurrent requests
                answers = await asyncio.gather(*(client.get("/") for _ in range(8)))
                assert all(a.status_code == 200 for a in answers)
    # the first wave opened (at most) eight upstream connections; later waves reused them
    assert backend.requests == 40
    assert backend.connections <= 8


def test_request_ids_are_unique_and_shaped_like_uuid_hex_past_every_256th(hot_path: HotPathBuild) -> None:
    module = sys.modules[hot_path.http_client_connection.__module__]
    ids = [module.next_request_id() for _ in range(3 * 256 + 7)]  # the stem changes every 256 ids
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(rb"[0-9a-f]{32}", request_id) for request_id in ids)
    counters = [int(request_id[20:], 16) for request_id in ids]  # after the process's random prefix
    assert {request_id[:20] for request_id in ids} == {module._REQUEST_ID_PREFIX}
    assert counters == list(range(counters[0], counters[0] + len(ids)))


async def test_forwarded_headers_request_id_and_hop_by_hop(http_backends) -> None:
    backend = await http_backends("a")
    async with running_lb({"listeners": [listener("web", [backend.instance])]}) as (runtime, _):
        url = f"http://127.0.0.1:{runtime.listener_port('web')}"
        async with httpx.AsyncClient(base_url=url) as client:
            plain = await client.get("/headers", headers={"X-Forwarded-Proto": "https"})
            chained = await client.get(
                "/headers",
                headers={
                    "X-Forwarded-For": "203.0.113.7",
                    "X-Request-Id": "req-from-client",
                    "Connection": "keep-alive, X-Private-Hop",
                    "X-Private-Hop": "secret",
                    "Keep-Alive": "timeout=5",
                },
            )
    seen = plain.json()
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"  # the edge states the protocol; a client's claim is dropped
    assert re.fullmatch(r"[0-9a-f]{32}", seen["x-request-id"])
    assert plain.headers["x-request-id"] == seen["x-request-id"]
    chained_seen = chained.json()
    assert chained_seen["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert chained_seen["x-request-id"] == "req-from-client"
    assert chained.headers["x-request-id"] == "req-from-client"
    # hop-by-hop headers, and those the client's Connection header named, stop at the proxy (both ways)
    assert "x-private-hop" not in chained_seen
    assert "keep-alive" not in chained_seen
    assert "keep-alive" not in chained.headers
    assert chained.headers["x-hop"] == "a"  # ordinary response headers pass


async def test_chunked_and_large_bodies_arrive_intact(http_backends) -> None:
    backend = await http_backends("a")
    async with running_lb({"listeners": [listener("web", [backend.instance])]}) as (runtime, _):
        url = f"http://127.0.0.1:{runtime.listener_port('web')}"
        pieces = [os.urandom(size) for size in (1, 5000, 65536, 300_000)]

        async def chunked_body():  # type: ignore[no-untyped-def]
            for piece in pieces:
                yield piece

        async with httpx.AsyncClient(base_url=url) as client:
            # a chunked request (httpx streams an async iterator as chunked) echoed as a chunked response
            echoed = await client.post("/echo", content=chunked_body())
            # a Content-Length request of 2 MB
            big = os.urandom(2 * 1024 * 1024)
            echoed_big = await client.post("/echo", content=big)
            # a close-delimited response is re-framed for the keep-alive client
            closed = await client.get("/close")
            after = await client.get("/")
    assert echoed.status_code == 200
    assert echoed.content == b"".join(pieces)
    assert echoed.headers["transfer-encoding"] == "chunked"
    assert echoed_big.content == big
    assert closed.content == b"0123456789" * 5000
    assert after.status_code == 200


async def test_head_request_gets_headers_only(http_backends) -> None:
    backend = await http_backends("a")
    async with running_lb({"listeners": [listener("web", [backend.instance])]}) as (runtime, _):
        url = f"http://127.0.0.1:{runtime.listener_port('web')}"
        async with httpx.AsyncClient(base_url=url) as client:
            head = await client.head("/")
            after = await client.get("/")
    assert head.status_code == 200
    assert head.content == b""
    assert after.text == "a"


async def test_pipelined_requests_are_answered_in_order(http_backends) -> None:
    backend = await http_backends("a")
    async with running_lb({"listeners": [listener("web", [backend.instance])]}) as (runtime, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", runtime.listener_port("web"))
        writer.write(b"GET /slow?s=0.1 HTTP/1.1\r\nHost: x\r\n\r\nGET /headers HTTP/1.1\r\nHost: x\r\n\r\n")
        first = await reader.readuntil(b"\r\n\r\na")
        second_head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", second_head).group(1))  # type: ignore[union-attr]
        second = json.loads(await reader.readexactly(length))
        writer.close()
    assert first.startswith(b"HTTP/1.1 200")
    assert second["host"] == "x"
    assert backend.paths == ["/slow", "/headers"]


def _url(runtime) -> str:  # type: ignore[no-untyped-def]
    return f"http://127.0.0.1:{runtime.listener_port('web')}"


async def _error_of(answer: httpx.Response, status: int, code: str) -> None:
    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert body["error"]["code"] == code
    assert body["error"]["request_id"] == answer.headers["x-request-id"]


async def test_502_when_the_instance_refuses() -> None:
    dead = {"id": "dead", "address": "127.0.0.1", "port": free_port()}
    lb = running_lb({"listeners": [listener("web", [dead])]})
    async with lb as (runtime, _), httpx.AsyncClient(base_url=_url(runtime)) as client:
        await _error_of(await client.get("/"), 502, "bad_gateway")


async def test_502_when_the_instance_answers_garbage() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        snapshot = {"listeners": [listener("web", [{"id": "g", "address": "127.0.0.1", "port": port}])]}
        lb = running_lb(snapshot)
        async with lb as (runtime, _), httpx.AsyncClient(base_url=_url(runtime)) as client:
            await _error_of(await client.get("/"), 502, "bad_gateway")
    finally:
        server.close()


async def test_an_instance_ending_header_lines_with_a_bare_lf_is_understood() -> None:
    # What a shell CGI script behind busybox httpd sends: its own header lines end with "\n" alone.
    async def cgi_like(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\n\nhello from cgi\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(cgi_like, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        snapshot = {"listeners": [listener("web", [{"id": "c", "address": "127.0.0.1", "port": port}])]}
        lb = running_lb(snapshot)
        async with lb as (runtime, _), httpx.AsyncClient(base_url=_url(runtime)) as client:
            for _ in range(2):  # close-delimited: re-sent chunked, and the client connection stays usable
                answer = await client.get("/")
                assert answer.status_code == 200
                assert answer.text == "hello from cgi\n"
                assert answer.headers["content-type"] == "text/plain"
    finally:
        server.close()


async def test_503_when_no_instance_is_healthy() -> None:
    lb = running_lb({"listeners": [listener("web", [])]})
    async with lb as (runtime, _), httpx.AsyncClient(base_url=_url(runtime)) as client:
        await _error_of(await client.get("/"), 503, "no_healthy_instance")


async def test_504_when_the_instance_does_not_answer_in_time(http_backends) -> None:
    backend = await http_backends("a")
    snapshot = {"listeners": [listener("web", [backend.instance])]}
    lb = running_lb(snapshot, read_timeout_seconds=0.3)
    async with lb as (runtime, _), httpx.AsyncClient(base_url=_url(runtime)) as client:
        await _error_of(await client.get("/hang"), 504, "upstream_timeout")
        # the listener still serves afterwards (lift the ejection the timeout put on the only instance)
        runtime.listeners["web"].balancer.backends[0].ejected_until = 0.0
        assert (await client.get("/")).status_code == 200


async def test_an_answer_that_keeps_coming_is_not_cut_and_one_that_stalls_is(http_backends) -> None:
    # GIVEN a read timeout of 0.5 s
    backend = await http_backends("a")
    snapshot = {"listeners": [listener("web", [backend.instance])]}
    lb = running_lb(snapshot, read_timeout_seconds=0.5)
    async with lb as (runtime, _), httpx.AsyncClient(base_url=_url(runtime), timeout=10) as client:
        # WHEN an answer comes in parts 0.2 s apart for 1.2 s: each part moves the deadline
        answer = await client.get("/trickle?every=0.2&parts=6")
        assert (answer.status_code, answer.content) == (200, b"0123456789" * 6)
        # WHEN the instance stops partway: the proxy cuts the client's connection at the timeout (a read timeout
        # of the client's own, 10 s, would show the proxy waited)
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/trickle?every=0.2&parts=2&stall=1")


async def test_bounds_malformed_and_oversized_requests_get_4xx_json(http_backends) -> None:
    backend = await http_backends("a")
    snapshot = {"listeners": [listener("web", [backend.instance])]}
    lb = running_lb(snapshot, max_header_bytes=2048)
    async with lb as (runtime, _), httpx.AsyncClient(base_url=_url(runtime)) as client:
        too_big = await client.get("/", headers={"X-Big": "x" * 4096})
        reader, writer = await asyncio.open_connection("127.0.0.1", runtime.listener_port("web"))
        writer.write(b"NONSENSE\r\n\r\n")
        malformed = await reader.read()
        writer.close()
    assert too_big.status_code == 431
    assert too_big.json()["error"]["code"] == "headers_too_large"
    assert malformed.startswith(b"HTTP/1.1 400")
    assert b'"bad_request"' in malformed
    assert backend.requests == 0


async def test_max_connections_refuses_the_excess(http_backends) -> None:
    backend = await http_backends("a")
    async with running_lb({"listeners": [listener("web", [backend.instance])]}, max_connections=2) as (runtime, _):
        port = runtime.listener_port("web")
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        state = runtime.listeners["web"]
        await wait_until_async(lambda: len(state.connections) == 2, message="the proxy did not accept both")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        refused = await reader.read()
        writer.close()
        for _, held_writer in held:
            held_writer.close()
    assert refused.startswith(b"HTTP/1.1 503")
    assert b"too many connections" in refused


async def test_client_half_close_still_gets_its_answer(http_backends) -> None:
    # GIVEN a client that sends one request and half-closes its side at once (as `nc -N` does)
    backend = await http_backends("a")
    async with running_lb({"listeners": [listener("web", [backend.instance])]}) as (runtime, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", runtime.listener_port("web"))
        writer.write(b"GET /slow?s=0.1 HTTP/1.1\r\nHost: x\r\n\r\n")
        writer.write_eof()
        # THEN the answer still arrives, and the proxy closes the connection after it
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.endswith(b"\r\n\r\na")


async def test_http10_client_gets_an_unchunked_answer(http_backends) -> None:
    # GIVEN an HTTP/1.0 client (no chunked encoding allowed) and an instance answering chunked
    backend = await http_backends("a")
    async with running_lb({"listeners": [listener("web", [backend.instance])]}) as (runtime, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", runtime.listener_port("web"))
        writer.write(b"POST /echo HTTP/1.0\r\nContent-Length: 20000\r\n\r\n" + b"z" * 20000)
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    # THEN the body arrives de-chunked and delimited by the connection closing
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head.lower()
    assert b"connection: close" in head.lower()
    assert body == b"z" * 20000
