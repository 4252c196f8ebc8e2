# Cython declarations for the compiled build of http_proxy.py (an "augmenting .pxd": the .py stays the one
# source, and is what runs when the extension is not built). lb-runtime/build_hot_path.py compiles the pair
# into lb_runtime._http_proxy_compiled; lb_runtime.hot_path picks one of the two at start.
# Keep every attribute of the three classes here, with the same names as in the .py.

cimport cython

from lb_runtime.backends cimport Backend
from lb_runtime.stats cimport ListenerStats

# Module state written per request and constants read per request are C globals: a write to the module's dict
# would also cost every other global lookup its cache.
cdef long long _request_counter
cdef bytes _request_id_stem
cdef tuple _HEX2
cdef bint FAST_HEADS
cdef int _PAUSE_PIPELINE, _PAUSE_UPSTREAM, _PAUSE_CONNECTING
cdef dict STATUS_LINES

# A C call from _head_complete.
@cython.locals(low=long)
cpdef bytes next_request_id()

cdef class RequestCycle:
    cdef public bytes method
    cdef public bytes head
    cdef public list body
    cdef public Py_ssize_t body_size
    cdef public bint body_sent
    cdef public bint chunked
    cdef public bint keep_alive
    cdef public bint http10
    cdef public bint request_complete
    cdef public bytes request_id
    cdef public Backend backend
    cdef public UpstreamConnection upstream
    cdef public bint response_started
    cdef public int response_mode
    cdef public int status
    cdef public double started
    cdef public bint retried
    cdef public tuple tried
    cdef public tuple refusal
    cdef public object region
    cdef public list kept
    cdef public bint replayed


cdef class HttpClientConnection:
    cdef public object listener
    cdef public object front
    cdef public ListenerStats stats
    cdef public bint routed
    cdef public bytes host
    cdef public bytes routed_host
    cdef public object settings
    cdef public object loop
    cdef public object transport
    cdef public object parser
    cdef public bytes client_ip
    cdef public list queue
    cdef public RequestCycle parsing
    cdef public bint boundary
    cdef public list headers
    cdef public bytes url
    cdef public Py_ssize_t header_bytes
    cdef public Py_ssize_t max_header_bytes
    cdef public double idle_timeout
    cdef public bytes forwarded_for
    cdef public bytes prefer_region
    cdef public bytes incoming_request_id
    cdef public bytes connection_tokens
    cdef public bint closed
    cdef public int read_paused
    cdef public bint write_paused
    cdef public double deadline
    cdef public bint buffering
    cdef public list out
    cdef public bint client_eof
    cdef object __weakref__

    cpdef close(self)
    cpdef write(self, bytes data)
    @cython.locals(out=list, data=bytes)
    cpdef flush(self)
    cpdef pause_reading(self, int reason)
    cpdef resume_reading(self, int reason)
    @cython.locals(cycle=RequestCycle, upstream=UpstreamConnection, backend=Backend, idle=list)
    cpdef _start(self, RequestCycle cycle)
    cpdef _pick(self, RequestCycle cycle)
    @cython.locals(close=bint)
    cpdef begin_response(self, RequestCycle cycle, int status, list head_lines, int framing)
    @cython.locals(now=double)
    cpdef finish_response(self, RequestCycle cycle, UpstreamConnection upstream, bint reusable)
    cpdef _next(self, RequestCycle cycle)
    cpdef _redirect(self, RequestCycle cycle, bytes host, int port)
    # httptools' callbacks: cpdef keeps them callable from the parser and makes their bodies typed C.
    cpdef on_message_begin(self)
    cpdef on_url(self, bytes url)
    @cython.locals(lower=bytes, cycle=RequestCycle)
    cpdef on_header(self, bytes name, bytes value)
    @cython.locals(cycle=RequestCycle, headers=list)
    cpdef on_headers_complete(self)
    @cython.locals(cycle=RequestCycle, method=bytes, url=bytes, http10=bint, tokens=bytes, lines=bytes, host=bytes,
                   forwarded_for=bytes, request_id=bytes, prefer_region=bytes, header_bytes=Py_ssize_t)
    cpdef _whole_request(self, tuple head)
    @cython.locals(tokens=bytes, request_id=bytes, forwarded=bytes)
    cpdef _head_complete(self, RequestCycle cycle, bytes method, bint http10, bytes lines)
    @cython.locals(cycle=RequestCycle, upstream=UpstreamConnection)
    cpdef on_body(self, bytes body)
    @cython.locals(cycle=RequestCycle, upstream=UpstreamConnection)
    cpdef on_message_complete(self)


cdef class UpstreamConnection:
    cdef public Backend backend
    cdef public object listener
    cdef public object loop
    cdef public double read_timeout
    cdef public Py_ssize_t pool_size
    cdef public object transport
    cdef public object parser
    cdef public HttpClientConnection client
    cdef public RequestCycle cycle
    cdef public bint closed
    cdef public bint reused
    cdef public double deadline
    cdef public double idle_since
    cdef public list headers
    cdef public int framing
    cdef public bint interim
    cdef public bint read_paused
    cdef public bytes replay
    cdef public bint boundary
    cdef object __weakref__

    cpdef pause_reading(self)
    cpdef resume_reading(self)
    cpdef release(self)
    cpdef close(self)
    cpdef _reset_response(self)
    @cython.locals(request=bytes, head=bytes)
    cpdef attach(self, HttpClientConnection client, RequestCycle cycle, bint reused)
    # The transport's callback: cpdef so that the client it answers is typed (the byte count is a C add).
    @cython.locals(client=HttpClientConnection, current=HttpClientConnection, cycle=RequestCycle, out=list,
                   answer=tuple, joined=bytes)
    cpdef data_received(self, data)
    @cython.locals(status=int, lines=bytes, body=bytes, reusable=bint)
    cpdef _whole_answer(self, HttpClientConnection client, RequestCycle cycle, tuple answer)
    cpdef on_message_begin(self)
    @cython.locals(lower=bytes)
    cpdef on_header(self, bytes name, bytes value)
    @cython.locals(client=HttpClientConnection, cycle=RequestCycle, head=list, status=int, framing=int)
    cpdef on_headers_complete(self)
    @cython.locals(client=HttpClientConnection, cycle=RequestCycle)
    cpdef on_body(self, bytes body)
    @cython.locals(client=HttpClientConnection, cycle=RequestCycle, reusable=bint)
    cpdef on_message_complete(self)
