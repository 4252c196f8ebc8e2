# Cython declarations for the compiled build of backends.py (see http_proxy.pxd and build_hot_path.py).

cimport cython

from lb_runtime.stats cimport ListenerStats, latency_bucket

cdef class Backend:
    cdef public str listener_id
    cdef public str id
    cdef public str address
    cdef public int port
    cdef public long weight
    cdef public long current_weight
    cdef public long active
    cdef public bint healthy
    cdef public bint probed
    cdef public long health_successes
    cdef public long health_failures
    cdef public double ejected_until
    cdef public long failures
    cdef public bint removed
    cdef public list idle
    cdef public long connections_opened
    cdef public list status_counts
    cdef public list bucket_counts
    cdef public double latency_sum
    cdef public long long bytes_in
    cdef public long long bytes_out
    cdef public ListenerStats stats
    cdef object __weakref__

    cpdef bint takes_traffic(self)
    cpdef eject(self, double seconds)
    @cython.locals(index=int)
    cpdef record(self, int status, double seconds, now=*)
    cpdef close_idle(self)


cdef class Balancer:
    cdef public str algorithm
    cdef public tuple backends
    cdef public Py_ssize_t _next
    cdef public object pick

    @cython.locals(backend=Backend, count=Py_ssize_t, start=Py_ssize_t, offset=Py_ssize_t)
    cpdef _round_robin(self, exclude=*)
    @cython.locals(backend=Backend, best=Backend, count=Py_ssize_t, start=Py_ssize_t, offset=Py_ssize_t,
                   index=Py_ssize_t, best_index=Py_ssize_t)
    cpdef _least_connections(self, exclude=*)
    @cython.locals(backend=Backend, best=Backend, total=long)
    cpdef _smooth_weighted(self, exclude=*)
