"""Test-wide setup: a database, a Redis key prefix and (on demand) a local gateway of the tests' own.

Nothing here is mocked. PostgreSQL and Redis are the machine's real servers; each test session creates
its own database and key prefix and removes both at the end, so runs never see each other's data.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

RUN_ID = secrets.token_hex(4)
BASE_DATABASE_URL = os.environ.get("BERTH_DATABASE_URL", "postgresql://berth:berth@127.0.0.1:5432/berth")
TEST_DATABASE_URL = BASE_DATABASE_URL.rsplit("/", 1)[0] + f"/berth_test_{RUN_ID}"
TEST_REDIS_PREFIX = f"berth-test-{RUN_ID}:"
PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Settings are read from the environment at first use; point them at the test's own resources.
os.environ.update(
    {
        "BERTH_ENVIRONMENT": "test",
        "BERTH_DATABASE_URL": TEST_DATABASE_URL,
        "BERTH_REDIS_PREFIX": TEST_REDIS_PREFIX,
        "BERTH_LOG_LEVEL": os.environ.get("BERTH_LOG_LEVEL", "WARNING"),
    }
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, timeout: float = 30.0, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            httpx.get(url, timeout=2, verify=False)
            return
        except httpx.HTTPError as exc:
            last_error = exc
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s: {last_error}")


@pytest.fixture(scope="session", autouse=True)
def test_database() -> Iterator[str]:
    from shared.migrate import apply_migrations, drop_database

    apply_migrations(TEST_DATABASE_URL)
    yield TEST_DATABASE_URL
    drop_database(TEST_DATABASE_URL)


@pytest.fixture(scope="session", autouse=True)
def redis_prefix() -> Iterator[str]:
    yield TEST_REDIS_PREFIX
    client = redis.Redis.from_url(os.environ.get("BERTH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    keys = list(client.scan_iter(match=TEST_REDIS_PREFIX + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


# Gateway settings that lift every rate limit (still checked in Redis on each request, never reached).
UNLIMITED = {"BERTH_GATEWAY_RATE_LIMIT_PER_IP": "1000000000", "BERTH_GATEWAY_RATE_LIMIT_PER_USER": "1000000000"}


@dataclass
class RunningGateway:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]

    def access_log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_gateway(tmp_dir: Path, extra_env: dict[str, str] | None = None, *, tls: bool = False) -> RunningGateway:
    port = free_port()
    scheme = "https" if tls else "http"
    env = dict(os.environ)
    env.update(
        {
            "BERTH_GATEWAY_PORT": str(port),
            "BERTH_GATEWAY_STATE_DIR": str(tmp_dir),
            "BERTH_JWT_ISSUER": f"{scheme}://127.0.0.1:{port}/api/auth",
            "BERTH_JWKS_URL": f"{scheme}://127.0.0.1:{port}/api/auth/.well-known/jwks.json",
        }
    )
    env.update(extra_env or {})
    log_path = tmp_dir / f"gateway-{port}.log"
    command = [sys.executable, "-m", "shared.cli", "gateway"] + (["--tls"] if tls else [])
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT)
    url = f"{scheme}://127.0.0.1:{port}"
    try:
        wait_for_http(url + "/api/auth/.well-known/openid-configuration", process=process)
    except RuntimeError:
        stop_process(process)
        raise RuntimeError("gateway did not start:\n" + log_path.read_text(errors="replace")) from None
    return RunningGateway(url, process, log_path, env)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """One local gateway for the session, with every function behind it, as a user would reach it."""
    # Every test signs up and in from 127.0.0.1; the document's per-IP limits on those routes would stop
    # the suite. Rate limiting itself is tested on gateways of its own (tests/e2e/test_gateway_limits.py).
    running = start_gateway(tmp_path_factory.mktemp("gateway"), UNLIMITED)
    yield running
    stop_process(running.process)


@pytest.fixture
def client(gateway: RunningGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        yield http
