"""Images when things go wrong: a worker killed mid-job, an upload over the size limit.

Each test runs a gateway and a worker of its own on a job queue of its own, so that it knows which
worker holds which job.
"""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from cli.local_stack import LocalStackSettings, ensure_aws_resources
from tests.conftest import RunningGateway, start_gateway, start_worker, stop_process
from tests.e2e.conftest import sign_up_and_in
from tests.e2e.test_images import create_image, upload, wait_until_done
from tests.support.archives import Entry, build_archive, image_config
from tests.support.waiting import wait_until

pytestmark = pytest.mark.docker


@dataclass
class Stack:
    gateway: RunningGateway
    env: dict[str, str]
    tmp: Path


@pytest.fixture
def own_queue_stack(local_aws: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    name = f"jobs-{secrets.token_hex(4)}"
    ensure_aws_resources(LocalStackSettings(jobs_queue=name, jobs_dead_letter_queue=name + "-dlq"), local_aws)
    env = {
        "BERTH_JOBS_QUEUE": name,
        "BERTH_JOBS_DEAD_LETTER_QUEUE": name + "-dlq",
        "BERTH_GATEWAY_RATE_LIMIT_PER_IP": "1000000",
        **getattr(request, "param", {}),
    }
    gateway = start_gateway(tmp_path, env)
    yield Stack(gateway, env, tmp_path)
    stop_process(gateway.process)


def _big_archive(path: Path, megabytes: int) -> Path:
    """A loadable image archive with ``megabytes`` of incompressible data in its second layer."""
    busybox = Path("/bin/busybox").read_bytes()
    layers = [[Entry("bin/busybox", busybox, 0o755)], [Entry("srv/blob.bin", os.urandom(megabytes * 1024 * 1024))]]
    return build_archive(path, layers, config=image_config(user="1000", cmd=["/bin/busybox", "sleep", "3600"]))


def _status(database_url: str, image_id: str) -> str:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT status FROM images WHERE id = %s", (image_id,)).fetchone()
    return str(row[0]) if row else "gone"


def test_a_worker_killed_mid_job_is_replaced_and_the_job_finishes_once(
    own_queue_stack: Stack, docker_client: Any, test_database: str
) -> None:
    client = httpx.Client(base_url=own_queue_stack.gateway.url, timeout=30)
    user = sign_up_and_in(client)
    image = create_image(client, user, "big", "1")
    assert upload(image, _big_archive(own_queue_stack.tmp / "big.tar", 60)).status_code < 300

    # GIVEN a worker that has claimed the job
    first = start_worker(own_queue_stack.tmp, own_queue_stack.env)
    assert client.post(f"/api/images/{image['id']}/complete", headers=user.auth_headers).status_code == 202
    wait_until(
        lambda: _status(test_database, image["id"]) == "processing",
        timeout=60,
        interval=0.02,  # the job must be caught while it runs
        message="the worker never claimed the job",
    )

    # WHEN it is frozen mid-job and killed there (proved: the image is still processing once frozen)
    os.kill(first.process.pid, signal.SIGSTOP)
    assert _status(test_database, image["id"]) == "processing"
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait()

    # THEN a new worker picks the job up again once its visibility lapses, and finishes it
    second = start_worker(own_queue_stack.tmp, own_queue_stack.env)
    try:
        done = wait_until_done(client, user, image["id"], timeout=120)
    finally:
        stop_process(second.process)
    assert done["status"] == "ready", done
    assert done["layers"][1]["size_bytes"] == 60 * 1024 * 1024

    # AND there is exactly one record and one tagged copy in Docker
    with psycopg.connect(test_database) as conn:
        count = conn.execute("SELECT count(*) FROM images WHERE owner_id = %s", (user.id,)).fetchone()
    assert count is not None and count[0] == 1
    tags = [tag for i in docker_client.images.list(name=f"berth/{user.id}/*") for tag in i.tags]
    assert tags == [f"berth/{user.id}/big:1"]
    client.close()


@pytest.mark.parametrize("own_queue_stack", [{"BERTH_IMAGE_MAX_UPLOAD_BYTES": "65536"}], indirect=True)
def test_an_upload_over_the_limit_is_refused(own_queue_stack: Stack, test_database: str) -> None:
    client = httpx.Client(base_url=own_queue_stack.gateway.url, timeout=30)
    user = sign_up_and_in(client)
    image = create_image(client, user, "huge", "1")
    assert image["upload"]["max_bytes"] == 65536

    stored = upload(image, _big_archive(own_queue_stack.tmp / "huge.tar", 1))
    completed = client.post(f"/api/images/{image['id']}/complete", headers=user.auth_headers)

    # Real S3 refuses the POST itself (content-length-range); moto stores it, so `complete` refuses.
    assert stored.status_code >= 400 or completed.status_code == 413, (stored.status_code, completed.text)
    if completed.status_code == 413:
        assert "limit" in completed.json()["error"]["message"]
    assert _status(test_database, image["id"]) == "pending_upload"
    # AND a small enough archive can still be uploaded for the same image afterwards
    small = build_archive(own_queue_stack.tmp / "small.tar", [[Entry("bin/tool", b"x" * 1000, 0o755)]])
    assert upload(image, small).status_code < 300
    assert client.post(f"/api/images/{image['id']}/complete", headers=user.auth_headers).status_code == 202
    client.close()
