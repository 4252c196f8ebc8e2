"""``berth local up|status|down`` as a developer runs them: real processes, a real moto, a real gateway.

Each stack gets free ports, a temporary state dir, and the test session's database and Redis prefix, so it
never meets a stack someone runs on the default ports.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from tests.conftest import PROJECT_ROOT, TEST_REDIS_PREFIX, free_port
from tests.e2e.conftest import sign_up_and_in

MANAGED = ("gateway", "local-aws", "worker", "lb-runtime")
FILLED_IN_BY_THE_STACK = frozenset(
    {
        "AWS_ENDPOINT_URL",
        "BERTH_AWS_ENDPOINT_URL",
        "BERTH_JWT_ISSUER",
        "BERTH_JWKS_URL",
        "BERTH_GATEWAY_STATE_DIR",
        "BERTH_GATEWAY_HOST",
        "BERTH_GATEWAY_TLS",
    }
)


def _running(pid: int) -> bool:
    """True while ``pid`` runs; an unreaped zombie counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


@dataclass
class LocalStack:
    env: dict[str, str]
    state_dir: Path
    gateway_url: str
    aws_url: str
    first_up_output: str = ""

    def berth_local(self, action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli.main", "local", action],
            env=self.env,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )

    def pids(self) -> dict[str, int]:
        """The PIDs ``up`` recorded, by process name."""
        return {
            name: int((self.state_dir / f"{name}.pid").read_text())
            for name in MANAGED
            if (self.state_dir / f"{name}.pid").exists()
        }

    def aws(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.aws_url,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    def tear_down(self) -> None:
        """``down``, then, should a test have broken it, stop by PID whatever it left behind."""
        leftovers = self.pids()
        self.berth_local("down")
        for pid in leftovers.values():
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


def make_stack(tmp_dir: Path, *, aws_port: int | None = None) -> LocalStack:
    gateway_port, aws_port = free_port(), aws_port or free_port()
    # Whatever points elsewhere is left out so the stack fills it in for its own ports.
    env = {key: value for key, value in os.environ.items() if key not in FILLED_IN_BY_THE_STACK}
    env.update(
        {
            "BERTH_GATEWAY_PORT": str(gateway_port),
            "BERTH_LOCAL_AWS_PORT": str(aws_port),
            "BERTH_LOCAL_STATE_DIR": str(tmp_dir),
            "BERTH_LB_ADMIN_URL": f"http://127.0.0.1:{free_port()}",
            # Under the session's prefix (cleaned up with it) but apart from it, so the per-IP rate-limit
            # budget other tests spend on the session's gateway is not this stack's.
            "BERTH_REDIS_PREFIX": f"{TEST_REDIS_PREFIX}local-stack-{tmp_dir.name}:",
        }
    )
    return LocalStack(env, tmp_dir, f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{aws_port}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A stack brought up once for this module (the first ``up``)."""
    local = make_stack(tmp_path_factory.mktemp("local-stack"))
    first_up = local.berth_local("up")
    try:
        assert first_up.returncode == 0, first_up.stdout + first_up.stderr
        local.first_up_output = first_up.stdout
        yield local
    finally:
        local.tear_down()


def test_up_starts_the_gateway_and_local_aws_and_says_where(stack: LocalStack) -> None:
    output = stack.first_up_output
    pids = stack.pids()

    assert set(pids) == set(MANAGED)
    assert all(_running(pid) for pid in pids.values())
    assert stack.gateway_url in output and stack.aws_url in output
    assert f"curl -s {stack.gateway_url}/api/auth/" in output
    assert (stack.state_dir / "logs" / "gateway.log").exists()


def test_second_up_reuses_the_running_processes(stack: LocalStack) -> None:
    before = stack.pids()

    again = stack.berth_local("up")

    assert again.returncode == 0, again.stdout + again.stderr
    assert stack.pids() == before
    assert again.stdout.count("reused") == len(MANAGED)


def test_up_creates_the_bucket_and_the_queues_with_a_redrive_policy(stack: LocalStack) -> None:
    s3, sqs = stack.aws("s3"), stack.aws("sqs")

    assert "berth-images" in {bucket["Name"] for bucket in s3.list_buckets()["Buckets"]}
    cors = s3.get_bucket_cors(Bucket="berth-images")["CORSRules"][0]
    assert stack.gateway_url in cors["AllowedOrigins"] and "POST" in cors["AllowedMethods"]
    dead_letter_url = sqs.get_queue_url(QueueName="berth-jobs-dlq")["QueueUrl"]
    dead_letter_arn = sqs.get_queue_attributes(QueueUrl=dead_letter_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    jobs_url = sqs.get_queue_url(QueueName="berth-jobs")["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=jobs_url, AttributeNames=["RedrivePolicy"])["Attributes"]
    policy = json.loads(attributes["RedrivePolicy"])
    assert policy["deadLetterTargetArn"] == dead_letter_arn
    assert int(policy["maxReceiveCount"]) == 5


def test_sign_up_sign_in_and_me_work_through_the_started_gateway(stack: LocalStack) -> None:
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as client:
        user = sign_up_and_in(client)

        me = client.get("/api/auth/me", headers=user.auth_headers)

    assert me.status_code == 200, me.text
    assert me.json()["email"] == user.email
    assert me.json()["id"] == user.id


def test_status_reports_both_processes_running(stack: LocalStack) -> None:
    status = stack.berth_local("status")

    assert status.returncode == 0, status.stdout + status.stderr
    for pid in stack.pids().values():
        assert f"pid {pid}" in status.stdout


def test_down_stops_only_what_up_started(stack: LocalStack, tmp_path: Path) -> None:
    # A second stack that shares the first one's local AWS reuses it, so its down must leave it running.
    sharing = make_stack(tmp_path, aws_port=int(stack.aws_url.rsplit(":", 1)[1]))
    try:
        up = sharing.berth_local("up")
        assert up.returncode == 0, up.stdout + up.stderr
        assert set(sharing.pids()) == {"gateway", "worker", "lb-runtime"}
        sharing_gateway = sharing.pids()["gateway"]

        down = sharing.berth_local("down")

        assert down.returncode == 0, down.stdout + down.stderr
        assert not _running(sharing_gateway)
        assert _running(stack.pids()["local-aws"])
        assert stack.aws("s3").list_buckets()["ResponseMetadata"]["HTTPStatusCode"] == 200
    finally:
        sharing.tear_down()


def test_down_stops_the_processes_and_removes_the_pidfiles(stack: LocalStack) -> None:
    pids = stack.pids()

    down = stack.berth_local("down")

    assert down.returncode == 0, down.stdout + down.stderr
    assert not any(_running(pid) for pid in pids.values())
    assert stack.pids() == {}
    assert stack.berth_local("status").returncode == 3
    assert stack.berth_local("down").returncode == 0  # nothing left to stop is not an error


class _NotBerth(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"some other program\n")

    def log_message(self, *args: object) -> None:
        pass


def test_up_refuses_a_port_another_program_holds_before_starting_anything(tmp_path: Path) -> None:
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotBerth)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    local = make_stack(tmp_path)
    local.env["BERTH_GATEWAY_PORT"] = str(other.server_address[1])
    try:
        up = local.berth_local("up")

        assert up.returncode == 1
        assert f"port {other.server_address[1]} is taken by another program" in up.stderr
        assert "BERTH_GATEWAY_PORT" in up.stderr
        assert local.pids() == {}
    finally:
        local.tear_down()
        other.shutdown()
        other.server_close()
