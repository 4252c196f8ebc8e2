"""Two regions on this machine, the whole platform: two host workers of their own (BERTH_REGION a and b, each
its own host id) and two lb-runtime instances (BERTH_LB_REGION a and b, each on its own loopback address: a
listener has one port), a service with a replica pinned to each region (``regions`` minimums), and a listener
routing by client region. Requests to region a's lb-runtime all reach a's replica and b's reach b's; with a
trusted proxy's X-Forwarded-For that the GeoIP data places in the other region's country, they cross over.

Containers are of the local "web" test image (built here, never pulled); each answers /cgi-bin/whoami with its
hostname, so every answer names the replica that served it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
import psycopg
import pytest

from tests.conftest import (
    PROJECT_ROOT,
    RUN_ID,
    RunningGateway,
    RunningLb,
    RunningWorker,
    free_port,
    start_worker,
    stop_process,
    wait_for_http,
)
from tests.e2e.conftest import SignedInUser, sign_up_and_in
from tests.e2e.test_images import upload_and_process
from tests.support.docker_containers import remove_labelled
from tests.support.docker_images import build_test_image, save_image
from tests.support.waiting import wait_until
from worker.container_runtime import OWNER_LABEL

pytestmark = pytest.mark.docker

WHOAMI = "/cgi-bin/whoami"
# geoip2fast's bundled data: 8.8.8.8 is in the United States, 81.2.69.142 in the United Kingdom.
US_ADDRESS, GB_ADDRESS = "8.8.8.8", "81.2.69.142"


@dataclass
class Region:
    name: str
    worker: RunningWorker
    lb: RunningLb
    address: str  # where its lb-runtime binds the listeners


# The regions' four extra processes share PostgreSQL's 100 connections with both test processes' own (a CI
# run ran out while the other process fuzzed every function): small pools suffice for one test's traffic.
REGION_POOL_MAX = "2"


def _start_lb(tmp_dir: Path, region: str, address: str, country_regions: dict[str, str]) -> RunningLb:
    admin_port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "BERTH_LB_ADMIN_PORT": str(admin_port),
            "BERTH_LB_BIND_ADDRESS": address,
            "BERTH_LB_REGION": region,
            "BERTH_LB_TRUSTED_PROXIES": "127.0.0.0/8",
            "BERTH_LB_COUNTRY_REGIONS": json.dumps(country_regions),
            "BERTH_LOG_LEVEL": "INFO",
            "BERTH_DATABASE_POOL_MAX": REGION_POOL_MAX,
        }
    )
    log_path = tmp_dir / f"lb-{region}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "lb"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT
        )
    admin_url = f"http://127.0.0.1:{admin_port}"
    try:
        wait_for_http(admin_url + "/healthz", process=process)
    except RuntimeError:
        stop_process(process)
        raise
    return RunningLb(process, log_path, admin_url)


@pytest.fixture(scope="module")
def web_archive(docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tag = f"berth-test/web:{RUN_ID}-regions"
    build_test_image(docker_client, "web", tag)
    path = save_image(docker_client, tag, tmp_path_factory.mktemp("web") / "web.tar")
    docker_client.images.remove(tag)
    yield path


@pytest.fixture(scope="module")
def regions(
    tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient, test_database: str
) -> Iterator[dict[str, Region]]:
    """Regions a and b of this run: a worker (host) and an lb-runtime each. At the end their hosts drain (no
    other test places a container on a host whose worker is gone)."""
    names = {"a": f"ra-{RUN_ID}", "b": f"rb-{RUN_ID}"}
    # Each lb-runtime sends the UK to b and the US to a (a client located nowhere stays in the lb's region).
    countries = {"US": names["a"], "GB": names["b"]}
    started: dict[str, Region] = {}
    try:
        for key, address in (("a", "127.0.0.2"), ("b", "127.0.0.3")):
            tmp = tmp_path_factory.mktemp(f"region-{key}")
            worker = start_worker(
                tmp,
                {
                    "BERTH_HOST_ID": f"geo-{key}-{RUN_ID}",
                    "BERTH_REGION": names[key],
                    "BERTH_DATABASE_POOL_MAX": REGION_POOL_MAX,
                },
            )
            lb = _start_lb(tmp, names[key], address, countries)
            started[key] = Region(names[key], worker, lb, address)
        for region in started.values():
            wait_until(
                lambda region=region: "host registered" in region.worker.log(),
                timeout=30,
                message=lambda region=region: f"the worker of {region.name} never registered:\n{region.worker.log()}",
            )
        yield started
    finally:
        processes = [process for region in started.values() for process in (region.lb.process, region.worker.process)]
        for process in processes:
            process.terminate()  # all at once: each then waits for its own end
        for process in processes:
            stop_process(process)
        with psycopg.connect(test_database) as conn:
            hosts = [f"geo-{key}-{RUN_ID}" for key in names]
            conn.execute("UPDATE hosts SET status = 'draining' WHERE id = ANY(%s)", (hosts,))


def _whoami(url: str, requests: int, headers: dict[str, str] | None = None) -> Counter[str]:
    """Who answered how often, over one keep-alive connection (every answer must be a 200)."""
    served: Counter[str] = Counter()
    with httpx.Client(base_url=url, timeout=10, headers=headers) as traffic:
        for _ in range(requests):
            answer = traffic.get(WHOAMI)
            assert answer.status_code == 200, answer.text
            served[answer.text.strip()] += 1
    return served


def _hostname(container: dict[str, Any]) -> str:
    port = container["ports"][0]
    answer = httpx.get(f"http://{port['host_ip']}:{port['host_port']}{WHOAMI}", timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.text.strip()


def test_each_regions_lb_runtime_serves_its_own_replicas_and_client_regions_cross_over(
    client: httpx.Client,
    gateway: RunningGateway,
    regions: dict[str, Region],
    web_archive: Path,
    docker_client: docker.DockerClient,
) -> None:
    a, b = regions["a"], regions["b"]
    user: SignedInUser = sign_up_and_in(client)
    try:
        # GIVEN a service of 2 replicas, at least 1 in each region, and a listener routing by client region
        image = upload_and_process(client, user, "web", web_archive)
        assert image["status"] == "ready", image
        created = client.post(
            "/api/services",
            json={
                "name": "geo",
                "image_id": image["id"],
                "replicas": 2,
                "ports": [{"container_port": 8080}],
                "regions": [{"name": a.name, "min": 1}, {"name": b.name, "min": 1}],
            },
            headers=user.auth_headers,
        )
        assert created.status_code == 202, created.text

        def running() -> dict[str, dict[str, Any]] | None:
            listed = client.get("/api/containers", params={"service": "geo"}, headers=user.auth_headers).json()
            live = [item for item in listed["items"] if item["status"] == "running"]
            by_region = {item["region"]: item for item in live}
            return by_region if len(live) == 2 and set(by_region) == {a.name, b.name} else None

        replicas = wait_until(running, timeout=45, interval=0.5, message="the replicas did not run, one per region")
        assert {item["requested_region"] for item in replicas.values()} == {a.name, b.name}
        hostnames = {region: _hostname(item) for region, item in replicas.items()}
        service = client.get("/api/services/geo", headers=user.auth_headers).json()
        assert {entry["region"]: entry["running"] for entry in service["replicas_by_region"]} == {a.name: 1, b.name: 1}

        policy = {"order": [a.name, b.name], "routing": "client_region"}
        made = client.post(
            "/api/load-balancer/listeners", json={"service": "geo", "regions": policy}, headers=user.auth_headers
        )
        assert made.status_code == 201, made.text
        listener = made.json()

        def routed(region: Region) -> bool:
            stats = httpx.get(f"{region.lb.admin_url}/stats", params={"listener": listener["id"]}, timeout=5)
            if stats.status_code != 200:
                return False
            instances = stats.json()["instances"]
            return sorted((i["region"], i["healthy"]) for i in instances) == sorted([(a.name, True), (b.name, True)])

        for region in (a, b):
            wait_until(
                lambda region=region: routed(region), timeout=20, interval=0.2, message=f"{region.name} unrouted"
            )
        url = {key: f"http://{region.address}:{listener['port']}" for key, region in regions.items()}

        # WHEN clients with no known location call each region's lb-runtime
        # THEN every request reaches that region's replica
        assert _whoami(url["a"], 20) == {hostnames[a.name]: 20}
        assert _whoami(url["b"], 20) == {hostnames[b.name]: 20}
        # WHEN a trusted proxy says the client is in the UK (b's country) THEN a's lb-runtime sends it to b
        assert _whoami(url["a"], 20, {"X-Forwarded-For": GB_ADDRESS}) == {hostnames[b.name]: 20}
        # AND a US client reaching b's lb-runtime is served in a
        assert _whoami(url["b"], 20, {"X-Forwarded-For": US_ADDRESS}) == {hostnames[a.name]: 20}
    finally:
        deleted = client.request("DELETE", "/api/services/geo", json={"confirm": "geo"}, headers=user.auth_headers)
        assert deleted.status_code in (202, 404), deleted.text
        remove_labelled(docker_client, OWNER_LABEL, user.id)
