"""HTTP/1.1 mode: keep-alive on both sides, an idle upstream connection pool per instance, bodies streamed.

Everything on the hot path is a callback of a low-level asyncio Protocol (no task per request, no
per-request logging): a request whose instance has an idle pooled connection is forwarded synchronously
from the parser's callbacks. Only a new upstream connection needs a task (the connect is awaited).

An instance may answer ``Berth-Replay: region=<r>`` (listeners with a region policy): its answer is dropped
and the request is sent again to an instance of region r, carrying ``Berth-Replayed-From: <its region>``.
Only once per request (a second ``Berth-Replay`` goes to the client as it is), only for GET, HEAD, OPTIONS,
PUT and DELETE whose body is at most ``MAX_REPLAY_BODY`` (a copy is kept while the request is in flight; the
request must have been received whole), and only when region r has an instance taking traffic; in every
other case the instance's answer, ``Berth-Replay`` header included, goes to the client unchanged. Answers
without the header pay one bytes comparison per header line.

This module is also compiled with Cython (``http_proxy.pxd`` declares its classes as extension types; see
``hot_path.py``): an attribute added to a class here must be declared there too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
from http import HTTPStatus
from time import perf_counter
from typing import TYPE_CHECKING, Any

import httptools

from lb_runtime.http_head import parse_request, parse_response

try:
    import cython

    # Whole simple messages are read in one call (lb_runtime.http_head) in the compiled build only: in pure
    # Python that costs more than httptools' callbacks, which stay the parser for everything else.
    FAST_HEADS = bool(cython.compiled)
except ImportError:  # a machine without Cython runs the pure-Python build only
    FAST_HEADS = False

if TYPE_CHECKING:
    from lb_runtime.backends import Backend
    from lb_runtime.listeners import ListenerState

# Hop-by-hop headers (RFC 9110 7.6.1) never cross the proxy; framing is re-made on each side.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
_REQUEST_ID_PREFIX = os.urandom(10).hex().encode()
_request_counter = 0
# The counter's last two hex digits come from a table; the rest (the stem) is formatted once per 256 ids.
_HEX2 = tuple(b"%02x" % low for low in range(256))
_request_id_stem = _REQUEST_ID_PREFIX + b"%010x" % 0
MAX_BUFFERED_BODY = 256 * 1024
# Berth-Replay (see the module docstring): the methods replayed, and the most body kept to send again.
REPLAYABLE = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE"})
MAX_REPLAY_BODY = 64 * 1024
# Status lines with the standard reason phrases (the upstream's own phrase is not kept: one callback less).
STATUS_LINES = {status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode()) for status in HTTPStatus}
_PAUSE_PIPELINE = 1
_PAUSE_UPSTREAM = 2
_PAUSE_CONNECTING = 4


_connecting: set[asyncio.Task[None]] = set()


def keep_task(task: asyncio.Task[None]) -> None:
    """Hold a reference to a connect task until it ends (the loop keeps only a weak one)."""
    _connecting.add(task)
    task.add_done_callback(_connecting.discard)


class HeadersTooLarge(Exception):
    """The request's line and headers exceed the configured bound."""


def next_request_id() -> bytes:
    """A request id unique in this process (random prefix, counter), shaped like the project's uuid hex ids."""
    global _request_counter, _request_id_stem
    _request_counter += 1
    low = _request_counter & 0xFF
    if low == 0:
        _request_id_stem = _REQUEST_ID_PREFIX + b"%010x" % ((_request_counter >> 8) & 0xFFFFFFFFFF)
    return _request_id_stem + _HEX2[low]


def replay_region(value: bytes) -> str:
    """The region a ``Berth-Replay`` header names (``region=<r>``, other parameters after ``;`` ignored)."""
    for part in value.split(b";"):
        key, _, name = part.partition(b"=")
        if key.strip().lower() == b"region":
            return name.strip().decode("ascii", "replace").lower()
    return ""


def error_response(status: int, code: str, message: str, request_id: bytes, *, close: bool) -> bytes:
    """A complete HTTP/1.1 response with the project's JSON error body."""
    body = json.dumps({"error": {"code": code, "message": message, "request_id": request_id.decode()}}).encode()
    reason = {
        400: b"Bad Request",
        431: b"Request Header Fields Too Large",
        502: b"Bad Gateway",
        503: b"Service Unavailable",
        504: b"Gateway Timeout",
    }.get(status, b"Error")
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\n" % (status, reason),
            b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body),
            b"X-Request-Id: %s\r\n" % request_id,
            b"Connection: close\r\n\r\n" if close else b"\r\n",
            body,
        )
    )


class RequestCycle:
    """One request and its response, from the client's headers to the last byte of the answer."""

    __slots__ = (
        "backend",
        "body",
        "body_sent",
        "body_size",
        "chunked",
        "head",
        "http10",
        "keep_alive",
        "kept",
        "method",
        "refusal",
        "region",
        "replayed",
        "request_complete",
        "request_id",
        "response_mode",
        "response_started",
        "retried",
        "started",
        "status",
        "tried",
        "upstream",
    )

    def __init__(self) -> None:
        self.method = b""
        self.head = b""
        # The body read before an upstream connection took the request (None: nothing buffered). Like ``tried``,
        # made only when needed: most requests have no body and are never retried.
        self.body: list[bytes] | None = None
        self.body_size = 0
        self.body_sent = False
        self.chunked = False
        self.keep_alive = True
        self.http10 = False
        self.request_complete = False
        self.request_id = b""
        self.backend: Backend | None = None
        self.upstream: UpstreamConnection | None = None
        self.response_started = False
        self.response_mode = 0  # 0 length-delimited or none, 1 chunked to the client, 2 close-delimited
        self.status = 0
        self.started = 0.0
        self.retried = False
        self.tried: tuple[Backend, ...] = ()
        # Answered without an instance (shared port: unknown or switched host, or a redirect to https).
        self.refusal: tuple[int, str, str] | None = None
        # The region this request prefers (listeners with a region policy, lb_runtime.regions); None: default.
        self.region: str | None = None
        # Berth-Replay: the body sent so far (replayable methods, up to MAX_REPLAY_BODY), and whether the
        # request was replayed already (once only).
        self.kept: list[bytes] | None = None
        self.replayed = False


class HttpClientConnection:
    """One client connection to an HTTP listener: parses requests, forwards them, streams answers back.

    An asyncio Protocol by duck typing (no base class), so that the compiled build can make it an extension type.
    """

    def __init__(self, listener: ListenerState) -> None:
        self.listener = listener  # on a shared port: the route of the connection's host, once known
        self.front = listener  # the listener whose port the client connected to
        # ``listener.stats``, kept here typed: the byte counts are a C add per read and per write when compiled.
        self.stats = listener.stats
        # Shared port or redirect: each request is looked at (by _route) before it is forwarded.
        self.routed = listener.routes is not None or listener.redirect_port is not None
        self.host = b""
        self.routed_host = b""
        self.settings = listener.settings
        self.loop = listener.loop
        self.transport: Any = None
        self.parser = httptools.HttpRequestParser(self)
        self.client_ip = b""
        self.queue: list[RequestCycle] = []  # requests received, the first one being served
        self.parsing: RequestCycle | None = None
        # httptools holds no part of a message (the next read may be a whole request for http_head).
        self.boundary = True
        self.headers: list[bytes] = []
        self.url = b""
        self.header_bytes = 0
        self.max_header_bytes = self.settings.max_header_bytes
        self.idle_timeout = self.settings.client_idle_timeout_seconds
        self.forwarded_for = b""
        self.prefer_region = b""
        self.incoming_request_id = b""
        self.connection_tokens = b""
        self.closed = False
        self.read_paused = 0
        self.write_paused = False
        self.deadline = 0.0
        # While an upstream read is parsed, answers collect here and go out in one write (head and body).
        self.buffering = False
        self.out: list[bytes] = []
        self.client_eof = False

    # --- connection life -------------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        listener = self.listener
        listener.connections.add(self)
        listener.stats.connections_total += 1
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0].encode() if peer else b""
        if len(listener.connections) > self.settings.max_connections or listener.closing:
            answer = error_response(503, "overloaded", "too many connections", next_request_id(), close=True)
            self.stats.bytes_out += len(answer)
            transport.write(answer)
            self.close()
            return
        self.deadline = self.loop.time() + self.idle_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.listener.connections.discard(self)
        for cycle in self.queue:
            self._abandon(cycle)
        self.queue.clear()
        self.listener.connection_closed()

    def _abandon(self, cycle: RequestCycle) -> None:
        # The client is gone: an upstream mid-response cannot be reused.
        upstream = cycle.upstream
        if upstream is not None:
            upstream.client = None
            upstream.cycle = None
            upstream.close()
            cycle.upstream = None
        if cycle.backend is not None:
            cycle.backend.active -= 1
            cycle.backend = None

    def close(self) -> None:
        if not self.closed:
            if self.out:
                self.flush()
            self.closed = True
            self.transport.close()

    def write(self, data: bytes) -> None:
        if self.buffering:
            self.out.append(data)  # counted when the buffer is written
        else:
            self.stats.bytes_out += len(data)
            self.transport.write(data)

    def flush(self) -> None:
        """Send what the upstream's answer produced during one read, in one write."""
        out = self.out
        if out:
            self.out = []
            if not self.closed:
                data = out[0] if len(out) == 1 else b"".join(out)
                self.stats.bytes_out += len(data)
                self.transport.write(data)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.queue and self.queue[0].upstream is not None:
            self.queue[0].upstream.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.queue and self.queue[0].upstream is not None:
            self.queue[0].upstream.resume_reading()

    def pause_reading(self, reason: int) -> None:
        if not self.read_paused and not self.closed:
            self.transport.pause_reading()
        self.read_paused |= reason

    def resume_reading(self, reason: int) -> None:
        if self.read_paused & reason:
            self.read_paused &= ~reason
            if not self.read_paused and not self.closed:
                self.transport.resume_reading()

    def eof_received(self) -> bool:
        # A client may half-close after its request: answer what is in flight, then close.
        self.client_eof = True
        return bool(self.queue)

    def data_received(self, data: bytes) -> None:
        if self.boundary and FAST_HEADS:
            head = parse_request(data, self.max_header_bytes)
            if head is not None:
                self._whole_request(head)
                self.stats.bytes_in += len(data)
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrades are not proxied: the Upgrade header was stripped and the request forwarded as is; the
            # parser reads nothing more, and neither does the fast path.
            self.boundary = False
        except httptools.HttpParserError as exc:
            # httptools wraps an exception raised in a callback; the original is its context.
            if isinstance(exc.__context__, HeadersTooLarge):
                self._reject(431, "headers_too_large", "request line and headers are too large")
            else:
                self._reject(400, "bad_request", "malformed HTTP request")
        # Counted after parsing: on a shared port the first request has bound the connection to its route.
        self.stats.bytes_in += len(data)

    def _reject(self, status: int, code: str, message: str) -> None:
        if self.queue and self.queue[0].response_started:
            self.close()
            return
        for cycle in self.queue:
            self._abandon(cycle)
        self.queue.clear()
        if not self.closed:
            answer = error_response(status, code, message, next_request_id(), close=True)
            self.stats.bytes_out += len(answer)
            self.transport.write(answer)
        self.close()

    def drain(self) -> None:
        """Stop taking requests on this connection: close now if idle, else after the current answer."""
        if not self.queue and self.parsing is None:
            self.close()

    def check_deadline(self, now: float) -> None:
        """Called by the listener's sweeper: enforce idle and upstream read timeouts."""
        if self.queue:
            upstream = self.queue[0].upstream
            if upstream is not None and upstream.deadline and upstream.deadline < now:
                self._upstream_timed_out(self.queue[0])
        elif self.deadline and self.deadline < now:
            self.close()

    # --- request parsing (httptools callbacks) ------------------------------------------------------------

    def on_message_begin(self) -> None:
        # The idle deadline set when the connection went idle also bounds how long the headers may take.
        self.boundary = False
        self.parsing = RequestCycle()
        self.headers = []
        self.url = b""
        self.header_bytes = 0
        self.forwarded_for = b""
        self.prefer_region = b""
        self.incoming_request_id = b""
        self.connection_tokens = b""
        self.host = b""

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.header_bytes += len(url)
        if self.header_bytes > self.max_header_bytes:
            raise HeadersTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > self.max_header_bytes:
            raise HeadersTooLarge
        lower = name.lower()
        if lower in HOP_BY_HOP:
            if lower == b"transfer-encoding":
                assert self.parsing is not None
                self.parsing.chunked = b"chunked" in value.lower()
            elif lower == b"connection":
                self.connection_tokens += b"," + value.lower()
        elif lower == b"x-forwarded-for":
            self.forwarded_for = value
        elif lower == b"x-request-id":
            self.incoming_request_id = value
        elif lower == b"x-forwarded-proto":
            pass  # this proxy is the edge: it states the protocol itself
        else:
            if lower == b"host":
                self.host = value
            elif lower == b"berth-prefer-region":
                self.prefer_region = value
            self.headers.append(name + b": " + value + b"\r\n")

    def on_headers_complete(self) -> None:
        cycle = self.parsing
        assert cycle is not None
        parser = self.parser
        headers = self.headers
        if self.connection_tokens:
            headers = self._without_connection_listed(headers, self.connection_tokens)
        self._head_complete(cycle, parser.get_method(), parser.get_http_version() == "1.0", b"".join(headers))

    def _whole_request(self, head: tuple[bytes, bytes, bool, bytes, bytes, bytes, bytes, bytes, bytes, int]) -> None:
        """A whole request without a body read by http_head: what httptools' callbacks would have done."""
        method, url, http10, tokens, lines, host, forwarded_for, request_id, prefer_region, header_bytes = head
        self.url = url
        self.connection_tokens = tokens
        self.host = host
        self.forwarded_for = forwarded_for
        self.incoming_request_id = request_id
        self.prefer_region = prefer_region
        self.header_bytes = header_bytes
        cycle = RequestCycle()
        self.parsing = cycle
        self._head_complete(cycle, method, http10, lines)
        # The message is complete as well (http_head keeps alive exactly where should_keep_alive() would).
        self.parsing = None
        cycle.request_complete = True

    def _head_complete(self, cycle: RequestCycle, method: bytes, http10: bool, lines: bytes) -> None:
        """The request's head is read (``lines``: the header lines to forward): forward it or queue it."""
        cycle.method = method
        tokens = self.connection_tokens
        # bytes.find, not ``in``: CPython's ``in`` on bytes first tries the operand as an int and formats an
        # exception it then drops (a quarter of a microsecond); most requests carry no tokens at all
        if http10:
            cycle.http10 = True
            cycle.keep_alive = bool(tokens) and tokens.find(b"keep-alive") >= 0
        else:
            cycle.keep_alive = not tokens or tokens.find(b"close") < 0
        request_id = self.incoming_request_id or next_request_id()
        cycle.request_id = request_id
        forwarded = self.forwarded_for + b", " + self.client_ip if self.forwarded_for else self.client_ip
        cycle.head = b"".join(
            (
                method,
                b" ",
                self.url,
                b" HTTP/1.1\r\n",
                lines,
                b"X-Forwarded-For: ",
                forwarded,
                b"\r\nX-Forwarded-Proto: ",
                self.listener.scheme,
                b"\r\nX-Request-Id: ",
                request_id,
                b"\r\nTransfer-Encoding: chunked\r\n\r\n" if cycle.chunked else b"\r\n\r\n",
            )
        )
        cycle.started = perf_counter()
        self.deadline = 0.0
        if self.routed:
            self._route(cycle)
        regional = self.listener.regional
        if regional is not None:
            cycle.region = regional.request_region(self.client_ip, self.forwarded_for, self.prefer_region)
        self.queue.append(cycle)
        if len(self.queue) == 1:
            self._start(cycle)
        else:
            self.pause_reading(_PAUSE_PIPELINE)  # pipelined: answer in order, one at a time

    def _route(self, cycle: RequestCycle) -> None:
        """Shared port: bind the connection to the route its first request's Host names; a later request for
        another host, or an unknown host, is refused (a connection never reaches another tenant's service)."""
        front = self.front
        host = self.host.lower()
        host = host[1:].partition(b"]")[0] if host.startswith(b"[") else host.partition(b":")[0]
        host = host.rstrip(b".")
        if front.redirect_port is not None:
            self._redirect(cycle, host, front.redirect_port)
            return
        if self.routed_host:
            if host != self.routed_host:
                cycle.refusal = (421, "misdirected_request", "this connection serves another host; open a new one")
                cycle.keep_alive = False
            elif self.listener.redirect_port is not None:
                self._redirect(cycle, host, self.listener.redirect_port)
            return
        routes = front.routes or {}
        route = routes.get(host)
        if route is None:
            cycle.refusal = (404, "unknown_host", "no service answers for this host name here")
            cycle.keep_alive = False
            return
        self.routed_host = host
        front.connections.discard(self)
        route.connections.add(self)
        self.listener = route
        self.stats = route.stats
        if route.redirect_port is not None:
            self._redirect(cycle, host, route.redirect_port)

    def _redirect(self, cycle: RequestCycle, host: bytes, port: int) -> None:
        authority = host if port == 443 else host + b":%d" % port
        cycle.refusal = (308, "redirect", (b"https://" + authority + self.url).decode("latin-1"))
        cycle.keep_alive = False

    @staticmethod
    def _without_connection_listed(headers: list[bytes], tokens: bytes) -> list[bytes]:
        listed = {token.strip() for token in tokens.split(b",")} - {b"", b"close", b"keep-alive", b"upgrade"}
        if not listed:
            return headers
        return [line for line in headers if line.split(b":", 1)[0].lower() not in listed]

    def on_body(self, body: bytes) -> None:
        cycle = self.parsing
        assert cycle is not None
        if cycle.chunked:
            body = b"%x\r\n%s\r\n" % (len(body), body)
        cycle.body_size += len(body)
        if cycle.body_size <= MAX_REPLAY_BODY and cycle.method in REPLAYABLE:
            if cycle.kept is None:
                cycle.kept = [body]
            else:
                cycle.kept.append(body)
        upstream = cycle.upstream
        if upstream is not None:
            upstream.backend.bytes_in += len(body)
            upstream.transport.write(body)
            upstream.deadline = self.loop.time() + upstream.read_timeout  # an upload is not a silent upstream
            cycle.body_sent = True
        else:
            if cycle.body is None:
                cycle.body = [body]
            else:
                cycle.body.append(body)
            if cycle.body_size > MAX_BUFFERED_BODY:
                self.pause_reading(_PAUSE_CONNECTING)

    def on_message_complete(self) -> None:
        cycle = self.parsing
        assert cycle is not None
        self.parsing = None
        self.boundary = True
        # should_keep_alive() is only meaningful here, before the parser moves on.
        cycle.keep_alive = cycle.keep_alive and self.parser.should_keep_alive()
        cycle.request_complete = True
        if cycle.chunked:
            upstream = cycle.upstream
            if upstream is not None:
                upstream.backend.bytes_in += 5
                upstream.transport.write(b"0\r\n\r\n")
            elif cycle.body is None:
                cycle.body = [b"0\r\n\r\n"]
            else:
                cycle.body.append(b"0\r\n\r\n")

    # --- forwarding -----------------------------------------------------------------------------------

    def _start(self, cycle: RequestCycle) -> None:
        if cycle.refusal is not None:
            self._refuse(cycle)
            return
        backend = self._pick(cycle)
        if backend is None:
            self._answer_error(cycle, 503, "no_healthy_instance", "no healthy instance for this service")
            return
        cycle.backend = backend
        backend.active += 1
        idle = backend.idle
        while idle:
            upstream = idle.pop()
            if not upstream.closed:
                upstream.attach(self, cycle, True)
                return
        self.pause_reading(_PAUSE_CONNECTING)
        keep_task(self.loop.create_task(self._connect(cycle, backend)))

    def _pick(self, cycle: RequestCycle) -> Backend | None:
        """The instance for the request's next attempt (never one in ``cycle.tried``)."""
        # A region is only ever set under a region policy: without one, no policy lookup.
        regional = None if cycle.region is None else self.listener.regional
        if regional is None:  # no region, or the policy was dropped since the request came in
            return self.listener.balancer.pick(cycle.tried)
        return regional.pick_region(cycle.tried, cycle.region)

    def _refuse(self, cycle: RequestCycle) -> None:
        assert cycle.refusal is not None
        status, code, detail = cycle.refusal
        if status != 308:
            self._answer_error(cycle, status, code, detail)
            return
        cycle.status = status
        if not self.closed:
            self.write(
                b"HTTP/1.1 308 Permanent Redirect\r\nLocation: %s\r\nContent-Length: 0\r\nX-Request-Id: %s\r\n"
                b"Connection: close\r\n\r\n" % (detail.encode("latin-1"), cycle.request_id)
            )
        self.listener.stats.record(perf_counter() - cycle.started, False)
        self._next(cycle)

    async def _connect(self, cycle: RequestCycle, backend: Backend) -> None:
        listener = self.listener
        settings = self.settings
        while True:
            timed_out = False
            # A duck-typed Protocol (see the class): typed Any for asyncio's stubs.
            factory: Any = functools.partial(UpstreamConnection, backend, listener)
            try:
                async with asyncio.timeout(settings.connect_timeout_seconds):
                    _, upstream = await self.loop.create_connection(factory, backend.address, backend.port)
            except TimeoutError:
                timed_out = True
            except OSError:
                pass
            else:
                backend.connections_opened += 1
                if self.closed or cycle.backend is not backend:
                    upstream.release()  # the client left meanwhile; keep the fresh connection for others
                    return
                self.resume_reading(_PAUSE_CONNECTING)
                upstream.attach(self, cycle, False)
                return
            if cycle.backend is not backend:
                return  # the client left meanwhile and the request was abandoned
            backend.eject(settings.eject_seconds)
            cycle.tried = (*cycle.tried, backend)
            next_backend = self._pick(cycle) if len(cycle.tried) <= settings.connect_retries else None
            if next_backend is None or self.closed:
                # The answer is booked on the last instance tried (the error path releases it).
                self.resume_reading(_PAUSE_CONNECTING)
                if timed_out:
                    self._answer_error(cycle, 504, "upstream_timeout", "connecting to the instance timed out")
                else:
                    self._answer_error(cycle, 502, "bad_gateway", "the instance refused the connection")
                return
            backend.active -= 1
            backend = next_backend
            cycle.backend = backend
            backend.active += 1

    def retry_on_fresh_connection(self, cycle: RequestCycle) -> None:
        """A pooled connection died before answering: send the request again on a new one, once."""
        cycle.retried = True
        cycle.upstream = None
        backend = cycle.backend
        assert backend is not None
        self.pause_reading(_PAUSE_CONNECTING)
        keep_task(self.loop.create_task(self._connect(cycle, backend)))

    def replay(self, cycle: RequestCycle, upstream: UpstreamConnection, status: int) -> bool:
        """The instance answered ``Berth-Replay`` (its value in ``upstream.replay``): send the request to its
        region instead and drop the answer (True), or leave the answer to go out (False); see the module doc."""
        regional = self.listener.regional
        if (
            regional is None
            or cycle.replayed
            or not cycle.request_complete
            or cycle.method not in REPLAYABLE
            or cycle.body_size > MAX_REPLAY_BODY
        ):
            return False
        region = replay_region(upstream.replay)
        backend = regional.pick_in(region) if region else None
        if backend is None:
            return False
        # The first answer is dropped with its connection (what is left of it is never read).
        upstream.client = None
        upstream.cycle = None
        upstream.close()
        cycle.upstream = None
        first = cycle.backend
        source = regional.region_of(first) or "unknown"
        if first is not None:
            first.active -= 1
            now = perf_counter()
            first.record(status, now - cycle.started, now)
        cycle.replayed = True
        cycle.region = region
        cycle.tried = ()
        head = cycle.head  # ends with the blank line; no negative index (compiled without wraparound)
        cycle.head = head[: len(head) - 2] + b"Berth-Replayed-From: %s\r\n\r\n" % source.encode()
        cycle.body = list(cycle.kept or ())
        if cycle.chunked:
            cycle.body.append(b"0\r\n\r\n")
        cycle.body_sent = False
        cycle.backend = backend
        backend.active += 1
        idle = backend.idle
        while idle:
            pooled = idle.pop()
            if not pooled.closed:
                pooled.attach(self, cycle, True)
                return True
        self.pause_reading(_PAUSE_CONNECTING)
        keep_task(self.loop.create_task(self._connect(cycle, backend)))
        return True

    # --- answers --------------------------------------------------------------------------------------

    def begin_response(self, cycle: RequestCycle, status: int, head_lines: list[bytes], framing: int) -> None:
        """Send the upstream's status line and headers; ``framing`` 0 length/none, 1 chunked, 2 close-delimited."""
        cycle.response_started = True
        cycle.status = status
        if cycle.http10:
            cycle.response_mode = 0 if framing == 0 else 2  # no chunked encoding for HTTP/1.0 clients
        else:
            cycle.response_mode = 1 if framing else 0  # close-delimited answers are re-framed as chunked
        close = not cycle.keep_alive or self.listener.closing or cycle.response_mode == 2
        if close:
            cycle.keep_alive = False
        head_lines.append(b"X-Request-Id: ")
        head_lines.append(cycle.request_id)
        if cycle.response_mode == 1:
            head_lines.append(b"\r\nTransfer-Encoding: chunked")
        head_lines.append(b"\r\nConnection: close\r\n\r\n" if close else b"\r\nConnection: keep-alive\r\n\r\n")
        self.write(b"".join(head_lines))

    def finish_response(self, cycle: RequestCycle, upstream: UpstreamConnection, reusable: bool) -> None:
        """The upstream's answer is complete: release the upstream, then serve the next request or close."""
        if cycle.response_mode == 1:
            if self.buffering:
                self.out.append(b"0\r\n\r\n")
            else:
                self.stats.bytes_out += 5
                self.transport.write(b"0\r\n\r\n")
        backend = cycle.backend
        assert backend is not None
        cycle.upstream = None
        cycle.backend = None
        backend.active -= 1
        now = perf_counter()
        backend.record(cycle.status, now - cycle.started, now)
        if reusable and cycle.request_complete:
            upstream.release()
        else:
            upstream.client = None
            upstream.cycle = None
            upstream.close()
        self._next(cycle)

    def _answer_error(self, cycle: RequestCycle, status: int, code: str, message: str) -> None:
        close = not cycle.keep_alive or not cycle.request_complete or self.listener.closing
        cycle.status = status
        cycle.keep_alive = cycle.keep_alive and not close
        if not self.closed:
            self.write(error_response(status, code, message, cycle.request_id, close=close))
        elapsed = perf_counter() - cycle.started
        backend = cycle.backend
        if backend is not None:
            backend.active -= 1
            backend.record(status, elapsed)
            cycle.backend = None
        else:
            self.listener.stats.record(elapsed, True)
        self._next(cycle)

    def _next(self, cycle: RequestCycle) -> None:
        queue = self.queue
        if queue and queue[0] is cycle:
            queue.pop(0)
        if not cycle.keep_alive or not cycle.request_complete or self.listener.closing:
            self.close()
            return
        if self.read_paused & _PAUSE_UPSTREAM:
            self.resume_reading(_PAUSE_UPSTREAM)  # that upstream is done with; its pause must not outlive it
        if queue:
            self.resume_reading(_PAUSE_PIPELINE)
            self._start(queue[0])
        elif self.client_eof:
            self.close()  # the client half-closed and everything it asked for is answered
        elif self.parsing is None:
            self.deadline = self.loop.time() + self.idle_timeout

    def upstream_failed(self, cycle: RequestCycle, upstream: UpstreamConnection, reason: str) -> None:
        """The upstream connection broke or answered garbage."""
        if cycle.response_started:
            # Part of the answer is out: the client can only learn of the failure by the connection closing.
            backend = cycle.backend
            if backend is not None:
                backend.active -= 1
                backend.eject(self.settings.eject_seconds)
                backend.record(502, perf_counter() - cycle.started)
                cycle.backend = None
            else:
                self.listener.stats.record(perf_counter() - cycle.started, True)
            cycle.upstream = None
            self.close()
            return
        cycle.upstream = None
        if upstream.reused and not cycle.retried and not cycle.body_sent and cycle.method in IDEMPOTENT:
            self.retry_on_fresh_connection(cycle)
            return
        if cycle.backend is not None:
            cycle.backend.eject(self.settings.eject_seconds)
        self._answer_error(cycle, 502, "bad_gateway", f"the instance failed: {reason}")

    def _upstream_timed_out(self, cycle: RequestCycle) -> None:
        upstream = cycle.upstream
        assert upstream is not None
        upstream.client = None
        upstream.cycle = None
        upstream.close()
        cycle.upstream = None
        if cycle.response_started:
            self.upstream_failed(cycle, upstream, "timeout")
            return
        if cycle.backend is not None:
            cycle.backend.eject(self.settings.eject_seconds)
        self._answer_error(cycle, 504, "upstream_timeout", "the instance did not answer in time")


class UpstreamConnection:
    """One keep-alive connection to an instance; pooled on its Backend while idle (a duck-typed Protocol)."""

    def __init__(self, backend: Backend, listener: ListenerState) -> None:
        self.backend = backend
        self.listener = listener
        self.loop = listener.loop
        self.read_timeout = listener.settings.read_timeout_seconds
        self.pool_size = listener.settings.upstream_pool_size
        self.transport: Any = None
        self.parser = httptools.HttpResponseParser(self)
        # Customers' apps (CGI scripts, hand-written servers) often end header lines with a bare LF; accept
        # that from upstreams as nginx does. Client requests stay strict (no smuggling through leniency).
        self.parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True)
        self.client: HttpClientConnection | None = None
        self.cycle: RequestCycle | None = None
        self.closed = False
        self.reused = False
        self.deadline = 0.0
        self.idle_since = 0.0
        self.headers: list[bytes] = [b""]
        self.framing = 2
        self.interim = False
        self.read_paused = False
        self.replay = b""  # the answer's Berth-Replay header (see HttpClientConnection.replay)
        self.boundary = True  # as HttpClientConnection.boundary

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def pause_reading(self) -> None:
        if not self.read_paused and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and not self.closed:
            self.read_paused = False
            self.transport.resume_reading()

    def attach(self, client: HttpClientConnection, cycle: RequestCycle, reused: bool) -> None:
        """Send ``cycle``'s request (head and any buffered body) on this connection."""
        self.client = client
        self.cycle = cycle
        self.reused = reused
        cycle.upstream = self
        self._reset_response()
        self.deadline = self.loop.time() + self.read_timeout
        if cycle.body:
            request = b"".join((cycle.head, *cycle.body))
            self.backend.bytes_in += len(request)
            self.transport.write(request)
            cycle.body = None
            cycle.body_sent = True
            client.resume_reading(_PAUSE_CONNECTING)
        else:
            head = cycle.head
            self.backend.bytes_in += len(head)
            self.transport.write(head)
        if client.write_paused:
            self.pause_reading()

    def release(self) -> None:
        """Back to the instance's idle pool, or closed when the pool is full or the instance left."""
        self.client = None
        self.cycle = None
        self.deadline = 0.0
        if self.read_paused:
            self.resume_reading()
        backend = self.backend
        if self.closed or backend.removed or len(backend.idle) >= self.pool_size:
            self.close()
            return
        self.idle_since = self.loop.time()
        backend.idle.append(self)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        client, cycle = self.client, self.cycle
        if client is None or cycle is None:
            with contextlib.suppress(ValueError):
                self.backend.idle.remove(self)
            return
        self.client = None
        self.cycle = None
        if cycle.response_started and self.framing == 2 and exc is None:
            client.finish_response(cycle, self, False)  # a close-delimited answer ends here
        else:
            client.upstream_failed(cycle, self, "connection closed" if exc is None else str(exc) or "reset")

    def eof_received(self) -> None:
        return None  # close: an upstream that half-closes is done (connection_lost follows)

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.pause_reading(_PAUSE_UPSTREAM)

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.resume_reading(_PAUSE_UPSTREAM)

    def data_received(self, data: bytes) -> None:
        self.backend.bytes_out += len(data)
        client = self.client
        if client is None:
            self.close()  # bytes nobody asked for: this connection cannot be trusted any more
            return
        client.buffering = True
        try:
            cycle = self.cycle
            if self.boundary and FAST_HEADS and cycle is not None and cycle.method != b"HEAD":
                answer = parse_response(data)
                if answer is not None:
                    self._whole_answer(client, cycle, answer)  # the answer is complete: no deadline to move
                    return
            self.deadline = self.loop.time() + self.read_timeout  # an answer still coming is not a silent one
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            current, cycle = self.client, self.cycle
            self.client = None
            self.cycle = None
            self.close()
            if current is not None and cycle is not None:
                current.upstream_failed(cycle, self, "malformed response")
        finally:
            client.buffering = False
            out = client.out
            if out:
                client.out = []
                if not client.closed:
                    joined = out[0] if len(out) == 1 else b"".join(out)
                    client.stats.bytes_out += len(joined)
                    client.transport.write(joined)

    def _whole_answer(
        self, client: HttpClientConnection, cycle: RequestCycle, answer: tuple[int, bytes, bytes, bool]
    ) -> None:
        """A whole answer read by http_head (head and Content-Length body): what httptools' callbacks would do."""
        status, lines, body, reusable = answer
        client.begin_response(cycle, status, [STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status, lines], 0)
        if body:
            client.out.append(body)
        self.client = None
        self.cycle = None
        client.finish_response(cycle, self, reusable)

    # --- response parsing (httptools callbacks) ------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.boundary = False

    def _reset_response(self) -> None:
        self.headers = [b""]  # the status line goes first
        self.framing = 2
        self.interim = False
        self.replay = b""

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower in HOP_BY_HOP:
            if lower == b"transfer-encoding" and b"chunked" in value.lower():
                self.framing = 1
            return
        if lower == b"content-length":
            self.framing = 0
        elif lower == b"berth-replay":
            self.replay = value
        self.headers += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        client, cycle = self.client, self.cycle
        if client is None or cycle is None:
            return
        status = self.parser.get_status_code()
        head = self.headers
        head[0] = STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status
        if status < 200:
            # An interim answer (100 Continue): pass it on and wait for the real one.
            self.interim = True
            head.append(b"\r\n")
            client.out.append(b"".join(head))
            return
        if self.replay and client.replay(cycle, self, status):
            return
        framing = self.framing
        if status in (204, 304) or cycle.method == b"HEAD":
            framing = 0
        client.begin_response(cycle, status, head, framing)
        if cycle.method == b"HEAD":
            # llhttp cannot be told this answer has no body; finish here and do not reuse the connection.
            self.client = None
            self.cycle = None
            client.finish_response(cycle, self, False)

    def on_body(self, body: bytes) -> None:
        # Only ever called from data_received, where the client collects its output for one write.
        client, cycle = self.client, self.cycle
        if client is not None and cycle is not None:
            if cycle.response_mode == 1:
                body = b"%x\r\n%s\r\n" % (len(body), body)
            client.out.append(body)

    def on_message_complete(self) -> None:
        self.boundary = True
        if self.interim:
            self._reset_response()
            return
        client, cycle = self.client, self.cycle
        if client is None or cycle is None:
            return
        reusable = self.parser.should_keep_alive()
        self.client = None
        self.cycle = None
        client.finish_response(cycle, self, reusable)
