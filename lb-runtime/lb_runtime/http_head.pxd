# Cython declarations for the compiled build of http_head.py (see http_proxy.pxd and build_hot_path.py).

cimport cython

cdef bytes TOKEN
cdef bytes VALUE
cdef bytes TARGET
cdef dict REQUEST_HEADERS
cdef dict RESPONSE_HEADERS
cdef bytes REQUEST_SHAPES
cdef bytes RESPONSE_SHAPES
cdef bytes _VERSION
# What a header name means (C ints: each header line is compared with several).
cdef int _DROP, _DECLINE, _CONNECTION, _HOST, _FORWARDED_FOR, _REQUEST_ID, _PREFER_REGION, _CONTENT_LENGTH
cdef bint COMPILED

cdef bytes _piece(bytes data, Py_ssize_t start, Py_ssize_t end)

@cython.locals(method=bytes)
cdef object _method(bytes data, Py_ssize_t end)
@cython.locals(j=Py_ssize_t)
cdef Py_ssize_t _value_end(bytes data, Py_ssize_t start, Py_ssize_t n)
@cython.locals(colon=Py_ssize_t, start=Py_ssize_t)
cdef (Py_ssize_t, Py_ssize_t, Py_ssize_t) _field(bytes data, Py_ssize_t pos, Py_ssize_t n)
cdef Py_ssize_t _cut(list pieces, bytes data, Py_ssize_t run, Py_ssize_t pos, Py_ssize_t colon, Py_ssize_t start,
                     Py_ssize_t end, bint keep) except -1
cdef bytes _joined(list pieces, bytes data, Py_ssize_t run, Py_ssize_t pos)
@cython.locals(
    n=Py_ssize_t, i=Py_ssize_t, start=Py_ssize_t, pos=Py_ssize_t, colon=Py_ssize_t, end=Py_ssize_t,
    run=Py_ssize_t, header_bytes=Py_ssize_t, name_length=Py_ssize_t, minor=int, kind=int, http10=bint, canonical=bint, forwarded=bint,
    method=bytes, target=bytes, tokens=bytes, host=bytes, forwarded_for=bytes, request_id=bytes,
    prefer_region=bytes, value=bytes, pieces=list, block=bytes,
)
cpdef parse_request(bytes data, Py_ssize_t max_header_bytes)
@cython.locals(
    n=Py_ssize_t, d0=int, d1=int, d2=int, status=int, pos=Py_ssize_t, colon=Py_ssize_t, start=Py_ssize_t,
    end=Py_ssize_t, run=Py_ssize_t, body=Py_ssize_t, k=Py_ssize_t, digit=int, length=cython.longlong, name_length=Py_ssize_t,
    kind=int,
    keep_alive=bint, canonical=bint, forwarded=bint, value=bytes, pieces=list, block=bytes,
)
cpdef parse_response(bytes data)
