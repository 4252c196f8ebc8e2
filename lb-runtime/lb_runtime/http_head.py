"""A fast path for the commonest HTTP/1.1 messages: one whole request head without a body, or one whole answer
with its Content-Length body, in one read.

httptools calls back into Python for the URL, every header, the end of the head and the end of the message
(about 20 calls per proxied request, each building bytes objects); these two functions read such a message in
one call and hand back what ``http_proxy`` needs. They are a strict subset of what httptools accepts: anything
else (a body to stream, chunked framing, an Upgrade, a header value with obs-text or trailing spaces, a bare
LF, more than one message in the read, a head split over reads) answers None and goes to httptools as before,
so the parser that decides what is malformed stays llhttp. ``tests/lb_runtime/test_http_head.py`` checks
every answer against httptools on the same bytes.

Written to compile with Cython (``http_head.pxd``): indexing ``bytes`` with a typed index reads a C char, so
the same loops are C loops there. ``http_proxy`` uses these functions only in its compiled build; in pure
Python they are slower than httptools and serve the tests.
"""

from __future__ import annotations

try:
    import cython

    COMPILED = bool(cython.compiled)
except ImportError:  # a machine without Cython runs the pure-Python build only
    COMPILED = False


def _table(allowed: str = "", *, alnum: bool = False, ranges: tuple[tuple[int, int], ...] = ()) -> bytes:
    marks = bytearray(256)
    for code in range(128):
        if chr(code) in allowed or (alnum and chr(code).isalnum()):
            marks[code] = 1
    for low, high in ranges:
        for code in range(low, high + 1):
            marks[code] = 1
    return bytes(marks)


# RFC 9110 tchar (header names).
TOKEN = _table("!#$%&'*+-.^_`|~", alnum=True)
# A field value's characters taken here: visible ASCII, space and tab (obs-text and the rest: httptools).
VALUE = _table(ranges=((0x20, 0x7E), (0x09, 0x09)))
# An origin-form request target's characters taken here: unreserved, sub-delims, ":@/?%".
TARGET = _table("-._~!$&'()*+,;=:@/?%", alnum=True)

# What a header name means to the proxy; every other header is forwarded as it is.
_DROP = 1  # hop-by-hop (RFC 9110 7.6.1) or stated by the proxy itself
_DECLINE = 2  # needs httptools: a body, framing, an upgrade, an expectation, a replay
_CONNECTION = 3
_HOST = 4
_FORWARDED_FOR = 5
_REQUEST_ID = 6
_PREFER_REGION = 7
_CONTENT_LENGTH = 8
# Hop-by-hop (RFC 9110 7.6.1) on both sides: Connection is read, framing and upgrades need httptools.
_HOP_BY_HOP = {
    b"connection": _CONNECTION,
    b"keep-alive": _DROP,
    b"proxy-connection": _DROP,
    b"proxy-authenticate": _DROP,
    b"proxy-authorization": _DROP,
    b"te": _DROP,
    b"trailer": _DROP,
    b"transfer-encoding": _DECLINE,
    b"upgrade": _DECLINE,
}
REQUEST_HEADERS = {
    **_HOP_BY_HOP,
    b"x-forwarded-proto": _DROP,
    b"content-length": _DECLINE,
    b"expect": _DECLINE,
    b"host": _HOST,
    b"x-forwarded-for": _FORWARDED_FOR,
    b"x-request-id": _REQUEST_ID,
    b"berth-prefer-region": _PREFER_REGION,
}
RESPONSE_HEADERS = {**_HOP_BY_HOP, b"berth-replay": _DECLINE, b"content-length": _CONTENT_LENGTH}


def _shapes(names: dict[bytes, int]) -> bytes:
    """Marks the (length, first letter) of each name: a header whose name has no mark is forwarded as it is
    without being lowercased and looked up (most are: Date, Server, Content-Type, User-Agent, Accept...).
    Indexed by ``length * 32 + (first byte & 31)``, which is the same for a letter in either case."""
    marks = bytearray(32 * 32)
    for name in names:
        marks[len(name) * 32 + (name[0] & 31)] = 1
    return bytes(marks)


REQUEST_SHAPES = _shapes(REQUEST_HEADERS)
RESPONSE_SHAPES = _shapes(RESPONSE_HEADERS)
METHODS = (b"GET", b"HEAD", b"DELETE", b"OPTIONS")
_VERSION = b"HTTP/1."


def _piece(data: bytes, start: int, end: int) -> bytes:
    """``data[start:end]``. Compiled, one copy of those bytes: Cython slices ``bytes`` through a slice object
    and two boxed ints, which cost more than the copy (about ten slices per proxied request)."""
    if COMPILED:
        return cython.cast(cython.p_char, data)[start:end]
    return data[start:end]


def _method(data: bytes, end: int) -> bytes | None:
    """One of METHODS (the constant itself) when ``data[:end]`` is it."""
    for method in METHODS:
        if len(method) == end and data.startswith(method):
            return method
    return None


def _value_end(data: bytes, start: int, n: int) -> int:
    """The end of the field value starting at ``start`` (its CR), or -1 unless it ends in CRLF with no trailing
    space or tab."""
    j = start
    while j < n and VALUE[data[j]]:
        j += 1
    if j + 1 >= n or data[j] != 13 or data[j + 1] != 10:
        return -1
    if j > start and (data[j - 1] == 32 or data[j - 1] == 9):
        return -1
    return j


def _field(data: bytes, pos: int, n: int) -> tuple[int, int, int]:
    """The header line starting at ``pos``: (its colon, where its value starts past optional spaces and tabs,
    where the value ends at the line's CR); the end is -1 when the line is not one taken here."""
    colon = pos
    while colon < n and TOKEN[data[colon]]:
        colon += 1
    if colon == pos or colon >= n or data[colon] != 58:  # ':'
        return colon, colon, -1
    start = colon + 1
    while start < n and (data[start] == 32 or data[start] == 9):
        start += 1
    return colon, start, _value_end(data, start, n)


def _cut(pieces: list[bytes], data: bytes, run: int, pos: int, colon: int, start: int, end: int, keep: bool) -> int:
    """The header line at ``pos`` is dropped, or rewritten when ``keep``: the run of lines copied as they are ends
    before it, and the next one starts after it (returned)."""
    if run < pos:
        pieces.append(_piece(data, run, pos))
    if keep:
        pieces.append(_piece(data, pos, colon) + b": " + _piece(data, start, end) + b"\r\n")
    return end + 2


def _joined(pieces: list[bytes], data: bytes, run: int, pos: int) -> bytes:
    """The forwarded header lines: the pieces and the last run of lines copied as they are."""
    if run < pos:
        pieces.append(_piece(data, run, pos))
    return b"" if not pieces else pieces[0] if len(pieces) == 1 else b"".join(pieces)


def parse_request(
    data: bytes, max_header_bytes: int
) -> tuple[bytes, bytes, bool, bytes, bytes, bytes, bytes, bytes, bytes, int] | None:
    """``data`` as exactly one request head without a body: (method, target, http10, connection tokens, the
    forwarded header lines, host, x-forwarded-for, x-request-id, berth-prefer-region, header bytes), the
    header fields as httptools reports them (last one wins); None for anything else (see the module doc)."""
    n = len(data)
    if n < 18 or data[n - 4] != 13 or data[n - 3] != 10 or data[n - 2] != 13 or data[n - 1] != 10:
        return None
    i = 0
    while i < n and 65 <= data[i] <= 90:  # 'A'-'Z'
        i += 1
    if i >= n or data[i] != 32:
        return None
    method = _method(data, i)
    if method is None:
        return None
    i += 1
    start = i
    if data[i] != 47:  # '/'
        return None
    while i < n and TARGET[data[i]]:
        i += 1
    if i >= n or data[i] != 32:
        return None
    target = _piece(data, start, i)
    i += 1
    if i + 10 > n or not data.startswith(_VERSION, i) or data[i + 9] != 10 or data[i + 8] != 13:
        return None
    minor = data[i + 7]
    if minor != 48 and minor != 49:  # '0', '1'
        return None
    http10 = minor == 48
    pos = i + 10
    header_bytes = len(target)
    if header_bytes > max_header_bytes:
        return None
    tokens = b""
    host = b""
    forwarded_for = b""
    request_id = b""
    prefer_region = b""
    pieces: list[bytes] = []
    run = pos  # the start of the run of header lines forwarded byte for byte
    while pos < n and data[pos] != 13:
        colon, start, end = _field(data, pos, n)
        if end < 0:
            return None
        header_bytes += colon - pos + end - start + 4
        if header_bytes > max_header_bytes:
            return None
        name_length = colon - pos
        kind = 0
        if name_length < 32 and REQUEST_SHAPES[name_length * 32 + (data[pos] & 31)]:
            kind = REQUEST_HEADERS.get(_piece(data, pos, colon).lower(), 0)
        canonical = start == colon + 2 and data[colon + 1] == 32
        if kind == _DECLINE:
            return None
        if kind == _CONNECTION:
            value = _piece(data, start, end).lower()
            if value != b"keep-alive" and value != b"close":
                return None  # other tokens name headers to drop: httptools' path does that
            tokens += b"," + value
        elif kind == _HOST:
            host = _piece(data, start, end)
        elif kind == _FORWARDED_FOR:
            forwarded_for = _piece(data, start, end)
        elif kind == _REQUEST_ID:
            request_id = _piece(data, start, end)
        elif kind == _PREFER_REGION:
            prefer_region = _piece(data, start, end)
        forwarded = kind != _DROP and kind != _CONNECTION and kind != _FORWARDED_FOR and kind != _REQUEST_ID
        if not forwarded or not canonical:
            run = _cut(pieces, data, run, pos, colon, start, end, forwarded)
        pos = end + 2
    if pos + 2 != n or data[pos + 1] != 10:
        return None
    block = _joined(pieces, data, run, pos)
    return method, target, http10, tokens, block, host, forwarded_for, request_id, prefer_region, header_bytes


def parse_response(data: bytes) -> tuple[int, bytes, bytes, bool] | None:
    """``data`` as exactly one final HTTP/1.1 answer whose body is all there by its Content-Length (or none, for
    204 and 304): (status, the forwarded header lines, the body, reusable); None for anything else
    (see the module doc). Not for answers to HEAD, whose framing the caller knows."""
    n = len(data)
    if n < 19 or not data.startswith(_VERSION) or data[7] != 49 or data[8] != 32:  # "HTTP/1.1 "
        return None
    d0 = data[9] - 48
    d1 = data[10] - 48
    d2 = data[11] - 48
    if not (0 <= d0 <= 9 and 0 <= d1 <= 9 and 0 <= d2 <= 9) or data[12] != 32:
        return None
    status = d0 * 100 + d1 * 10 + d2
    if status < 200:
        return None
    end = _value_end(data, 13, n)
    if end < 0:
        return None
    pos = end + 2
    keep_alive = True
    length = -1
    pieces: list[bytes] = []
    run = pos
    while pos < n and data[pos] != 13:
        colon, start, end = _field(data, pos, n)
        if end < 0:
            return None
        name_length = colon - pos
        kind = 0
        if name_length < 32 and RESPONSE_SHAPES[name_length * 32 + (data[pos] & 31)]:
            kind = RESPONSE_HEADERS.get(_piece(data, pos, colon).lower(), 0)
        canonical = start == colon + 2 and data[colon + 1] == 32
        if kind == _DECLINE:
            return None
        if kind == _CONNECTION:
            value = _piece(data, start, end).lower()
            if value == b"close":
                keep_alive = False
            elif value != b"keep-alive":
                return None
        elif kind == _CONTENT_LENGTH:
            if length >= 0 or end == start or end - start > 15:
                return None
            length = 0
            for k in range(start, end):
                digit = data[k] - 48
                if not 0 <= digit <= 9:
                    return None
                length = length * 10 + digit
        forwarded = kind != _DROP and kind != _CONNECTION
        if not forwarded or not canonical:
            run = _cut(pieces, data, run, pos, colon, start, end, forwarded)
        pos = end + 2
    if pos + 1 >= n or data[pos] != 13 or data[pos + 1] != 10:
        return None
    block = _joined(pieces, data, run, pos)
    body = pos + 2
    if status == 204 or status == 304:
        if body != n:
            return None
    elif length < 0 or n - body != length:
        return None
    return status, block, _piece(data, body, n), keep_alive
