"""HTTP mode's per-request CPU in lb-runtime's own code, without sockets: pure Python against compiled.

Drives the real Protocols with in-memory transports: a client connection parses a keep-alive request like
wrk's, picks the instance, takes the pooled upstream connection and writes the forwarded head; the upstream
connection parses a small answer like nginx's and the client writes it back. What remains per request is
exactly the proxy's user-space work minus the event loop and the kernel (the syscalls are measured by
bench/lb_proxy.py). Deterministic enough to compare builds on a busy machine: best of several runs.

    .venv/bin/python bench/lb_hot_path.py [--requests 200000] [--runs 5]
"""

from __future__ import annotations

import argparse
import importlib
import time
from collections import deque
from typing import Any

import uvloop
from lb_runtime.hot_path import PYTHON_BUILD, HotPathBuild, compiled_build
from lb_runtime.listeners import ListenerState
from lb_runtime.settings import LbSettings
from lb_runtime.snapshot import Instance, Listener

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:20000\r\n\r\n"  # what wrk sends
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 05 Dec 2026 08:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 23\r\nConnection: keep-alive\r\n\r\nhello from the backend\n"
)


class MemoryTransport:
    """Just enough of an asyncio transport: counts the bytes written."""

    def __init__(self) -> None:
        self.last: deque[bytes] = deque(maxlen=1)
        self.write = self.last.append  # a C call: the transport's own cost is not the proxy's

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else None

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None: ...

    def is_closing(self) -> bool:
        return False


def per_request_us(build: HotPathBuild, requests: int) -> float:
    """Microseconds of CPU per proxied request through ``build``'s Protocols."""
    module = importlib.import_module(build.http_client_connection.__module__)
    loop = uvloop.new_event_loop()  # lb-runtime's own loop: its time() is a C call, asyncio's a Python one
    try:
        settings = LbSettings(hot_path="python")
        instance = Instance(id="backend", address="127.0.0.1", port=8080)
        config = Listener(id="bench", port=0, instances=(instance,))
        backend = build.backend("bench", instance, checked=False)
        listener = ListenerState(config, settings, loop, [backend], build)
        upstream = module.UpstreamConnection(backend, listener)
        upstream.connection_made(MemoryTransport())
        backend.idle.append(upstream)
        client = build.http_client_connection(listener)
        client_transport = MemoryTransport()
        client.connection_made(client_transport)
        started = time.process_time()
        for _ in range(requests):
            client.data_received(REQUEST)
            upstream.data_received(RESPONSE)
        elapsed = time.process_time() - started
        assert backend.status_counts[2] == requests and client_transport.last[0].endswith(RESPONSE[-23:])
        return elapsed * 1e6 / requests
    finally:
        loop.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    builds = {"python": PYTHON_BUILD}
    compiled = compiled_build()
    if compiled is not None:
        builds["compiled"] = compiled
    else:
        print("compiled hot path not built (run .venv/bin/python lb-runtime/build_hot_path.py): python only")
    best = {name: min(per_request_us(build, args.requests) for _ in range(args.runs)) for name, build in builds.items()}
    for name, value in best.items():
        print(f"{name:<9} {value:6.2f} us of CPU per request (best of {args.runs} x {args.requests})")
    if "compiled" in best:
        print(f"compiled / python: {best['compiled'] / best['python']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
