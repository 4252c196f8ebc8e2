"""Traffic history end to end: requests sent through a listener appear in its history series
(``GET /api/load-balancer/listeners/{id}/stats?from=&to=&step=``) at the step asked for, with exactly the
bytes the clients sent and read, and the series survives an lb-runtime restart: earlier points stay, and
traffic after the restart is counted once although lb-runtime's counters started again from zero.

The test owns its lb-runtime (never the session's shared one): it binds the listeners on 127.0.0.2 (still
loopback) so that it can run beside the session's lb-runtime, which holds the same ports on 127.0.0.1, and
it is read by the worker's own recording round (worker.traffic_recorder: read /metrics, store the deltas)
at moments the test chooses, so each reading's content is known.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from shared.db import Database
from shared.traffic_history import parse_lb_metrics
from tests.conftest import PROJECT_ROOT, TEST_DATABASE_URL, RunningGateway, free_port, stop_process, wait_for_http
from tests.e2e.conftest import SignedInUser, sign_up_and_in
from tests.e2e.test_images import upload_and_process
from tests.e2e.test_traffic import WHOAMI, _deploy, _listener, web_archive  # noqa: F401
from tests.support.docker_containers import remove_labelled
from tests.support.waiting import wait_until
from worker.container_runtime import OWNER_LABEL
from worker.traffic_recorder import read_lb_metrics
from worker.traffic_store import TrafficStore

pytestmark = pytest.mark.docker

BIND = "127.0.0.2"
BEFORE_RESTART = 30
AFTER_RESTART = 12  # fewer than before: the recorder sees the counter drop, as after any restart


@dataclass
class PrivateLb:
    admin_url: str
    admin_port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "BERTH_LB_ADMIN_PORT": str(self.admin_port),
            "BERTH_LB_BIND_ADDRESS": BIND,
            "BERTH_LOG_LEVEL": "INFO",
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cli.main", "lb"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=PROJECT_ROOT,
            )
        wait_for_http(self.admin_url + "/healthz", process=self.process)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


@pytest.fixture
def private_lb(tmp_path: Path, backing_services: None) -> Iterator[PrivateLb]:
    port = free_port()
    lb = PrivateLb(f"http://127.0.0.1:{port}", port, tmp_path / "lb-runtime.log")
    lb.start()
    yield lb
    lb.stop()


@pytest.fixture
def served_user(
    gateway: RunningGateway,
    worker: Any,
    web_archive: Path,  # noqa: F811
    docker_client: docker.DockerClient,
) -> Iterator[tuple[SignedInUser, dict[str, Any]]]:
    """A user with one running replica of service "web" and a listener in front of it."""
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        user = sign_up_and_in(client)
        try:
            image = upload_and_process(client, user, "web", web_archive)
            assert image["status"] == "ready", image
            _deploy(client, user, image["id"], "web-0")
            yield user, _listener(client, user)
        finally:
            remove_labelled(docker_client, OWNER_LABEL, user.id)


def record_reading(admin_url: str) -> None:
    """One recording round of the worker's traffic recorder against ``admin_url``."""

    async def round_() -> None:
        database = Database(TEST_DATABASE_URL, max_size=2)
        await database.open()
        try:
            reading = parse_lb_metrics(await read_lb_metrics(admin_url))
            await TrafficStore(database).record(admin_url, reading, 10)
        finally:
            await database.close()

    asyncio.run(round_())


def wait_until_served(lb: PrivateLb, listener_id: str) -> None:
    """Until the private lb-runtime has bound the listener and sees a healthy instance (asked on its admin
    port, so that no request is sent through the listener before the test counts)."""

    def ready() -> bool:
        answer = httpx.get(f"{lb.admin_url}/stats", params={"listener": listener_id}, timeout=2)
        return answer.status_code == 200 and any(i["healthy"] and not i["ejected"] for i in answer.json()["instances"])

    wait_until(ready, timeout=30, interval=0.2, ignoring=(httpx.HTTPError,), message="lb-runtime never served it")


def send(port: int, count: int) -> tuple[int, int]:
    """``count`` GETs of whoami through the listener, each on its own connection and read to its close; the
    bytes the client sent and read, exactly (what lb-runtime counts on the listener's side)."""
    request = f"GET {WHOAMI} HTTP/1.1\r\nHost: {BIND}:{port}\r\nConnection: close\r\n\r\n".encode()
    received = 0
    for _ in range(count):
        answer = b""
        with socket.create_connection((BIND, port), timeout=10) as connection:
            connection.sendall(request)
            while chunk := connection.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        received += len(answer)
    return count * len(request), received


def series(client: httpx.Client, user: SignedInUser, listener_id: str, start: datetime, step: int) -> dict[str, Any]:
    answer = client.get(
        f"/api/load-balancer/listeners/{listener_id}/stats",
        params={"from": start.isoformat(), "to": datetime.now(UTC).isoformat(), "step": step},
        headers=user.auth_headers,
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def wait_for_next_ten_seconds() -> None:
    """Until the next 10 s interval begins: what follows lands in samples of its own."""
    time.sleep(10 - time.time() % 10 + 0.2)


def test_listener_traffic_is_in_its_history_and_survives_an_lb_runtime_restart(
    gateway: RunningGateway, served_user: tuple[SignedInUser, dict[str, Any]], private_lb: PrivateLb
) -> None:
    user, listener = served_user
    started = datetime.fromtimestamp(time.time() // 60 * 60 - 60, UTC)
    # GIVEN the private lb-runtime serving the listener, and the recorder's first reading of it (its cursor)
    wait_until_served(private_lb, listener["id"])
    record_reading(private_lb.admin_url)

    # WHEN requests are sent through the listener and the recorder reads again
    sent, received = send(listener["port"], BEFORE_RESTART)
    record_reading(private_lb.admin_url)

    # THEN the series holds exactly those requests, and exactly the bytes the client sent (in) and read (out),
    # at the step asked for (10 s and 1 min: the minute rows sum the same bytes)
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        for step in (10, 60):
            answer = series(client, user, listener["id"], started, step)
            assert answer["step"] == step
            stamps = [datetime.fromisoformat(point["ts"]) for point in answer["points"]]
            assert all(stamp.timestamp() % step == 0 for stamp in stamps), stamps
            assert all((b - a).total_seconds() == step for a, b in itertools.pairwise(stamps)), stamps
            assert sum(point["requests"] for point in answer["points"]) == BEFORE_RESTART, answer
            assert point_bytes(answer["points"]) == (sent, received), answer
            busy = [point for point in answer["points"] if point["requests"]]
            assert all(point["rps"] == round(point["requests"] / step, 3) for point in busy)
            assert all(point["latency_ms"]["p50"] is not None for point in busy)
            # the instance's own series counts its side of the same exchanges (the requests as forwarded, its
            # answers as it wrote them)
            [instance] = answer["instances"]
            instance_in, instance_out = point_bytes(instance["points"])
            assert instance_in > 0 and instance_out > 0, instance
        before = {p["ts"]: p["requests"] for p in series(client, user, listener["id"], started, 10)["points"]}

        # WHEN lb-runtime restarts (its counters start again from zero), the recorder reads it as the worker
        # would once it is back, and new requests follow in a later interval
        wait_for_next_ten_seconds()
        private_lb.stop()
        private_lb.start()
        wait_until_served(private_lb, listener["id"])
        record_reading(private_lb.admin_url)
        sent_after, received_after = send(listener["port"], AFTER_RESTART)
        record_reading(private_lb.admin_url)

        # THEN the earlier points are unchanged and the new requests are counted once, not added to the old
        # counters nor lost to the reset
        after = series(client, user, listener["id"], started, 10)
        by_ts = {p["ts"]: p["requests"] for p in after["points"]}
        assert {ts: by_ts[ts] for ts, count in before.items() if count} == {
            ts: count for ts, count in before.items() if count
        }
        assert sum(by_ts.values()) == BEFORE_RESTART + AFTER_RESTART, after
        assert sum(count for ts, count in by_ts.items() if ts not in before or not before[ts]) == AFTER_RESTART
        assert point_bytes(after["points"]) == (sent + sent_after, received + received_after)
        minute = series(client, user, listener["id"], started, 60)
        assert sum(point["requests"] for point in minute["points"]) == BEFORE_RESTART + AFTER_RESTART
        assert point_bytes(minute["points"]) == (sent + sent_after, received + received_after)


def point_bytes(points: list[dict[str, Any]]) -> tuple[int, int]:
    """The bytes in and out of a series' points, summed."""
    return sum(point["bytes_in"] for point in points), sum(point["bytes_out"] for point in points)
