"""lb-runtime against nginx (HTTP mode) and HAProxy (TCP mode), on one core each, with wrk.

One backend (nginx answering a small 200 from memory) and wrk share CPU 1; the proxy under test runs alone
on CPU 0 (taskset), so the figures compare what one core of each proxy can carry:

- HTTP: lb-runtime (uvloop + httptools, upstream pool sized to the concurrency) against nginx (one worker,
  ``keepalive`` sized to the concurrency), at 50 and 200 connections and at 1 connection (unloaded latency);
- TCP: lb-runtime's tcp mode against HAProxy ``mode tcp`` with ``nbthread 1`` at the same concurrencies;
- HTTPS (``--https``): TLS terminated by each (same EC P-256 certificate, TLS 1.2/1.3), keep-alive;
- ``--processes N``: lb-runtime with N worker processes against nginx with N workers, all on every core.

lb-runtime runs with every feature on: an active health check, balancing, metrics and request ids (nginx
sets X-Request-Id too); ``--hot-path`` picks its build (the one used is printed as ``lb/compiled`` or
``lb/python``). Prints requests/s, p50 and p99 of each run, the CPU per request of each proxy and
lb-runtime's ratios to the reference proxy. Rounds alternate the proxies so both see the same machine; the
best round of each is reported, with the load average before and after (req/s suffers from other work on
the machine far more than CPU per request does).

    .venv/bin/python bench/lb_proxy.py [--seconds 8] [--rounds 2] [--connections 50,200,1] [--https]

Needs the Debian packages nginx (nginx-light is enough), haproxy and wrk, plus taskset (util-linux):
    apt-get install -y nginx-light haproxy wrk
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROXY_CPU = "0"
LOAD_CPU = "1"  # the backend and wrk
WRK = ["taskset", "-c", LOAD_CPU, "wrk"]  # with --processes N: every core
WRK_THREADS = [1]  # with --processes N: two (never more than the connections: wrk refuses that)
GOAL_HTTP_RATIO = 0.9

WRK_SCRIPT = """
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""

BACKEND_NGINX = """
worker_processes 1;
daemon off;
pid {tmp}/backend.pid;
error_log {tmp}/backend-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{ return 200 "hello from the backend\\n"; }}
  }}
}}
"""

PROXY_NGINX = """
worker_processes {workers};
daemon off;
pid {tmp}/proxy.pid;
error_log {tmp}/proxy-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  upstream backend {{
    server 127.0.0.1:{backend_port};
    keepalive {pool};
    keepalive_requests 1000000;
  }}
  server {{
    listen 127.0.0.1:{port}{tls_listen} backlog=4096;
    {tls}
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Request-Id $request_id;
    }}
  }}
}}
"""

# nginx's TLS termination as lb-runtime's: TLS 1.2/1.3, modern ciphers, the same certificate (EC P-256).
NGINX_TLS = (
    "ssl_certificate {tmp}/tls-chain.pem; ssl_certificate_key {tmp}/tls-key.pem; ssl_protocols TLSv1.2 TLSv1.3; "
    "ssl_ciphers ECDHE+AESGCM:ECDHE+CHACHA20; ssl_session_cache shared:SSL:10m;"
)

HAPROXY = """
global
  nbthread 1
  maxconn 4000
defaults
  mode tcp
  timeout connect 3s
  timeout client 60s
  timeout server 60s
frontend front
  bind 127.0.0.1:{port}
  default_backend back
backend back
  server s1 127.0.0.1:{backend_port}
"""


@dataclass
class Measurement:
    proxy: str
    connections: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_seconds: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_request(self) -> float:
        """The proxy's CPU time per request: less sensitive to other load on the machine than req/s."""
        return self.cpu_seconds * 1e6 / self.requests if self.requests else 0.0


def missing_tools() -> list[str]:
    return [tool for tool in ("nginx", "haproxy", "wrk", "taskset") if shutil.which(tool) is None]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            errors = process.stderr.read().decode(errors="replace")[-2000:] if process.stderr else ""
            raise RuntimeError(f"the process for port {port} exited with {process.returncode}: {errors}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout:g} s")


@contextmanager
def running(
    command: list[str], port: int, cpu: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``command`` pinned to ``cpu``, wait for ``port``, stop it (SIGTERM, then SIGKILL) at exit."""
    process = subprocess.Popen(
        ["taskset", "-c", cpu, *command],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, process)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run_wrk(url: str, connections: int, seconds: float, script: Path) -> tuple[int, float, float, float, int]:
    output = subprocess.run(
        [
            *WRK,
            "-t",
            str(min(WRK_THREADS[0], connections)),
            "-c",
            str(connections),
            "-d",
            f"{max(1, round(seconds))}s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    done, duration_us, p50_us, p99_us, bad_status, socket_errors = (int(x) for x in line.split()[1:])
    return done, duration_us / 1e6, p50_us / 1000, p99_us / 1000, bad_status + socket_errors


def cpu_seconds(root: int) -> float:
    """User + system CPU of ``root`` and its children (nginx's worker), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(fields[1])
        if root in (pid, ppid):
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def measure(proxy: str, url: str, connections: int, seconds: float, script: Path, pid: int) -> Measurement:
    run_wrk(url, connections, min(2.0, seconds), script)  # warm-up: pools filled, caches hot
    cpu_before = cpu_seconds(pid)
    done, duration, p50, p99, errors = run_wrk(url, connections, seconds, script)
    cpu = cpu_seconds(pid) - cpu_before
    return Measurement(proxy, connections, done, duration, p50, p99, errors, cpu)


def lb_runtime_command(snapshot: Path, admin_port: int, pool: int, processes: int) -> list[str]:
    options = ["--snapshot", str(snapshot), "--admin-port", str(admin_port), "--upstream-pool-size", str(pool)]
    if processes > 1:
        options += ["--processes", str(processes)]
    return [sys.executable, "-m", "lb_runtime", *options]


def lb_runtime_build(admin_port: int) -> str:
    """Which build of the hot path the running lb-runtime serves with (its /healthz says)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/healthz", timeout=5) as answer:
        return str(json.load(answer).get("hot_path", "?"))


def write_certificate(tmp: Path) -> None:
    """A self-signed EC P-256 certificate for 127.0.0.1 (tls-chain.pem, tls-key.pem), for both proxies."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench.berth.test")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("bench.berth.test")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (tmp / "tls-chain.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (tmp / "tls-key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def write_snapshot(path: Path, port: int, protocol: str, backend_port: int, tmp: Path) -> None:
    # Every feature on: an active health check (its probes share the backend), balancing, metrics, request ids.
    instance = {"id": "backend", "address": "127.0.0.1", "port": backend_port, "weight": 1}
    check = {"type": "tcp" if protocol == "tcp" else "http", "path": "/", "interval_seconds": 1}
    listener = {
        "id": "bench",
        "port": port,
        "protocol": protocol,
        "algorithm": "round_robin",
        "health_check": check,
        "instances": [instance],
    }
    if protocol == "https":
        chain, key = (tmp / "tls-chain.pem").read_text(), (tmp / "tls-key.pem").read_text()
        listener["certificates"] = [{"id": "bench", "chain_pem": chain, "key_pem": key}]
    path.write_text(json.dumps({"listeners": [listener]}))


def compare(
    tmp: Path,
    backend_port: int,
    mode: str,
    concurrencies: list[int],
    seconds: float,
    rounds: int,
    script: Path,
    hot_path: str,
    processes: int = 1,
) -> list[tuple[Measurement, Measurement]]:
    """For each concurrency: best-of-``rounds`` of lb-runtime and of the reference proxy, alternated."""
    reference = "haproxy" if mode == "tcp" else "nginx"
    scheme = "https" if mode == "https" else "http"
    env = dict(os.environ, BERTH_LB_LOG_LEVEL="WARNING", BERTH_LB_HOT_PATH=hot_path)
    # One process: the proxy alone on CPU 0. Several: every proxy process (and the load) on every core.
    proxy_cpus = PROXY_CPU if processes == 1 else f"0-{(os.cpu_count() or 2) - 1}"
    pairs = []
    for connections in concurrencies:
        pool = max(connections, 8)
        lb_port, ref_port = free_port(), free_port()
        snapshot = tmp / f"snapshot-{mode}-{connections}.json"
        write_snapshot(snapshot, lb_port, mode, backend_port, tmp)
        if mode in ("http", "https"):
            config = tmp / f"proxy-{connections}.conf"
            config.write_text(
                PROXY_NGINX.format(
                    tmp=tmp,
                    port=ref_port,
                    backend_port=backend_port,
                    pool=pool,
                    workers=processes,
                    tls_listen=" ssl" if mode == "https" else "",
                    tls=NGINX_TLS.format(tmp=tmp) if mode == "https" else "",
                )
            )
            ref_command = ["nginx", "-c", str(config), "-p", str(tmp)]
        else:
            config = tmp / f"haproxy-{connections}.cfg"
            config.write_text(HAPROXY.format(port=ref_port, backend_port=backend_port))
            ref_command = ["haproxy", "-f", str(config), "-db"]
        best: dict[str, Measurement] = {}
        admin_port = free_port()
        contenders = [
            ("lb-runtime", lb_runtime_command(snapshot, admin_port, pool, processes), lb_port, env),
            (reference, ref_command, ref_port, None),
        ]
        for _ in range(rounds):
            for name, command, port, command_env in contenders:
                with running(command, port, proxy_cpus, command_env) as process:
                    url = f"{scheme}://127.0.0.1:{port}/"
                    result = measure(name, url, connections, seconds, script, process.pid)
                    if name == "lb-runtime":
                        result.proxy = f"lb/{lb_runtime_build(admin_port)}"
                if name not in best or result.rps > best[name].rps:
                    best[name] = result
        pairs.append((best["lb-runtime"], best[reference]))
        print(f"  {mode} c={connections}: done", flush=True)
    return pairs


def report(title: str, pairs: list[tuple[Measurement, Measurement]]) -> None:
    print(f"\n{title}")
    print(f"{'proxy':<12} {'conns':>5} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'cpu us/req':>10}")
    for ours, theirs in pairs:
        for m in (ours, theirs):
            print(
                f"{m.proxy:<12} {m.connections:>5} {m.rps:>10.0f} {m.p50_ms:>8.3f} {m.p99_ms:>8.3f} {m.errors:>6}"
                f" {m.cpu_us_per_request:>10.1f}"
            )
        rps_ratio = ours.rps / theirs.rps if theirs.rps else 0.0
        p50_ratio = ours.p50_ms / theirs.p50_ms if theirs.p50_ms else 0.0
        p99_ratio = ours.p99_ms / theirs.p99_ms if theirs.p99_ms else 0.0
        cpu_ratio = ours.cpu_us_per_request / theirs.cpu_us_per_request if theirs.cpu_us_per_request else 0.0
        print(
            f"{'ratio':<12} {ours.connections:>5} {rps_ratio:>9.2f}x {p50_ratio:>7.2f}x {p99_ratio:>7.2f}x {'':>6}"
            f" {cpu_ratio:>9.2f}x   (lb-runtime / {theirs.proxy})"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each measured wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per proxy (best one kept)")
    parser.add_argument("--connections", default="50,200,1", help="comma-separated concurrencies")
    parser.add_argument("--skip-tcp", action="store_true", help="HTTP mode only")
    parser.add_argument("--https", action="store_true", help="also HTTPS (TLS 1.3, keep-alive) against nginx's TLS")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="lb-runtime --processes N against nginx with N workers, all sharing every core (HTTP mode only)",
    )
    parser.add_argument(
        "--hot-path",
        choices=("auto", "compiled", "python"),
        default="auto",
        help="lb-runtime's build (BERTH_LB_HOT_PATH)",
    )
    args = parser.parse_args()
    missing = missing_tools()
    if missing:
        print(
            f"missing: {', '.join(missing)}. Install them with:\n"
            "    apt-get install -y nginx-light haproxy wrk util-linux\n"
            "(nginx-light or nginx: either provides the nginx binary)",
            file=sys.stderr,
        )
        return 2
    if (os.cpu_count() or 1) < 2:
        print("needs at least 2 CPUs (the proxy on CPU 0, backend and wrk on CPU 1)", file=sys.stderr)
        return 2
    concurrencies = [int(value) for value in args.connections.split(",") if value.strip()]
    if args.processes > 1:
        WRK[:] = ["taskset", "-c", f"0-{(os.cpu_count() or 2) - 1}", "wrk"]
        WRK_THREADS[0] = 2
        args.skip_tcp = True
    with tempfile.TemporaryDirectory(prefix="berth-lb-bench-") as tmp_name:
        tmp = Path(tmp_name)
        script = tmp / "report.lua"
        script.write_text(WRK_SCRIPT)
        backend_port = free_port()
        backend_config = tmp / "backend.conf"
        backend_config.write_text(BACKEND_NGINX.format(tmp=tmp, port=backend_port))
        write_certificate(tmp)
        load = os.getloadavg()
        print(
            f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (other work on the machine skews results)"
        )
        with running(["nginx", "-c", str(backend_config), "-p", str(tmp)], backend_port, LOAD_CPU):
            http = compare(
                tmp,
                backend_port,
                "http",
                concurrencies,
                args.seconds,
                args.rounds,
                script,
                args.hot_path,
                args.processes,
            )
            tcp = (
                []
                if args.skip_tcp
                else compare(tmp, backend_port, "tcp", concurrencies, args.seconds, args.rounds, script, args.hot_path)
            )
            https = (
                compare(tmp, backend_port, "https", concurrencies, args.seconds, args.rounds, script, args.hot_path)
                if args.https
                else []
            )
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    where = "proxy on 1 core" if args.processes == 1 else f"{args.processes} processes/workers on every core"
    report(f"HTTP mode: lb-runtime vs nginx (upstream keepalive = concurrency), {where}", http)
    if tcp:
        report("TCP mode: lb-runtime vs HAProxy (mode tcp, nbthread 1), proxy on 1 core", tcp)
    if https:
        report("HTTPS (TLS terminated, keep-alive): lb-runtime vs nginx's TLS, proxy on 1 core", https)
    loaded = [(ours, theirs) for ours, theirs in http if ours.connections > 1 and theirs.rps]
    if loaded:
        # req/s swings with whatever else the machine runs; CPU per request is the steadier measure of what
        # one core carries: nginx's CPU per request over ours is lb-runtime's share of nginx's capacity.
        by_rps = [ours.rps / theirs.rps for ours, theirs in loaded]
        by_cpu = [theirs.cpu_us_per_request / ours.cpu_us_per_request for ours, theirs in loaded]
        verdict = "meets" if min(by_cpu) >= GOAL_HTTP_RATIO else "misses"
        print(
            f"\nHTTP under load, lb-runtime / nginx: req/s {min(by_rps):.2f}x..{max(by_rps):.2f}x,"
            f" per-core capacity (CPU per request) {min(by_cpu):.2f}x..{max(by_cpu):.2f}x"
            f" ({verdict} the {GOAL_HTTP_RATIO}x goal)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
