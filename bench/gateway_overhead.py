"""What the local gateway adds: an authenticated ``GET /api/auth/me`` through ``berth gateway`` and
against the auth function served directly (``berth serve auth``, plain ASGI on uvicorn), in one run.

Starts both by itself on free ports, with a database and a Redis prefix of its own (removed at the end),
signs up one user, then sends the same fixed number of requests over several keep-alive connections to
each, alternating rounds so both see the same machine. Prints p50/p99 latency and requests/s of both,
their ratio, and the p50 the gateway adds. The load generator is a small asyncio HTTP/1.1 client (fixed
request count); ``--client wrk`` uses ``wrk`` instead (Debian package ``wrk``; it runs for a duration,
``--seconds``, since it cannot stop at a count), a cross-check with a load generator written in C.

    .venv/bin/python bench/gateway_overhead.py [--requests 4000] [--connections 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from shared.migrate import apply_migrations, drop_database

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ROUTE = "/api/auth/me"
GOAL_ADDED_P50_MS = 2.0

WRK_SCRIPT = """
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


@dataclass
class Measurement:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    failures: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the process serving {url} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:g} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure_with_wrk(url: str, token: str, seconds: float, connections: int) -> Measurement:
    threads = min(connections, 2)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
    try:
        output = subprocess.run(
            [
                "wrk",
                "-t",
                str(threads),
                "-c",
                str(connections),
                "-d",
                f"{max(1, round(seconds))}s",
                "-s",
                script.name,
                url + ROUTE,
            ],
            env=dict(os.environ, BENCH_TOKEN=token),
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
        ).stdout
    finally:
        os.unlink(script.name)
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    done, duration_us, p50_us, p99_us, bad_status, socket_errors = (int(x) for x in line.split()[1:])
    return Measurement(done, duration_us / 1e6, p50_us / 1000, p99_us / 1000, bad_status + socket_errors)


async def _client_loop(host: str, port: int, request: bytes, count: int, latencies: list[float]) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    failures = 0
    try:
        for _ in range(count):
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 200"):
                failures += 1
    finally:
        writer.close()
    return failures


def measure_with_python(url: str, token: str, requests: int, connections: int) -> Measurement:
    parsed = httpx.URL(url)
    host, port = parsed.host, parsed.port or 80
    request = (
        f"GET {ROUTE} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: application/json\r\n\r\n"
    ).encode()
    latencies: list[float] = []

    async def run() -> int:
        per_client = requests // connections
        results = await asyncio.gather(
            *(_client_loop(host, port, request, per_client, latencies) for _ in range(connections))
        )
        return sum(results)

    started = time.perf_counter()
    failures = asyncio.run(run())
    seconds = time.perf_counter() - started
    latencies.sort()
    quantiles = statistics.quantiles(latencies, n=100)
    return Measurement(len(latencies), seconds, quantiles[49] * 1000, quantiles[98] * 1000, failures)


def sign_up_and_in(gateway_url: str) -> str:
    email = f"bench-{secrets.token_hex(6)}@example.com"
    password = "bench password " + secrets.token_hex(8)
    with httpx.Client(base_url=gateway_url, timeout=30) as client:
        created = client.post("/api/auth/signup", json={"email": email, "password": password})
        created.raise_for_status()
        signed_in = client.post("/api/auth/signin", json={"email": email, "password": password})
        signed_in.raise_for_status()
        return str(signed_in.json()["access_token"])


def combine(measurements: list[Measurement]) -> Measurement:
    """Rounds combined: the median round's percentiles, total requests over total time."""
    return Measurement(
        requests=sum(m.requests for m in measurements),
        seconds=sum(m.seconds for m in measurements),
        p50_ms=statistics.median(m.p50_ms for m in measurements),
        p99_ms=statistics.median(m.p99_ms for m in measurements),
        failures=sum(m.failures for m in measurements),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--requests", type=int, default=4000, help="requests per target per round")
    parser.add_argument("--connections", type=int, default=4, help="concurrent keep-alive connections")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per target")
    parser.add_argument(
        "--client",
        choices=["python", "wrk"],
        default="python",
        help="load generator: the built-in asyncio client (fixed count) or wrk (duration)",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="with --client wrk: seconds per round")
    args = parser.parse_args(argv)
    use_wrk = args.client == "wrk"
    if use_wrk and shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install wrk)")

    def measure(url: str, token: str, requests: int, connections: int) -> Measurement:
        if use_wrk:
            return measure_with_wrk(url, token, args.seconds * requests / args.requests, connections)
        return measure_with_python(url, token, requests, connections)

    run_id = secrets.token_hex(4)
    base_database = os.environ.get("BERTH_DATABASE_URL", "postgresql://berth:berth@127.0.0.1:5432/berth")
    database_url = base_database.rsplit("/", 1)[0] + f"/berth_bench_{run_id}"
    redis_url = os.environ.get("BERTH_REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"berth-bench-{run_id}:"
    gateway_port, direct_port = free_port(), free_port()
    gateway_url, direct_url = f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{direct_port}"
    state_dir = Path(tempfile.mkdtemp(prefix="berth-bench-"))
    env = dict(
        os.environ,
        BERTH_ENVIRONMENT="test",
        BERTH_DATABASE_URL=database_url,
        BERTH_REDIS_PREFIX=prefix,
        BERTH_LOG_LEVEL="WARNING",
        BERTH_JWT_ISSUER=f"{gateway_url}/api/auth",
        BERTH_GATEWAY_PORT=str(gateway_port),
        BERTH_GATEWAY_STATE_DIR=str(state_dir),
        BERTH_GATEWAY_FUNCTION_CONCURRENCY=str(args.connections),
        # Limits are still checked on every request (that cost is measured), never reached.
        BERTH_GATEWAY_RATE_LIMIT_PER_IP="1000000000",
        BERTH_GATEWAY_RATE_LIMIT_PER_USER="1000000000",
    )
    processes: list[subprocess.Popen[bytes]] = []
    apply_migrations(database_url)
    try:
        with (state_dir / "gateway.log").open("wb") as gateway_log, (state_dir / "direct.log").open("wb") as direct_log:
            gateway = subprocess.Popen(
                [sys.executable, "-m", "cli.main", "gateway"],
                env=env,
                cwd=PROJECT_ROOT,
                stdout=subprocess.DEVNULL,
                stderr=gateway_log,
            )
            processes.append(gateway)
            direct = subprocess.Popen(
                [sys.executable, "-m", "cli.main", "serve", "auth", "--port", str(direct_port)],
                env=env,
                cwd=PROJECT_ROOT,
                stdout=direct_log,
                stderr=subprocess.STDOUT,
            )
            processes.append(direct)
        wait_until_up(gateway_url + "/api/auth/.well-known/jwks.json", gateway)
        wait_until_up(direct_url + "/api/auth/.well-known/jwks.json", direct)
        token = sign_up_and_in(gateway_url)
        targets = {"gateway": gateway_url, "direct": direct_url}
        for url in targets.values():  # warm: every function instance started, every pool filled
            measure(url, token, max(400, args.connections * 50), args.connections)
        results: dict[str, list[Measurement]] = {name: [] for name in targets}
        for round_number in range(args.rounds):
            order = list(targets) if round_number % 2 == 0 else list(reversed(targets))
            for name in order:
                results[name].append(measure(targets[name], token, args.requests, args.connections))
        summary = {name: combine(values) for name, values in results.items()}
    finally:
        for process in processes:
            stop(process)
        drop_database(database_url)
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
        shutil.rmtree(state_dir, ignore_errors=True)

    gateway_result, direct_result = summary["gateway"], summary["direct"]
    added_p50 = gateway_result.p50_ms - direct_result.p50_ms
    load = f"{args.seconds:g} s" if use_wrk else f"{args.requests} requests"
    print(
        f"GET {ROUTE} (authenticated), {args.rounds} rounds x {load}, "
        f"{args.connections} keep-alive connections, client: {'wrk' if use_wrk else 'python asyncio'}, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"{'target':<10}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>10}{'failed':>8}")
    for name, result in summary.items():
        print(f"{name:<10}{result.p50_ms:>10.2f}{result.p99_ms:>10.2f}{result.rps:>10.0f}{result.failures:>8}")
    print(
        f"gateway/direct: p50 x{gateway_result.p50_ms / direct_result.p50_ms:.2f}, "
        f"p99 x{gateway_result.p99_ms / direct_result.p99_ms:.2f}, "
        f"req/s x{gateway_result.rps / direct_result.rps:.2f}"
    )
    verdict = "within" if added_p50 < GOAL_ADDED_P50_MS else "OVER"
    print(f"gateway adds {added_p50:.2f} ms at p50 ({verdict} the {GOAL_ADDED_P50_MS:g} ms goal)")
    print(
        json.dumps(
            {
                name: {
                    "p50_ms": round(r.p50_ms, 3),
                    "p99_ms": round(r.p99_ms, 3),
                    "rps": round(r.rps, 1),
                    "failures": r.failures,
                }
                for name, r in summary.items()
            }
            | {"added_p50_ms": round(added_p50, 3)}
        )
    )
    failed = gateway_result.failures + direct_result.failures
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
