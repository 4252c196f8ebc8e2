# Cython declarations for the compiled build of stats.py (see http_proxy.pxd and build_hot_path.py).

cimport cython

@cython.locals(index=Py_ssize_t, bound=double)
cpdef Py_ssize_t latency_bucket(double seconds)

cdef class ListenerStats:
    cdef public long requests
    cdef public long errors
    cdef public long connections_total
    cdef public long long bytes_in
    cdef public long long bytes_out
    cdef public long _second
    cdef public list _second_counts
    cdef public list _latencies
    cdef public Py_ssize_t _latency_index

    @cython.locals(second=long)
    cpdef record(self, double seconds, bint error, now=*)
    @cython.locals(skipped=long)
    cpdef _roll(self, long second)
