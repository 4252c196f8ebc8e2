"""http_head reads whole simple messages in one call: whatever it takes, httptools takes the same way.

Every answer of ``parse_request`` / ``parse_response`` is checked against httptools (llhttp) on the same bytes,
for generated messages that mix what the fast path takes with what it must leave to httptools (bodies,
framing, obs-text, bare LFs, folded lines, odd spacing, bad tokens, several messages in one read). The pure
module and its compiled build run the same checks.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass, field
from types import ModuleType

import httptools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lb_runtime import http_head
from lb_runtime.http_proxy import HOP_BY_HOP

STATED_BY_THE_PROXY = {b"x-forwarded-for", b"x-request-id", b"x-forwarded-proto"}
MAX_HEADER_BYTES = 400


def _builds() -> list[ModuleType]:
    builds = [http_head]
    with contextlib.suppress(ImportError):
        builds.append(importlib.import_module("lb_runtime._http_head_compiled"))
    return builds


@pytest.fixture(params=_builds(), ids=lambda module: module.__name__.rsplit(".", 1)[-1])
def head(request: pytest.FixtureRequest) -> ModuleType:
    return request.param  # type: ignore[no-any-return]


@dataclass
class Reading:
    """What httptools reports for one read of bytes."""

    url: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    begun: int = 0
    completed: int = 0
    keep_alive: bool = False
    failed: bool = False
    parser: httptools.HttpRequestParser | httptools.HttpResponseParser | None = None

    def on_message_begin(self) -> None:
        self.begun += 1

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.completed += 1
        assert self.parser is not None
        self.keep_alive = self.parser.should_keep_alive()  # meaningful only here


def read_request(data: bytes) -> tuple[Reading, httptools.HttpRequestParser]:
    reading = Reading()
    parser = reading.parser = httptools.HttpRequestParser(reading)
    try:
        parser.feed_data(data)
    except httptools.HttpParserError:
        reading.failed = True
    return reading, parser


def read_response(data: bytes) -> tuple[Reading, httptools.HttpResponseParser]:
    reading = Reading()
    parser = reading.parser = httptools.HttpResponseParser(reading)
    parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True)  # as lb-runtime reads its upstreams
    try:
        parser.feed_data(data)
    except httptools.HttpParserError:
        reading.failed = True
    return reading, parser


def last(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes:
    values = [value for key, value in headers if key.lower() == name]
    return values[-1] if values else b""


def forwarded(headers: list[tuple[bytes, bytes]], dropped: set[bytes]) -> bytes:
    return b"".join(name + b": " + value + b"\r\n" for name, value in headers if name.lower() not in dropped)


def check_request(module: ModuleType, data: bytes) -> bool:
    """The fast path's answer for ``data`` agrees with httptools; True when the fast path took it."""
    fast = module.parse_request(data, MAX_HEADER_BYTES)
    if fast is None:
        return False
    method, target, http10, tokens, lines, host, forwarded_for, request_id, prefer_region, header_bytes = fast
    reading, parser = read_request(data)
    assert not reading.failed, f"httptools refuses what the fast path took: {data!r}"
    assert (reading.begun, reading.completed) == (1, 1), f"not exactly one whole message: {data!r}"
    assert reading.body == b""
    assert method == parser.get_method()
    assert http10 == (parser.get_http_version() == "1.0")
    assert target == reading.url
    assert host == last(reading.headers, b"host")
    assert forwarded_for == last(reading.headers, b"x-forwarded-for")
    assert request_id == last(reading.headers, b"x-request-id")
    assert prefer_region == last(reading.headers, b"berth-prefer-region")
    assert tokens == b"".join(b"," + value.lower() for name, value in reading.headers if name.lower() == b"connection")
    assert lines == forwarded(reading.headers, HOP_BY_HOP | STATED_BY_THE_PROXY)
    assert header_bytes == len(reading.url) + sum(len(name) + len(value) + 4 for name, value in reading.headers)
    assert header_bytes <= MAX_HEADER_BYTES
    assert (b"keep-alive" in tokens if http10 else b"close" not in tokens) == reading.keep_alive
    return True


def check_response(module: ModuleType, data: bytes) -> bool:
    fast = module.parse_response(data)
    if fast is None:
        return False
    status, lines, body, keep_alive = fast
    reading, parser = read_response(data)
    assert not reading.failed, f"httptools refuses what the fast path took: {data!r}"
    assert (reading.begun, reading.completed) == (1, 1), f"not exactly one whole message: {data!r}"
    assert status == parser.get_status_code()
    assert lines == forwarded(reading.headers, HOP_BY_HOP)
    assert body == reading.body
    assert keep_alive == reading.keep_alive
    return True


# --- what the fast path must take -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1:20000\r\n\r\n",  # wrk
        b"GET /search?q=a%20b&page=2 HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: Mozilla/5.0 (X11; Linux)\r\n"
        b"Accept: text/html,application/xhtml+xml;q=0.9\r\nAccept-Language: en-GB,en;q=0.5\r\n"
        b"Cookie: session=abc; theme=dark\r\nConnection: keep-alive\r\nX-Request-Id: r-1\r\n\r\n",
        b"HEAD /x HTTP/1.0\r\nConnection: keep-alive\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n",
        b"DELETE /items/7 HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nBerth-Prefer-Region: eu\r\n\r\n",
        b"OPTIONS /x HTTP/1.1\r\nHost:a\r\nX-Empty:\r\nX-Tab:\tv\r\nConnection: close\r\n\r\n",
    ],
)
def test_common_requests_take_the_fast_path_and_read_as_httptools_reads_them(head: ModuleType, data: bytes) -> None:
    assert check_request(head, data)


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 05 Dec 2026 08:00:00 GMT\r\n"
        b"Content-Type: text/plain\r\nContent-Length: 23\r\nConnection: keep-alive\r\n\r\nhello from the backend\n",
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nKeep-Alive: timeout=5\r\n\r\n",
        b'HTTP/1.1 304 \r\nETag:"x"\r\nContent-Length: 120\r\n\r\n',
    ],
)
def test_common_answers_take_the_fast_path_and_read_as_httptools_reads_them(head: ModuleType, data: bytes) -> None:
    assert check_response(head, data)


# --- what it must leave to httptools ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi",  # a body
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"GET / HTTP/1.1\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\n\r\n",  # names a header to drop
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",  # two requests in one read
        b"GET / HTTP/1.1\r\nHost: a\r\n",  # a head split over reads
        b"GET / HTTP/1.1\nHost: a\n\n",  # bare LF
        b"GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n",  # obs-fold
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",  # space before the colon
        b"GET / HTTP/1.1\r\nHost: a \r\n\r\n",  # trailing space
        b"GET / HTTP/1.1\r\nX: caf\xc3\xa9\r\n\r\n",  # obs-text
        b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",  # absolute form
        b"GET /a#b HTTP/1.1\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
        b"PATCH / HTTP/1.1\r\n\r\n",
        b"get / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-Long: " + b"a" * MAX_HEADER_BYTES + b"\r\n\r\n",  # httptools answers 431
    ],
)
def test_anything_else_is_left_to_httptools(head: ModuleType, data: bytes) -> None:
    assert head.parse_request(data, MAX_HEADER_BYTES) is None


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\nclose-delimited",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # the body comes in later reads
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nab",  # more than one answer's worth
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na",
        b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\na",
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\na",
        b"HTTP/1.1 200 OK\nContent-Length: 1\n\na",  # bare LF: httptools reads it leniently
        b"HTTP/1.1 200 OK\r\nBerth-Replay: region=eu\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Upgrade\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\nx",
    ],
)
def test_answers_it_does_not_take_are_left_to_httptools(head: ModuleType, data: bytes) -> None:
    assert head.parse_response(data) is None


# --- generated messages: agreement wherever the fast path answers ------------------------------------------

NAMES = st.one_of(
    st.sampled_from(
        [
            b"Host",
            b"host",
            b"Connection",
            b"X-Forwarded-For",
            b"x-request-id",
            b"X-Forwarded-Proto",
            b"Berth-Prefer-Region",
            b"Keep-Alive",
            b"TE",
            b"Content-Length",
            b"Transfer-Encoding",
            b"Upgrade",
            b"Expect",
            b"Berth-Replay",
        ]
    ),
    st.text(alphabet="!#$%&'*+-.^_`|~azAZ09", min_size=1, max_size=10).map(str.encode),
)
VALUES = st.one_of(
    st.sampled_from([b"keep-alive", b"close", b"Keep-Alive", b"a, b", b"chunked", b"0", b"12", b"1.2.3.4", b""]),
    st.text(alphabet=" \t!#:;,/=~azAZ09\"'", max_size=12).map(lambda text: text.strip(" \t").encode()),
)
SEPARATORS = st.sampled_from([b": ", b": ", b": ", b":", b":  ", b":\t"])
HEADERS = st.lists(st.tuples(NAMES, SEPARATORS, VALUES), max_size=6).map(
    lambda headers: b"".join(name + separator + value + b"\r\n" for name, separator, value in headers)
)
# One change to a well-formed message, where the fast path's judgement matters most.
MUTATIONS = st.one_of(
    st.none(),
    st.tuples(
        st.floats(0, 1),
        st.sampled_from(["insert", "replace", "delete"]),
        st.sampled_from([b"\r", b"\n", b" ", b"\t", b":", b"\x00", b"\x7f", b"\x80", b"\xff", b"a", b"#", b",", b"/"]),
    ),
)


def _mutated(message: bytes, mutation: tuple[float, str, bytes] | None) -> bytes:
    if mutation is None:
        return message
    where, how, byte = mutation
    at = min(int(where * len(message)), len(message) - 1)
    if how == "insert":
        return message[:at] + byte + message[at:]
    if how == "replace":
        return message[:at] + byte + message[at + 1 :]
    return message[:at] + message[at + 1 :]


REQUESTS = st.builds(
    _mutated,
    st.builds(
        lambda method, target, version, headers, tail: (
            method + b" " + target + b" " + version + b"\r\n" + headers + b"\r\n" + tail
        ),
        st.sampled_from([b"GET", b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"POST"]),
        st.one_of(
            st.text(alphabet="-._~!$&'()*+,;=:@/?%azAZ09", max_size=12).map(lambda text: b"/" + text.encode()),
            st.sampled_from([b"*", b"http://h/x"]),
        ),
        st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]),
        HEADERS,
        st.sampled_from([b"", b"", b"", b"x", b"GET / HTTP/1.1\r\n\r\n"]),
    ),
    MUTATIONS,
)
RESPONSES = st.builds(
    _mutated,
    st.builds(
        lambda status, reason, headers, body, length: (
            b"HTTP/1.1 "
            + status
            + reason
            + b"\r\n"
            + headers
            + (b"Content-Length: %d\r\n" % len(body) if length else b"")
            + b"\r\n"
            + body
        ),
        st.sampled_from([b"200", b"200", b"204", b"304", b"404", b"101", b"100"]),
        st.sampled_from([b" OK", b" OK", b" ", b" Not Found"]),
        HEADERS,
        st.sampled_from([b"", b"0", b"hello", b"hello world!"]),
        st.booleans(),
    ),
    MUTATIONS,
)
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=REQUESTS)
def test_generated_requests_read_alike(head: ModuleType, data: bytes) -> None:
    check_request(head, data)


@FUZZ
@given(data=RESPONSES)
def test_generated_answers_read_alike(head: ModuleType, data: bytes) -> None:
    check_response(head, data)
