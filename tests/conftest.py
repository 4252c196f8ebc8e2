"""Test-wide setup: the environment every test's settings read, and, for the tests that need them, a
database, a Redis key prefix, a local AWS (moto server), a local gateway, a host worker and test images of
the tests' own.

Nothing here is mocked. PostgreSQL, Redis and Docker are the machine's real servers and moto runs in
server mode as a separate process; each test session creates its own database, key prefix and moto
server and removes them at the end, so runs never see each other's data.

Only the environment is set up for every test (it is cheap and needs no server): tests/unit runs with
PostgreSQL, Redis and Docker unreachable. The services start on first request, from `backing_services`,
which the integration, e2e and ui conftests use for every test of theirs and which the gateway, worker and
lb-runtime fixtures request. Each test is marked with its kind by directory (see pytest_collection_modifyitems),
so `pytest -m "not e2e and not ui"` picks the quicker kinds.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.chaos.outcomes import CHAOS_TABLE
from tests.support.dns import LocalResolver, resolver_thread
from tests.support.ports import PROCESSES, free_port, free_udp_port, port_slice
from tests.support.waiting import wait_until

RUN_ID = secrets.token_hex(4)
BASE_DATABASE_URL = os.environ.get("BERTH_DATABASE_URL", "postgresql://berth:berth@127.0.0.1:5432/berth")
TEST_DATABASE_URL = BASE_DATABASE_URL.rsplit("/", 1)[0] + f"/berth_test_{RUN_ID}"
TEST_REDIS_PREFIX = f"berth-test-{RUN_ID}:"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


LOCAL_AWS_PORT = free_port()
LOCAL_AWS_URL = f"http://127.0.0.1:{LOCAL_AWS_PORT}"
LB_ADMIN_PORT = free_port()
# The session lb-runtime's shared ports (host routes of verified host names: 80 and 443 on an edge host).
LB_SHARED_HTTP_PORT = free_port()
LB_SHARED_HTTPS_PORT = free_port()
# Where the load-balancer function asks for host names' TXT proofs: the `hostname_resolver` fixture's server.
HOSTNAME_RESOLVER_PORT = free_udp_port()


HOST_PORTS = port_slice(30000, 32767)
LISTENER_PORTS = port_slice(20000, 29999)

# Settings are read from the environment at first use; point them at the test's own resources.
os.environ.update(
    {
        "BERTH_ENVIRONMENT": "test",
        "BERTH_HOST_PORT_RANGE_START": str(HOST_PORTS[0]),
        "BERTH_HOST_PORT_RANGE_END": str(HOST_PORTS[1]),
        "BERTH_LB_PORT_RANGE_START": str(LISTENER_PORTS[0]),
        "BERTH_LB_PORT_RANGE_END": str(LISTENER_PORTS[1]),
        "BERTH_DATABASE_URL": TEST_DATABASE_URL,
        # The processes of a parallel run share one PostgreSQL (100 connections by default): the pools of
        # each run's processes (worker, functions, this one) are kept smaller than a deployment's.
        "BERTH_DATABASE_POOL_MAX": os.environ.get("BERTH_DATABASE_POOL_MAX", "10" if PROCESSES == 1 else "6"),
        "BERTH_REDIS_PREFIX": TEST_REDIS_PREFIX,
        "BERTH_LOG_LEVEL": os.environ.get("BERTH_LOG_LEVEL", "WARNING"),
        "BERTH_AWS_ENDPOINT_URL": LOCAL_AWS_URL,
        # The run's containers carry a cluster label of its own: no other run's reconciler removes them.
        "BERTH_CLUSTER_ID": f"test-{RUN_ID}",
        # Where the load-balancer function finds the run's lb-runtime (the `lb_runtime` fixture starts it).
        "BERTH_LB_ADMIN_URL": f"http://127.0.0.1:{LB_ADMIN_PORT}",
        # Proofs of host-name ownership are asked of the run's own resolver (`hostname_resolver`), never the
        # machine's: no test query leaves the machine, and a name is proven by publishing it there.
        "BERTH_HOSTNAME_PROOF_RESOLVER": f"127.0.0.1:{HOSTNAME_RESOLVER_PORT}",
        # Workers built in tests serve no metrics unless a test asks (start_worker gives each a free port).
        "BERTH_WORKER_ADMIN_PORT": "0",
        # Gateways serve no metrics either unless a test asks (tests/e2e/test_observability.py).
        "BERTH_GATEWAY_ADMIN_PORT": "0",
        # The tests' webhook receivers listen on 127.0.0.1 (tests/e2e/test_alerts.py starts one refusing it).
        "BERTH_ALERTS_ALLOW_PRIVATE_WEBHOOKS": "true",
        # Functions count the document's limits themselves when no gateway did (in-process apps in tests
        # call them from one address all day); tests of those limits set their own (test_function_limits.py).
        "BERTH_RATE_LIMIT_PER_IP": "1000000000",
        "BERTH_RATE_LIMIT_PER_USER": "1000000000",
        # The internal DNS refuses names outside .internal: no test query leaves the machine.
        "BERTH_WORKER_DNS_UPSTREAM": "none",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
)
os.environ.pop("AWS_ENDPOINT_URL", None)  # BERTH_AWS_ENDPOINT_URL above is the one that counts


# The directories of tests/ that are a slow kind of test: each test in one is marked with the directory's
# name (markers registered in pyproject.toml), so `-m` can choose kinds. tests/unit is left unmarked.
MARKED_KINDS = {"integration", "e2e", "ui", "lb_runtime"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests_dir = Path(__file__).resolve().parent
    for item in items:
        path = item.path.resolve()
        if path.is_relative_to(tests_dir) and (kind := path.relative_to(tests_dir).parts[0]) in MARKED_KINDS:
            item.add_marker(kind)


# The chaos suite's table (tests/chaos), from the test's report: printed at the end of the run whether its
# assertions passed or not, and whichever test process ran it.
_CHAOS_TABLES: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        _CHAOS_TABLES.extend(str(value) for name, value in report.user_properties if name == CHAOS_TABLE)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for table in _CHAOS_TABLES:
        terminalreporter.section("chaos: one component at a time, under traffic")
        terminalreporter.write_line(table)


def wait_for_http(url: str, timeout: float = 30.0, process: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until ``url`` answers at all (any status); fail at once if ``process`` exits first."""

    def answers() -> bool:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        httpx.get(url, timeout=2, verify=False)
        return True

    try:
        wait_until(answers, timeout=timeout, interval=0.1, ignoring=(httpx.HTTPError,), message=f"{url} did not answer")
    except AssertionError as exc:
        raise RuntimeError(str(exc)) from None


@pytest.fixture(scope="session")
def test_database() -> Iterator[str]:
    from shared.migrate import apply_migrations, drop_database

    apply_migrations(TEST_DATABASE_URL)
    # As UNLIMITED lifts the gateway's per-route limits, the seeded per-plan API limits are lifted too: every
    # test user calls from 127.0.0.1 at machine speed. tests/e2e/test_plan_rate_limits.py sets its own.
    import psycopg

    with psycopg.connect(TEST_DATABASE_URL) as conn:
        conn.execute("UPDATE plans SET api_requests_per_minute = NULL")
    yield TEST_DATABASE_URL
    drop_database(TEST_DATABASE_URL)


@pytest.fixture(scope="session")
def redis_prefix() -> Iterator[str]:
    yield TEST_REDIS_PREFIX
    client = redis.Redis.from_url(os.environ.get("BERTH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    keys = list(client.scan_iter(match=TEST_REDIS_PREFIX + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


# Gateway settings that lift every rate limit (still checked in Redis on each request, never reached).
UNLIMITED = {"BERTH_GATEWAY_RATE_LIMIT_PER_IP": "1000000000", "BERTH_GATEWAY_RATE_LIMIT_PER_USER": "1000000000"}


@pytest.fixture(scope="session")
def local_aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto server (S3, SQS) of this run's own, with the images bucket and the job queues."""
    from cli.local_stack import LocalStackSettings, ensure_aws_resources

    log_path = tmp_path_factory.mktemp("local-aws") / "moto.log"
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(LOCAL_AWS_PORT)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_http(LOCAL_AWS_URL + "/moto-api/", process=process)
        ensure_aws_resources(LocalStackSettings(), LOCAL_AWS_URL)
        yield LOCAL_AWS_URL
    finally:
        stop_process(process)


@pytest.fixture(scope="session")
def backing_services(test_database: str, redis_prefix: str, local_aws: str) -> None:
    """The run's database, Redis key prefix and local AWS: what every function, worker and gateway reads."""


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
    command = [sys.executable, "-m", "cli.main", "gateway"] + (["--tls"] if tls else [])
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
def gateway(tmp_path_factory: pytest.TempPathFactory, backing_services: None) -> Iterator[RunningGateway]:
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


@dataclass
class RunningWorker:
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_worker(tmp_dir: Path, extra_env: dict[str, str] | None = None) -> RunningWorker:
    env = dict(os.environ)
    env.update(
        {
            "BERTH_WORKER_WAIT_SECONDS": "1",
            "BERTH_WORKER_VISIBILITY_SECONDS": "10",
            "BERTH_WORKER_STATS_INTERVAL_SECONDS": "1",
            "BERTH_WORKER_ALERT_INTERVAL_SECONDS": "1",
            "BERTH_WORKER_ADMIN_PORT": str(free_port()),
            "BERTH_WORKER_WORK_DIR": str(tmp_dir / "work"),
            "BERTH_LOG_LEVEL": "INFO",
        }
    )
    env.update(extra_env or {})
    log_path = tmp_dir / f"worker-{secrets.token_hex(3)}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
        )
    return RunningWorker(process, log_path, env)


@pytest.fixture(scope="session")
def worker(
    tmp_path_factory: pytest.TempPathFactory, docker_client: Any, backing_services: None
) -> Iterator[RunningWorker]:
    """One `berth worker` for the session, consuming the run's own job queue."""
    running = start_worker(tmp_path_factory.mktemp("worker"))
    yield running
    stop_process(running.process)


@dataclass
class RunningLb:
    process: subprocess.Popen[bytes]
    log_path: Path
    admin_url: str
    shared_http_port: int | None = None
    shared_https_port: int | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def lb_runtime(tmp_path_factory: pytest.TempPathFactory, backing_services: None) -> Iterator[RunningLb]:
    """One `berth lb` for the session, following the run's listeners and registry (customer ports on 127.0.0.1),
    with shared ports where verified host names route by Host (tests/e2e/test_host_routing.py)."""
    env = dict(os.environ)
    env.update(
        {
            "BERTH_LB_ADMIN_PORT": str(LB_ADMIN_PORT),
            "BERTH_LB_BIND_ADDRESS": "127.0.0.1",
            "BERTH_LB_SHARED_HTTP_PORT": str(LB_SHARED_HTTP_PORT),
            "BERTH_LB_SHARED_HTTPS_PORT": str(LB_SHARED_HTTPS_PORT),
            "BERTH_LOG_LEVEL": "INFO",
        }
    )
    log_path = tmp_path_factory.mktemp("lb") / "lb-runtime.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "lb"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT
        )
    admin_url = f"http://127.0.0.1:{LB_ADMIN_PORT}"
    try:
        wait_for_http(admin_url + "/healthz", process=process)
        yield RunningLb(process, log_path, admin_url, LB_SHARED_HTTP_PORT, LB_SHARED_HTTPS_PORT)
    finally:
        stop_process(process)


@pytest.fixture(scope="session")
def hostname_resolver() -> Iterator[LocalResolver]:
    """The DNS resolver the run's functions ask for proofs of host-name ownership (BERTH_HOSTNAME_PROOF_RESOLVER):
    a test publishes a TXT record by putting it in ``records``."""
    with resolver_thread(HOSTNAME_RESOLVER_PORT) as resolver:
        yield resolver


@pytest.fixture(scope="session")
def docker_client(test_database: str) -> Iterator[Any]:
    """The machine's Docker Engine. At the end, every container and image the run's users got is removed."""
    import docker
    import psycopg

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"Docker Engine is needed (run `make bootstrap` to install and start it): {exc}")
    yield client
    with psycopg.connect(test_database) as conn:
        owners = {str(row[0]) for row in conn.execute("SELECT id FROM users")}
    # Every customer container the run made, whichever test or worker made it and however it ended (a worker
    # that stops leaves its containers running, by design): by the run's cluster label or its users.
    for found in client.api.containers(all=True, filters={"label": "berth.cluster"}):
        labels = found.get("Labels") or {}
        if labels.get("berth.cluster", "").startswith(f"test-{RUN_ID}") or labels.get("berth.owner") in owners:
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_container(found["Id"], force=True)
    # The run's tenant networks (worker.tenant_networks), once their containers are gone.
    for network in client.api.networks(filters={"label": "berth.network=tenant"}):
        if (network.get("Labels") or {}).get("berth.cluster", "").startswith(f"test-{RUN_ID}"):
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_network(network["Id"])
    for image in client.images.list(name="berth/*/*"):
        for reference in image.tags:
            if reference.split("/")[1] in owners:
                with contextlib.suppress(docker.errors.APIError):
                    client.images.remove(reference)
    client.close()


@pytest.fixture(scope="session")
def findings_archive(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`docker save` of the project's multi-layer test image (built here, no registry involved)."""
    from tests.support.docker_images import build_test_image, save_image

    tag = f"berth-test/findings:{RUN_ID}"
    build_test_image(docker_client, "findings", tag)
    path = save_image(docker_client, tag, tmp_path_factory.mktemp("images") / "findings.tar")
    docker_client.images.remove(tag)  # the worker must load it from the archive, not find it here
    yield path
