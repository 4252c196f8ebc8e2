"""How long Berth takes to deploy a 3-replica service, against starting the same 3 containers by hand with
``docker run``, and how soon a rolling deploy's new release serves its first request, in one run.

Berth's side goes through everything a user's deploy does: the gateway, the services function (the service
and release 1), the host worker's rollout driver (placement, host ports, records, jobs, one step every
``BERTH_WORKER_ROLLOUT_INTERVAL_SECONDS``), the container jobs (hardened create on the tenant network, start,
health check), registration and the release's health gate (``min_healthy_seconds`` 1 here). It is timed from
the create request until the API reports release 1 ``healthy``. The bare side is three ``docker run -d -p
127.0.0.1:PORT:8080`` of the same image, timed until all three answer ``GET /cgi-bin/whoami`` with 200.

Then, behind a listener, a client calls the service continuously while v2 is deployed: printed are the
rolling deploy's duration (request until release 2 is healthy, every old replica drained and removed) and the
time from the deploy request to the first request answered by a v2 replica (through lb-runtime).

    .venv/bin/python bench/service_deploy.py [--rounds 3]

The image is the project's busybox ``web`` test image (built here, no registry), uploaded once.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time

import docker
import httpx
from container_start import IMAGE, upload  # the bench folder is on sys.path
from local_platform import free_port, local_platform

from tests.support.docker_images import build_test_image

WHOAMI = "/cgi-bin/whoami"
REPLICAS = 3
HEALTH_CHECK = {"type": "http", "path": WHOAMI, "interval_seconds": 1, "timeout_seconds": 1, "retries": 2}
POLICY = {"max_surge": 1, "max_unavailable": 0, "min_healthy_seconds": 1, "healthy_deadline_seconds": 120}


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=0.2).status_code == 200
    except httpx.TransportError:
        return False


def bare_round() -> float:
    ports = [free_port() for _ in range(REPLICAS)]
    names = [f"berth-bench-svc-{port}" for port in ports]
    start = time.perf_counter()
    for name, port in zip(names, ports, strict=True):
        subprocess.run(
            ["docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", IMAGE],
            check=True,
            capture_output=True,
        )
    waiting = {f"http://127.0.0.1:{port}{WHOAMI}" for port in ports}
    while waiting:
        waiting = {url for url in waiting if not answers(url)}
        time.sleep(0.005)
    elapsed = time.perf_counter() - start
    subprocess.run(["docker", "rm", "-f", *names], check=True, capture_output=True)
    return elapsed


def release_status(client: httpx.Client, headers: dict[str, str], name: str, number: int) -> str:
    releases = client.get(f"/api/services/{name}/releases", headers=headers).json()["items"]
    return next(item["status"] for item in releases if item["number"] == number)


def wait_release(client: httpx.Client, headers: dict[str, str], name: str, number: int) -> None:
    deadline = time.monotonic() + 180
    while (status := release_status(client, headers, name, number)) != "healthy":
        if status in ("failed", "rolled_back") or time.monotonic() > deadline:
            raise SystemExit(f"release {number} of {name} ended {status}")
        time.sleep(0.02)


def berth_round(client: httpx.Client, headers: dict[str, str], image_id: str, name: str) -> float:
    body = {
        "name": name,
        "image_id": image_id,
        "replicas": REPLICAS,
        "ports": [{"container_port": 8080}],
        "memory_mb": 64,
        "health_check": HEALTH_CHECK,
        "update_policy": POLICY,
    }
    start = time.perf_counter()
    answer = client.post("/api/services", json=body, headers=headers)
    if answer.status_code != 202:
        raise SystemExit(f"create answered {answer.status_code}: {answer.text}")
    wait_release(client, headers, name, 1)
    return time.perf_counter() - start


def delete(client: httpx.Client, headers: dict[str, str], name: str) -> None:
    client.request("DELETE", f"/api/services/{name}", json={"confirm": name}, headers=headers).raise_for_status()


class Traffic:
    """One client calling the listener in a loop: (when, who answered)."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}{WHOAMI}"
        self.answers: list[tuple[float, str]] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as http:
            while not self._stop.is_set():
                try:
                    answer = http.get(self.url)
                    if answer.status_code == 200:
                        self.answers.append((time.perf_counter(), answer.text.strip()))
                    else:
                        self.failures += 1
                except httpx.HTTPError:
                    self.failures += 1
                time.sleep(0.002)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def rolling_deploy(client: httpx.Client, headers: dict[str, str], name: str) -> tuple[float, float, int]:
    """Deploy v2 (a changed environment) under traffic: (deploy duration, deploy request -> first v2 answer,
    failed requests)."""
    listener = client.post(
        "/api/load-balancer/listeners", json={"service": name, "algorithm": "round_robin"}, headers=headers
    )
    listener.raise_for_status()
    port = listener.json()["port"]
    deadline = time.monotonic() + 30
    while not answers(f"http://127.0.0.1:{port}{WHOAMI}"):
        if time.monotonic() > deadline:
            raise SystemExit("the listener never answered")
        time.sleep(0.05)
    with Traffic(port) as traffic:
        time.sleep(0.5)
        start = time.perf_counter()
        client.post(f"/api/services/{name}/deploy", json={"env": {"VERSION": "2"}}, headers=headers).raise_for_status()
        wait_release(client, headers, name, 2)
        duration = time.perf_counter() - start
        replicas = client.get("/api/containers", params={"service": name}, headers=headers).json()["items"]
        v2_hosts = set()
        for replica in replicas:
            if replica["release"] == 2 and replica["desired_state"] == "running":
                bound = replica["ports"][0]
                v2_hosts.add(httpx.get(f"http://{bound['host_ip']}:{bound['host_port']}{WHOAMI}").text.strip())
    first = min(at for at, who in traffic.answers if who in v2_hosts and at >= start)
    client.delete(f"/api/load-balancer/listeners/{listener.json()['id']}", headers=headers)
    return duration, first - start, traffic.failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    docker_client = docker.from_env(timeout=120)
    build_test_image(docker_client, "web", IMAGE)
    try:
        with local_platform() as platform, httpx.Client(base_url=platform.url, timeout=60) as client:
            headers = platform.sign_up(client)
            image_id = upload(client, headers, platform)
            bare_round()
            ratios = []
            print(f"{'round':>5}  {'3x docker run':>14}  {'berth service':>14}  {'ratio':>6}")
            for round_number in range(1, args.rounds + 1):
                bare = bare_round()
                name = f"bench-{round_number}"
                platform_seconds = berth_round(client, headers, image_id, name)
                ratios.append(platform_seconds / bare)
                print(
                    f"{round_number:>5}  {bare:>13.3f}s  {platform_seconds:>13.3f}s  {platform_seconds / bare:>5.2f}x"
                )
                if round_number < args.rounds:
                    delete(client, headers, name)
            median = statistics.median(ratios)
            print(f"\nmedian ratio berth 3-replica service healthy / 3x docker run answering: {median:.2f}x")
            duration, first_served, failures = rolling_deploy(client, headers, f"bench-{args.rounds}")
            print(
                f"rolling deploy v1 -> v2 of {REPLICAS} replicas (surge 1, min healthy 1 s): {duration:.3f}s; "
                f"deploy request -> first request served by v2: {first_served:.3f}s; failed requests: {failures}"
            )
            delete(client, headers, f"bench-{args.rounds}")
    finally:
        docker_client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
