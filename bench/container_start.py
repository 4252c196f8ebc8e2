"""How long Berth takes from the create request to the container's first HTTP answer, against a bare
``docker run`` of the same image to its first answer, in one run on this machine.

Berth's side is everything a user's deploy goes through: the gateway, the containers function (placement,
host-port allocation, the record), the host's SQS queue, the ``berth worker`` (hardened create on the
customer network, start, health) and the published port on 127.0.0.1. The bare side is ``docker run -d -p
127.0.0.1:PORT:8080`` of the same image. Both are timed until ``GET /`` on the host port answers 200; the
Berth side first waits for the API to report the container ``running`` (polling every 10 ms), as a client
does. (Calling a published port before the container's network is up costs about a second more on either
side: Docker's port proxy accepts the connection and the first packets to the container's address are lost
while its interface comes up, so they wait for the kernel's one-second retransmit.)
The image is the project's busybox ``web`` test image (built here, no registry), uploaded once.

    .venv/bin/python bench/container_start.py [--rounds 5]

Prints each round and the median ratio. Aim: Berth within 1.5x of the bare ``docker run``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import docker
import httpx
from local_platform import Platform, free_port, local_platform  # the bench folder is on sys.path

from tests.support.docker_images import build_test_image, save_image

IMAGE = "berth-bench/web:latest"
GOAL_RATIO = 1.5


def first_answer(url: str, deadline_seconds: float = 60) -> None:
    """Poll ``url`` until it answers 200 (connection refused or reset until the server listens).

    Each attempt gives up after 0.2 s, so a held connection (see above) costs little."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        try:
            if httpx.get(url, timeout=0.2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} never answered 200")
        time.sleep(0.005)


def bare_round() -> float:
    port = free_port()
    name = f"berth-bench-bare-{port}"
    start = time.perf_counter()
    subprocess.run(
        ["docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", IMAGE],
        check=True,
        capture_output=True,
    )
    first_answer(f"http://127.0.0.1:{port}/")
    elapsed = time.perf_counter() - start
    subprocess.run(["docker", "rm", "-f", name], check=True, capture_output=True)
    return elapsed


def upload(client: httpx.Client, headers: dict[str, str], platform: Platform) -> str:
    archive = save_image(docker.from_env(), IMAGE, platform.state / "web.tar")
    image = client.post("/api/images", json={"name": "web", "tag": "bench"}, headers=headers).json()
    with archive.open("rb") as data:
        httpx.post(
            image["upload"]["url"], data=image["upload"]["fields"], files={"file": ("image.tar", data)}, timeout=120
        ).raise_for_status()
    client.post(f"/api/images/{image['id']}/complete", headers=headers).raise_for_status()
    while (status := client.get(f"/api/images/{image['id']}", headers=headers).json()["status"]) not in (
        "ready",
        "rejected",
        "failed",
    ):
        time.sleep(0.1)
    if status != "ready":
        raise SystemExit(f"the test image ended {status}")
    return str(image["id"])


def berth_round(client: httpx.Client, headers: dict[str, str], image_id: str, name: str) -> float:
    start = time.perf_counter()
    answer = client.post(
        "/api/containers",
        json={"image_id": image_id, "name": name, "ports": [{"container_port": 8080}], "memory_mb": 64},
        headers=headers,
    )
    if answer.status_code != 202:
        raise SystemExit(f"create answered {answer.status_code}: {answer.text}")
    container = answer.json()
    port = container["ports"][0]
    # As a client of the API would: wait for the platform to report the container running, then call it.
    while (status := client.get(f"/api/containers/{container['id']}", headers=headers).json()["status"]) != "running":
        if status in ("failed", "unhealthy", "deleted"):
            raise SystemExit(f"container {name} ended {status}")
        time.sleep(0.01)
    first_answer(f"http://{port['host_ip']}:{port['host_port']}/")
    elapsed = time.perf_counter() - start
    client.delete(f"/api/containers/{container['id']}", headers=headers).raise_for_status()
    deadline = time.monotonic() + 60
    while client.get(f"/api/containers/{container['id']}", headers=headers).json()["status"] != "deleted":
        if time.monotonic() > deadline:
            raise SystemExit(f"container {name} was not deleted")
        time.sleep(0.1)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    docker_client = docker.from_env(timeout=120)
    build_test_image(docker_client, "web", IMAGE)
    try:
        with local_platform() as platform, httpx.Client(base_url=platform.url, timeout=60) as client:
            headers = platform.sign_up(client)
            image_id = upload(client, headers, platform)
            bare_round()
            berth_round(client, headers, image_id, "warmup")
            ratios = []
            print(f"{'round':>5}  {'docker run':>11}  {'berth create':>13}  {'ratio':>6}")
            for round_number in range(1, args.rounds + 1):
                bare = bare_round()
                platform_seconds = berth_round(client, headers, image_id, f"bench-{round_number}")
                ratios.append(platform_seconds / bare)
                print(
                    f"{round_number:>5}  {bare:>10.3f}s  {platform_seconds:>12.3f}s  {platform_seconds / bare:>5.2f}x"
                )
            print(
                f"\nmedian ratio berth create/docker run to first response: {statistics.median(ratios):.2f}x "
                f"(aim: < {GOAL_RATIO}x)"
            )
    finally:
        docker_client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
