"""Ports for a test run's own servers, never taken by another run's process on the same machine.

A parallel run (pytest-xdist, `-n 2`) runs each of its processes as a run of its own (RUN_ID, database, moto,
gateway, worker, lb-runtime) on one machine. Every range of ports a run hands out is split between them
(``port_slice``), and the ports its servers bind are taken from 10000-19999, below the kernel's ephemeral
range (32768-60999): a port the kernel picked for "any free port" could, by the time the server binds it,
be the local end of another process's outgoing connection (a CI run lost a stack start to that).
"""

from __future__ import annotations

import os
import socket

# How many test processes run at once (pytest-xdist's `-n`; 1 without it).
PROCESSES = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))


def port_slice(first: int, last: int) -> tuple[int, int]:
    """This test process's share of ``first..last`` (a run of one process keeps the whole range)."""
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    size = (last - first + 1) // PROCESSES
    return first + index * size, first + (index + 1) * size - 1


SERVER_PORTS = port_slice(10000, 19999)
_cursor = SERVER_PORTS[0]


def _next_free(kind: socket.SocketKind) -> int:
    """The next port of this process's slice that binds now, round the slice (no port twice in a row)."""
    global _cursor
    first, last = SERVER_PORTS
    for _ in range(last - first + 1):
        port = _cursor
        _cursor = first if _cursor >= last else _cursor + 1
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # bound, or still closing: the next one
            return port
    raise RuntimeError(f"no free port left in {first}-{last}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 free now and handed out once per round of the slice."""
    return _next_free(socket.SOCK_STREAM)


def free_udp_port() -> int:
    return _next_free(socket.SOCK_DGRAM)
