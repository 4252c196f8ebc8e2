"""Metering against real Docker: a container with known limits runs a measured time through the gateway and
the session's real worker, burning CPU; the worker's metering over the events and samples the worker stored
must agree with Docker's own account of the run:

- replica-seconds and memory GiB-seconds with the memory limit x the running time Docker reports
  (``State.StartedAt`` to ``State.FinishedAt``), within 2%;
- CPU-seconds with the container's cgroup CPU counter read at the end (polled from the host's cgroup files
  while the container lives, or Docker's stats when those are not reachable), within 2%.

The windows are metered directly (``meter_window``, 5-second windows, no grace: every event and sample is
stored by the time the container reads ``stopped``), so the test neither waits out a grace nor moves the
shared metering cursor the session worker advances.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from shared.billing.meters import MeterName
from shared.db import get_database
from tests.conftest import RUN_ID, TEST_DATABASE_URL
from tests.e2e.conftest import SignedInUser, sign_up_and_in
from tests.e2e.test_images import upload_and_process
from tests.support.docker_containers import remove_labelled
from tests.support.docker_images import build_test_image, save_image
from tests.support.waiting import wait_until
from worker.container_runtime import CONTAINER_ID_LABEL, OWNER_LABEL
from worker.metering import meter_window, window_bounds
from worker.metering_store import MeteringStore

pytestmark = pytest.mark.docker

WINDOW_SECONDS = 5
RUN_SECONDS = 20
MEMORY_MB = 128
# A busy loop of shell builtins that leaves at once on SIGTERM (PID 1 ignores signals it has no trap for).
BURN = ["sh", "-c", "trap 'exit 0' TERM; while :; do :; done"]


@pytest.fixture(scope="module")
def web_archive(docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tag = f"berth-test/web-metering:{RUN_ID}"
    build_test_image(docker_client, "web", tag)
    path = save_image(docker_client, tag, tmp_path_factory.mktemp("web") / "web.tar")
    docker_client.images.remove(tag)  # the worker loads it from the archive
    yield path


@pytest.fixture
def user(client: httpx.Client, docker_client: docker.DockerClient) -> Iterator[SignedInUser]:
    signed_in = sign_up_and_in(client)
    yield signed_in
    remove_labelled(docker_client, OWNER_LABEL, signed_in.id)


class CpuCounter:
    """The container's cumulative CPU nanoseconds, polled from the host in a thread until it stops: the last
    reading is the counter at the end (to a poll's worth of CPU)."""

    def __init__(self, client: docker.DockerClient, docker_id: str) -> None:
        self._client, self._docker_id = client, docker_id
        self._files = [
            Path(f"/sys/fs/cgroup/cpuacct/docker/{docker_id}/cpuacct.usage"),
            Path(f"/sys/fs/cgroup/cpu,cpuacct/docker/{docker_id}/cpuacct.usage"),
            Path(f"/sys/fs/cgroup/system.slice/docker-{docker_id}.scope/cpu.stat"),
            Path(f"/sys/fs/cgroup/docker/{docker_id}/cpu.stat"),
        ]
        self.last_ns = 0
        self.source = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _read(self) -> int | None:
        for path in self._files:
            try:
                text = path.read_text()
            except OSError:
                continue
            self.source = "cgroup"
            if path.name == "cpu.stat":
                usage = next(line for line in text.splitlines() if line.startswith("usage_usec"))
                return int(usage.split()[1]) * 1000
            return int(text.strip())
        stats = self._client.api.stats(self._docker_id, stream=False, one_shot=True)
        usage = int(((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage") or 0)
        self.source = "docker stats"
        return usage or None

    def _poll(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                value = self._read()
                if value is not None:
                    self.last_ns = max(self.last_ns, value)
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _docker_seconds(state: dict[str, Any]) -> Decimal:
    started = datetime.fromisoformat(state["StartedAt"][:26].rstrip("Z") + "+00:00")
    finished = datetime.fromisoformat(state["FinishedAt"][:26].rstrip("Z") + "+00:00")
    delta = finished - started
    return Decimal(delta.days * 86400 + delta.seconds) + Decimal(delta.microseconds) / Decimal(1_000_000)


async def _metered(container_id: str, since: datetime, until: datetime) -> dict[str, Decimal]:
    """The worker's metering of the container over [since, until), window by window."""
    database = get_database(TEST_DATABASE_URL)
    store = MeteringStore(database)
    totals: dict[str, Decimal] = {}
    start = window_bounds(since, WINDOW_SECONDS)
    try:
        while start < until:
            end = start + timedelta(seconds=WINDOW_SECONDS)
            for record in await meter_window(store, start, end):
                if record.subject_id == container_id:
                    totals[record.meter] = totals.get(record.meter, Decimal(0)) + record.quantity
            start = end
    finally:
        await database.close()
    return totals


def _close(metered: Decimal, expected: Decimal) -> bool:
    return abs(metered - expected) <= expected * Decimal("0.02")


def test_metered_usage_matches_dockers_account_of_the_run(
    client: httpx.Client, worker: Any, web_archive: Path, docker_client: docker.DockerClient, user: SignedInUser
) -> None:
    # GIVEN a container of 128 MB and half a CPU that burns CPU, through the gateway on the real worker
    image = upload_and_process(client, user, "web", web_archive)
    assert image["status"] == "ready", image
    body = {"image_id": image["id"], "name": "burner", "command": BURN, "memory_mb": MEMORY_MB, "cpu": 0.5}
    created = wait_until(
        lambda: (
            (answer := client.post("/api/containers", json=body, headers=user.auth_headers)).status_code != 503
            and answer
        ),
        timeout=30,
        interval=0.5,
        message="no host registered to take the container",
    )
    assert created.status_code == 202, created.text
    container_id = created.json()["id"]

    def status() -> str:
        answer = client.get(f"/api/containers/{container_id}", headers=user.auth_headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] != "failed", answer.json()
        return str(answer.json()["status"])

    wait_until(lambda: status() == "running", timeout=60, interval=0.2, message="the container did not run")
    [found] = docker_client.containers.list(
        ignore_removed=True, all=True, filters={"label": f"{CONTAINER_ID_LABEL}={container_id}"}
    )
    counter = CpuCounter(docker_client, found.id)

    # WHEN it runs a measured time and is stopped
    time.sleep(RUN_SECONDS)
    stopped = client.post(f"/api/containers/{container_id}/stop", headers=user.auth_headers)
    assert stopped.status_code == 202, stopped.text
    wait_until(lambda: status() == "stopped", timeout=40, interval=0.2, message="the container did not stop")
    counter.stop()
    found.reload()
    docker_seconds = _docker_seconds(found.attrs["State"])
    assert found.attrs["HostConfig"]["Memory"] == MEMORY_MB * 1024 * 1024

    # THEN the metered figures match Docker's account within 2%
    since = datetime.fromisoformat(created.json()["created_at"]).astimezone(UTC) - timedelta(seconds=1)
    metered = asyncio.run(_metered(container_id, since, datetime.now(UTC) + timedelta(seconds=1)))
    replica_seconds = metered[MeterName.REPLICA_SECONDS]
    memory_gib_seconds = metered[MeterName.MEMORY_GIB_SECONDS]
    cpu_seconds = metered[MeterName.CPU_SECONDS]
    cgroup_cpu_seconds = Decimal(counter.last_ns) / Decimal(1_000_000_000)
    figures = (
        f"docker ran {docker_seconds:.3f} s; metered {replica_seconds:.3f} replica-s, "
        f"{memory_gib_seconds:.4f} GiB-s; cpu {cpu_seconds:.3f} s metered vs {cgroup_cpu_seconds:.3f} s "
        f"({counter.source})"
    )
    print(figures)
    assert docker_seconds >= RUN_SECONDS, figures
    assert _close(replica_seconds, docker_seconds), figures
    assert _close(memory_gib_seconds, docker_seconds * MEMORY_MB / 1024), figures
    assert cgroup_cpu_seconds > RUN_SECONDS * Decimal("0.3"), f"the container barely used the CPU: {figures}"
    assert _close(cpu_seconds, cgroup_cpu_seconds), figures
