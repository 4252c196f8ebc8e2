"""How long Berth takes from `complete` to `ready` for a ~50 MB image, against a bare `docker load`.

Both sides run in one run on this machine with the same archive: a multi-layer image built here from
Debian's busybox-static plus incompressible data (no registry). Berth's side goes through everything a
user's image goes through: the gateway, the images function, SQS and S3 (moto), a `berth worker`
streaming the archive, validating and scanning every layer, loading it into Docker and tagging it. Its time
runs from the `complete` request to the moment the image's record turns `ready` (the record's own timestamp).

    .venv/bin/python bench/image_processing.py [--megabytes 50] [--rounds 3]

Prints each round and the median ratio. Aim: Berth within 1.5x of `docker load`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import docker
import httpx
from local_platform import local_platform  # the bench folder is on sys.path; this puts the project root there

from tests.support.archives import Entry, build_archive, image_config

POLL_SECONDS = 0.1


def make_archive(path: Path, megabytes: int) -> Path:
    busybox = Path("/bin/busybox").read_bytes()
    chunk = megabytes * 1024 * 1024 // 4
    layers = [
        [Entry("bin/busybox", busybox, 0o755)],
        *[[Entry(f"srv/data-{i}.bin", os.urandom(chunk))] for i in range(4)],
    ]
    return build_archive(path, layers, config=image_config(user="1000", cmd=["/bin/busybox", "sleep", "1"]))


def bare_docker_load(client: docker.DockerClient, archive: Path) -> float:
    """Time `docker load`, then remove the image again so Berth's round loads every layer afresh."""
    start = time.perf_counter()
    with archive.open("rb") as data:
        loaded = client.images.load(data)
    elapsed = time.perf_counter() - start
    for image in loaded:
        client.images.remove(image.id, force=True)
    return elapsed


def berth_round(client: httpx.Client, headers: dict[str, str], archive: Path, name: str) -> float:
    image = client.post("/api/images", json={"name": name, "tag": "1"}, headers=headers).json()
    with archive.open("rb") as data:
        stored = httpx.post(
            image["upload"]["url"], data=image["upload"]["fields"], files={"file": ("image.tar", data)}, timeout=120
        )
    stored.raise_for_status()
    start = time.time()
    answer = client.post(f"/api/images/{image['id']}/complete", headers=headers)
    answer.raise_for_status()
    while True:
        record = client.get(f"/api/images/{image['id']}", headers=headers).json()
        if record["status"] in ("ready", "rejected", "failed"):
            break
        time.sleep(POLL_SECONDS)
    if record["status"] != "ready":
        raise SystemExit(f"image ended {record['status']}")
    # Ready when the record turned ready: its updated_at is set by that very update (PostgreSQL runs on this
    # host, same clock). Polling every few ms to see it instead cost Berth ~0.1 s a round: ~50 requests through
    # the gateway, function and database, on the 2 cores the worker and Docker need, that `docker load` never
    # has to share. A user following progress (`berth push`) polls every 0.5 s.
    elapsed = min(time.time(), datetime.fromisoformat(record["updated_at"]).timestamp()) - start
    client.delete(f"/api/images/{image['id']}", headers=headers)
    return elapsed


def wait_until_removed(docker_client: docker.DockerClient, prefix: str) -> None:
    """Wait for the worker to remove a deleted image, so the next round finds no layer cached."""
    deadline = time.monotonic() + 60
    # The raw list (one call), not images.list(): that inspects each image after listing, and fails when
    # any image on this shared Docker goes away in between.
    while any(tag.startswith(prefix) for i in docker_client.api.images() for tag in i.get("RepoTags") or []):
        if time.monotonic() > deadline:
            raise SystemExit(f"{prefix}* was not removed after delete")
        time.sleep(0.1)


def show_worker_phases(log: Path) -> None:
    """Where the worker's time went in each round (download, validate+scan, docker load+tag)."""
    import json

    rows = [json.loads(line) for line in log.read_text().splitlines() if '"image ready"' in line]
    if rows:
        print(
            "\nworker phases (s): "
            + "; ".join(
                f"download {r.get('download_s')} validate {r.get('validate_s')} load {r.get('load_s')}"
                for r in rows[1:]
            )
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    docker_client = docker.from_env(timeout=300)
    try:
        with local_platform() as platform:
            # A fresh archive (new random layers) each round: neither side may find a layer already loaded.
            archives = [make_archive(platform.state / f"bench-{i}.tar", args.megabytes) for i in range(args.rounds + 1)]
            size = archives[0].stat().st_size / 1e6
            print(f"archives: {size:.1f} MB, 5 layers each, new data every round; {args.rounds} rounds\n")
            with httpx.Client(base_url=platform.url, timeout=60) as client:
                headers = platform.sign_up(client)
                me = client.get("/api/auth/me", headers=headers).json()["id"]
                berth_round(client, headers, archives[0], "warmup")
                wait_until_removed(docker_client, f"berth/{me}/")
                ratios = []
                print(f"{'round':>5}  {'docker load':>12}  {'berth complete->ready':>22}  {'ratio':>6}")
                for round_number in range(1, args.rounds + 1):
                    archive = archives[round_number]
                    bare = bare_docker_load(docker_client, archive)
                    platform_seconds = berth_round(client, headers, archive, f"bench{round_number}")
                    wait_until_removed(docker_client, f"berth/{me}/")
                    ratios.append(platform_seconds / bare)
                    print(
                        f"{round_number:>5}  {bare:>11.2f}s  {platform_seconds:>21.2f}s  "
                        f"{platform_seconds / bare:>5.2f}x"
                    )
            median = statistics.median(ratios)
            print(f"\nmedian ratio berth/docker load: {median:.2f}x (aim: <= 1.5x)")
            show_worker_phases(platform.worker_log)
    finally:
        docker_client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
