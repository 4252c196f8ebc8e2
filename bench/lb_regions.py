"""What region-aware selection adds per request: one lb-runtime, two listeners over the same four instances.

- ``plain``: round robin over the four, no region policy (what every listener did before regions);
- ``regional``: the same four split into two regions (eu, us) with a policy that routes by client region:
  every request has its client located (trusted-proxy rule on ``X-Forwarded-For``, GeoIP country, country
  table), its region's order looked up, per-region health and load counted, then the region's round robin.

Both listeners live in one lb-runtime process pinned to CPU 0; nginx (the four instances, one worker) and
wrk share CPU 1. Every request carries ``X-Forwarded-For: 81.2.69.142`` (GB -> eu) from a trusted peer, so
the regional listener takes its full path (the plain one ignores the header for choosing). Rounds alternate
the listeners; the best round of each is kept. Prints req/s, p50, p99 and CPU per request of each, and the
difference; then the selection alone in-process (ns per pick, both builds when compiled).

    .venv/bin/python bench/lb_regions.py [--seconds 5] [--rounds 2] [--connections 50,1]

Needs wrk, nginx and taskset.
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
import timeit
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROXY_CPU, LOAD_CPU = "0", "1"
WRK = ["taskset", "-c", LOAD_CPU, "wrk", "-t", "1"]
CLIENT_ADDRESS = "81.2.69.142"  # in geoip2fast's data: United Kingdom

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
    {listen}
    location / {{ return 200 "hello from the backend\\n"; }}
  }}
}}
"""

WRK_SCRIPT = f'wrk.headers["X-Forwarded-For"] = "{CLIENT_ADDRESS}"\n' + (
    """
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout))
end
"""
)


@dataclass
class Measurement:
    listener: str
    connections: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_seconds: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us(self) -> float:
        return self.cpu_seconds / max(self.requests, 1) * 1e6


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
def running(command: list[str], port: int, cpu: str, env: dict[str, str] | None = None) -> Iterator[int]:
    """Start ``command`` pinned to ``cpu``, wait for ``port``; its pid; SIGTERM (then SIGKILL) at exit."""
    process = subprocess.Popen(
        ["taskset", "-c", cpu, *command], cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_for_port(port, process)
        yield process.pid
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(url: str, connections: int, seconds: float, script: Path) -> tuple[int, float, float, float, int]:
    output = subprocess.run(
        [*WRK, "-c", str(connections), "-d", f"{max(1, round(seconds))}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    done, duration_us, p50_us, p99_us, errors = (int(x) for x in line.split()[1:])
    return done, duration_us / 1e6, p50_us / 1000, p99_us / 1000, errors


def measure(listener: str, url: str, connections: int, seconds: float, script: Path, pid: int) -> Measurement:
    run_wrk(url, connections, 1.0, script)  # warm-up: pools filled
    before = cpu_seconds(pid)
    done, duration, p50, p99, errors = run_wrk(url, connections, seconds, script)
    return Measurement(listener, connections, done, duration, p50, p99, errors, cpu_seconds(pid) - before)


def snapshot(plain_port: int, regional_port: int, backend_ports: list[int]) -> dict[str, object]:
    instances = [
        {"id": f"i{index}", "address": "127.0.0.1", "port": port, "region": "eu" if index < 2 else "us"}
        for index, port in enumerate(backend_ports)
    ]
    plain = [{key: value for key, value in instance.items() if key != "region"} for instance in instances]
    policy = {"order": ["eu", "us"], "routing": "client_region", "max_in_flight": 10_000}
    return {
        "listeners": [
            {"id": "plain", "port": plain_port, "protocol": "http", "algorithm": "round_robin", "instances": plain},
            {
                "id": "regional",
                "port": regional_port,
                "protocol": "http",
                "algorithm": "round_robin",
                "instances": instances,
                "regions": policy,
            },
        ]
    }


def selection_ns(build_name: str) -> tuple[float, float]:
    """ns per pick: the plain balancer's, and the regional one's with the request's region located."""
    sys.path.insert(0, str(PROJECT_ROOT / "lb-runtime"))
    from lb_runtime.hot_path import select_build
    from lb_runtime.regions import ClientLocator, RegionalBalancer
    from lb_runtime.settings import LbSettings
    from lb_runtime.snapshot import Instance, RegionPolicy

    build = select_build(build_name)  # type: ignore[arg-type]
    instances = [
        Instance(id=f"i{n}", address="127.0.0.1", port=1000 + n, region="eu" if n < 2 else "us") for n in range(4)
    ]
    backends = [build.backend("l", instance, checked=False) for instance in instances]
    plain = build.balancer("round_robin", backends)
    settings = LbSettings(region="eu", trusted_proxies=("127.0.0.1",), country_regions={"GB": "eu", "US": "us"})
    regional = RegionalBalancer(
        RegionPolicy(order=("eu", "us"), routing="client_region", max_in_flight=10_000),
        "round_robin",
        backends,
        {instance.id: instance.region for instance in instances},
        build.balancer,
        ClientLocator(settings),
    )
    peer, forwarded, tried = b"127.0.0.1", CLIENT_ADDRESS.encode(), []  # type: ignore[var-annotated]

    def regional_pick() -> object:
        return regional.pick_region(tried, regional.request_region(peer, forwarded, b""))

    count = 200_000
    plain_ns = min(timeit.repeat(lambda: plain.pick(tried), number=count, repeat=3)) / count * 1e9
    regional_ns = min(timeit.repeat(regional_pick, number=count, repeat=3)) / count * 1e9
    return plain_ns, regional_ns


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", default="50,1")
    args = parser.parse_args()
    missing = [tool for tool in ("nginx", "wrk", "taskset") if shutil.which(tool) is None]
    if missing:
        print(f"missing tools: {', '.join(missing)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="berth-bench-regions-") as tmp_name:
        tmp = Path(tmp_name)
        backend_ports = [free_port() for _ in range(4)]
        listen = " ".join(f"listen 127.0.0.1:{port} backlog=4096;" for port in backend_ports)
        (tmp / "backend.conf").write_text(BACKEND_NGINX.format(tmp=tmp, listen=listen))
        script = tmp / "report.lua"
        script.write_text(WRK_SCRIPT)
        plain_port, regional_port, admin_port = free_port(), free_port(), free_port()
        (tmp / "snapshot.json").write_text(json.dumps(snapshot(plain_port, regional_port, backend_ports)))
        env = os.environ | {
            "BERTH_LB_REGION": "eu",
            "BERTH_LB_TRUSTED_PROXIES": "127.0.0.1",
            "BERTH_LB_COUNTRY_REGIONS": json.dumps({"GB": "eu", "US": "us"}),
            "BERTH_LB_LOG_LEVEL": "WARNING",
        }
        lb = [sys.executable, "-m", "lb_runtime", "--snapshot", str(tmp / "snapshot.json")]
        lb += ["--admin-port", str(admin_port), "--upstream-pool-size", "256"]
        nginx = ["nginx", "-c", str(tmp / "backend.conf"), "-p", str(tmp), "-e", str(tmp / "backend-error.log")]
        with running(nginx, backend_ports[0], LOAD_CPU), running(lb, plain_port, PROXY_CPU, env) as pid:
            for _ in range(200):  # both listeners are bound from the same snapshot; the second may lag a moment
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", regional_port)) == 0:
                        break
                time.sleep(0.05)
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/healthz", timeout=5) as answer:
                build = json.load(answer).get("hot_path", "?")
            print(f"lb-runtime build: {build}; {args.rounds} alternating rounds of {args.seconds:g} s, best kept")
            for connections in (int(c) for c in args.connections.split(",")):
                best: dict[str, Measurement] = {}
                for _ in range(args.rounds):
                    for name, port in (("plain", plain_port), ("regional", regional_port)):
                        url = f"http://127.0.0.1:{port}/"
                        result = measure(name, url, connections, args.seconds, script, pid)
                        if name not in best or result.rps > best[name].rps:
                            best[name] = result
                plain, regional = best["plain"], best["regional"]
                print(f"\n{connections} connection(s)")
                print(f"  {'listener':<9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'cpu us/req':>11} {'errors':>7}")
                for m in (plain, regional):
                    print(
                        f"  {m.listener:<9} {m.rps:>9.0f} {m.p50_ms:>8.3f} {m.p99_ms:>8.3f} {m.cpu_us:>11.1f} "
                        f"{m.errors:>7}"
                    )
                print(
                    f"  regional vs plain: req/s {regional.rps / plain.rps - 1:+.1%}, "
                    f"p50 {regional.p50_ms - plain.p50_ms:+.3f} ms, "
                    f"cpu per request {regional.cpu_us - plain.cpu_us:+.1f} us"
                )
    print("\nselection alone (in-process, ns per pick: plain round robin -> located + regional)")
    for name in ("python", "auto"):
        plain_ns, regional_ns = selection_ns(name)
        print(f"  {name:<7} {plain_ns:7.0f} -> {regional_ns:7.0f} ns (+{regional_ns - plain_ns:.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
