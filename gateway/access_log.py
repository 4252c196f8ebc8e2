"""The gateway's access log: exactly one JSON line per request on stdout, like API Gateway's.

Fields: time, request_id, ip, method, path (never the query string), route, status, latency_ms, user
(the token's ``sub`` or "-"), bytes (of the answer's body) and function (the logical id or "-").
Nothing else: no header value, no token, no body.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass


@dataclass
class AccessRecord:
    request_id: str
    ip: str
    method: str
    path: str
    started: float  # time.perf_counter() at the start of the request
    route: str = "-"
    user: str = "-"
    function: str = "-"

    def line(self, status: int, body_bytes: int) -> bytes:
        latency_ms = (time.perf_counter() - self.started) * 1000
        return (
            json.dumps(
                {
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "request_id": self.request_id,
                    "ip": self.ip,
                    "method": self.method,
                    "path": self.path,
                    "route": self.route,
                    "status": status,
                    "latency_ms": round(latency_ms, 3),
                    "user": self.user,
                    "bytes": body_bytes,
                    "function": self.function,
                },
                separators=(",", ":"),
            )
            + "\n"
        ).encode()


def write_access_line(line: bytes, fd: int = 1) -> None:
    """One ``write`` per line, so lines from concurrent requests never interleave."""
    os.write(fd, line)
