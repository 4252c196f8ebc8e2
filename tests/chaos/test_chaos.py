"""Chaos: kill each part of a private Berth platform in turn, under traffic, and lose nothing.

The platform is the test's own, so killing any of it disturbs no one else on the machine: a PostgreSQL
cluster in a temporary directory and a redis-server (tests/support/private_services.py), a moto server,
``berth gateway``, ``berth worker`` and ``berth lb``, all on free loopback ports, with a cluster label of
the run's own on every container. A user deploys two replicas of the busybox "web" test image behind a
listener; a customer stream requests the listener every 20 ms and an API loop creates, lists, reads and
deletes images (with a small uploaded archive), listeners and, every few rounds, a container.

Then, one at a time: the local AWS is paused (SIGSTOP/SIGCONT), one of the gateway's function processes
is killed (SIGKILL, found as the gateway's children), the gateway is killed and restarted, the worker is
killed mid-job (while a container it received is being created) and restarted, lb-runtime is killed and
restarted, Redis is killed and restarted, and PostgreSQL is stopped (immediate mode: every backend ends
at once) and started again. Each phase pauses the API loop afterwards and checks the books:

- **lost**: something the API accepted that is missing once the platform settled (a row, a running
  container for a row that wants one, an archive of a live image, a job left in a queue or the DLQ);
- **duplicated**: something that exists more often than it should, or at all when it should not (two
  Docker containers for one record, a port allocation nobody owns, an archive or container no record
  claims, a row a 2xx delete removed, a function process that outlived its gateway).

Bounds asserted, and why:
- customer requests: zero failures for every component but lb-runtime (the proxy keeps its last route
  table while PostgreSQL is away and needs nothing else on the request path); lb-runtime runs as one
  process here, so its kill refuses connections until the new one binds: every failure must fall between
  the kill and the moment the listener answers again, and the stream must then be clean;
- API: no call may hang (no answer within ``API_DEADLINE`` s is a failure); every error is either a
  refused connection (nothing listening) or a 5xx with the JSON error body; no unexpected 4xx (a 401 would
  mean a session was lost); zero API errors while the worker, lb-runtime or the paused local AWS are out;
- items: zero lost and zero duplicated after every phase.
The table (component, failed requests, API errors, items lost, items duplicated, recovery seconds) is
printed at the end of the run (tests/chaos/conftest.py). Recovery is from the restart (or SIGCONT) until
the API and the listener answer normally again and every item settled.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import docker
import httpx
import psycopg
import pytest

from tests.chaos.outcomes import CHAOS_TABLE, RESULTS, Outcome, render_table
from tests.conftest import LISTENER_PORTS
from tests.support.docker_images import build_test_image, save_image
from tests.support.private_services import (
    ManagedProcess,
    PrivatePostgres,
    PrivateRedis,
    children_of,
    free_port,
    process_alive,
)
from tests.support.waiting import wait_until
from worker.container_runtime import CLUSTER_LABEL, CONTAINER_ID_LABEL

pytestmark = [pytest.mark.docker, pytest.mark.chaos]

ROOT = Path(__file__).resolve().parents[2]
RUN = secrets.token_hex(3)
CLUSTER = f"chaos-{RUN}"
WHOAMI = "/cgi-bin/whoami"
API_DEADLINE = 30.0  # the gateway's own limit is 29 s per function call; longer than that is a hang
STREAM_INTERVAL = 0.02
SETTLE_TIMEOUT = 45.0
BUCKET = "berth-images"


def _free_listener_port() -> int:
    """A port inside the run's listener range nothing on the machine holds right now."""
    import random
    import socket

    first, last = LISTENER_PORTS
    for _ in range(200):
        port = random.randint(first, last)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {first}-{last}")


# ---------------------------------------------------------------------------------------------- platform


@dataclass
class Platform:
    postgres: PrivatePostgres
    redis: PrivateRedis
    root: Path
    env: dict[str, str]
    gateway_url: str
    aws_url: str
    lb_admin_url: str
    moto: ManagedProcess
    gateway: ManagedProcess
    worker: ManagedProcess
    lb: ManagedProcess

    def processes(self) -> list[ManagedProcess]:
        return [self.worker, self.lb, self.gateway, self.moto]

    def start_gateway(self) -> None:
        self.gateway.start()
        _wait_http(self.gateway_url + "/api/auth/.well-known/openid-configuration", self.gateway)

    def start_lb(self) -> None:
        self.lb.start()
        _wait_http(self.lb_admin_url + "/healthz", self.lb)

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.postgres.url, connect_timeout=5) as conn:
            return list(conn.execute(query, args).fetchall())


def _wait_http(url: str, process: ManagedProcess, timeout: float = 60) -> None:
    def answers() -> bool:
        if not process.running():
            raise RuntimeError(f"{process.name} exited:\n{process.log()[-3000:]}")
        httpx.get(url, timeout=2)
        return True

    wait_until(answers, timeout=timeout, interval=0.1, ignoring=(httpx.HTTPError,), message=f"{url} did not answer")


@contextlib.contextmanager
def private_platform(tmp: Path) -> Iterator[Platform]:
    from cli.local_stack import LocalStackSettings, ensure_aws_resources
    from shared.migrate import apply_migrations

    postgres, redis_server = PrivatePostgres(), PrivateRedis()
    processes: list[ManagedProcess] = []
    try:
        postgres.init()
        redis_server.start()
        apply_migrations(postgres.url)
        gateway_port, aws_port, lb_admin_port = free_port(), free_port(), free_port()
        gateway_url, aws_url = f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{aws_port}"
        lb_admin_url = f"http://127.0.0.1:{lb_admin_port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BERTH_", "AWS_ENDPOINT"))}
        env.update(
            {
                "BERTH_ENVIRONMENT": "test",
                "BERTH_LOG_LEVEL": "INFO",
                "BERTH_DATABASE_URL": postgres.url,
                "BERTH_REDIS_URL": redis_server.url,
                "BERTH_REDIS_PREFIX": f"chaos-{RUN}:",
                "BERTH_AWS_ENDPOINT_URL": aws_url,
                "BERTH_LOCAL_AWS_PORT": str(aws_port),
                "AWS_ACCESS_KEY_ID": "test",
                "AWS_SECRET_ACCESS_KEY": "test",
                "AWS_DEFAULT_REGION": "us-east-1",
                "BERTH_CLUSTER_ID": CLUSTER,
                "BERTH_GATEWAY_PORT": str(gateway_port),
                "BERTH_GATEWAY_STATE_DIR": str(tmp / "gateway"),
                "BERTH_JWT_ISSUER": f"{gateway_url}/api/auth",
                "BERTH_JWKS_URL": f"{gateway_url}/api/auth/.well-known/jwks.json",
                "BERTH_GATEWAY_RATE_LIMIT_PER_IP": "1000000000",
                "BERTH_GATEWAY_RATE_LIMIT_PER_USER": "1000000000",
                "BERTH_RATE_LIMIT_PER_IP": "1000000000",
                "BERTH_RATE_LIMIT_PER_USER": "1000000000",
                "BERTH_LB_ADMIN_URL": lb_admin_url,
                "BERTH_LB_ADMIN_PORT": str(lb_admin_port),
                "BERTH_LB_BIND_ADDRESS": "127.0.0.1",
                "BERTH_WORKER_WAIT_SECONDS": "1",
                "BERTH_WORKER_VISIBILITY_SECONDS": "10",
                "BERTH_WORKER_ADMIN_PORT": str(free_port()),
                "BERTH_WORKER_WORK_DIR": str(tmp / "worker"),
                "BERTH_WORKER_DNS_UPSTREAM": "none",
                "PYTHONUNBUFFERED": "1",
            }
        )
        (tmp / "gateway").mkdir()

        def berth(name: str, *words: str) -> ManagedProcess:
            process = ManagedProcess(name, [sys.executable, "-m", *words], env, tmp / f"{name}.log", ROOT)
            processes.append(process)
            return process

        platform = Platform(
            postgres,
            redis_server,
            tmp,
            env,
            gateway_url,
            aws_url,
            lb_admin_url,
            moto=berth("moto", "moto.server", "-H", "127.0.0.1", "-p", str(aws_port)),
            gateway=berth("gateway", "cli.main", "gateway"),
            worker=berth("worker", "cli.main", "worker"),
            lb=berth("lb-runtime", "cli.main", "lb"),
        )
        platform.moto.start()
        _wait_http(aws_url + "/moto-api/", platform.moto)
        with _environment(env):
            ensure_aws_resources(LocalStackSettings(), aws_url)
        platform.start_gateway()
        platform.worker.start()
        platform.start_lb()
        yield platform
    finally:
        for process in reversed(processes):
            process.stop(grace=10)
        _remove_cluster_from_docker(postgres)
        redis_server.remove()
        postgres.remove()


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _remove_cluster_from_docker(postgres: PrivatePostgres) -> None:
    """Every container, tenant network and platform image the run's cluster made."""
    client = docker.from_env(timeout=120)
    owners: set[str] = set()
    with contextlib.suppress(psycopg.Error), psycopg.connect(postgres.url, connect_timeout=5) as conn:
        owners = {str(row[0]) for row in conn.execute("SELECT id FROM users")}
    for found in client.api.containers(all=True, filters={"label": f"{CLUSTER_LABEL}={CLUSTER}"}):
        with contextlib.suppress(docker.errors.APIError):
            client.api.remove_container(found["Id"], force=True)
    for network in client.api.networks(filters={"label": f"{CLUSTER_LABEL}={CLUSTER}"}):
        with contextlib.suppress(docker.errors.APIError):
            client.api.remove_network(network["Id"])
    for image in client.images.list(name="berth/*/*"):
        for reference in image.tags:
            if reference.split("/")[1] in owners:
                with contextlib.suppress(docker.errors.APIError):
                    client.images.remove(reference)
    client.close()


# ------------------------------------------------------------------------------------------ traffic


class Stream:
    """A customer: one request to the listener every 20 ms on a keep-alive connection, each outcome kept."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.outcomes: list[tuple[float, bool, str, float]] = []  # (started, ok, what failed, finished)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="customer-stream")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=20)

    def _run(self) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10) as traffic:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    answer = traffic.get(WHOAMI)
                    ok, what = answer.status_code == 200, f"{answer.status_code}"
                except httpx.HTTPError as exc:
                    ok, what = False, f"{type(exc).__name__}: {exc}"
                self.outcomes.append((started, ok, what, time.monotonic()))
                time.sleep(STREAM_INTERVAL)

    def between(self, start: float, end: float) -> list[tuple[float, bool, str, float]]:
        return [o for o in self.outcomes if start <= o[0] < end]

    def ok_since(self, moment: float) -> bool:
        return any(ok and at >= moment for at, ok, _, _ in self.outcomes[-20:])


@dataclass
class Call:
    started: float
    seconds: float
    operation: str
    status: int | None  # None: no answer (refused, reset, timed out)
    detail: str
    clear: bool  # a refused connection, or a 5xx with the JSON error body


@dataclass
class Ledger:
    """What the API accepted: ids created (2xx) and ids deleted (2xx), per kind."""

    created: dict[str, set[str]] = field(
        default_factory=lambda: {"image": set(), "listener": set(), "container": set()}
    )
    deleted: dict[str, set[str]] = field(
        default_factory=lambda: {"image": set(), "listener": set(), "container": set()}
    )
    uploaded: set[str] = field(default_factory=set)
    # Deletes sent whose answer never came (the gateway died mid-call): the client no longer wants the item,
    # so its absence is no loss; the books still check what the platform did with it.
    delete_sent: dict[str, set[str]] = field(
        default_factory=lambda: {"image": set(), "listener": set(), "container": set()}
    )


class ApiLoop:
    """A user of the API in a loop: images (with an archive upload), listeners, and now and then a container."""

    CONTAINER_EVERY = 6

    def __init__(self, platform: Platform, headers: dict[str, str], image_id: str) -> None:
        self.platform = platform
        self.headers = headers
        self.image_id = image_id
        self.calls: list[Call] = []
        self.ledger = Ledger()
        self.pending_deletes: list[tuple[str, str]] = []  # (kind, id) whose delete did not get a 2xx yet
        self.container: str | None = None
        self._round = 0
        self._run_event = threading.Event()
        self._idle = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="api-loop")
        self._client = httpx.Client(base_url=platform.gateway_url, timeout=API_DEADLINE + 5)

    def start(self) -> None:
        self._thread.start()
        self.resume()

    def resume(self) -> None:
        self._idle.clear()
        self._run_event.set()

    def pause(self) -> None:
        """Finish the current round and wait there (the books can be checked at rest)."""
        self._run_event.clear()
        self._idle.wait(timeout=4 * API_DEADLINE)

    def stop(self) -> None:
        self._stop.set()
        self._run_event.set()
        self._thread.join(timeout=4 * API_DEADLINE)
        self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._run_event.is_set():
                self._idle.set()
                self._run_event.wait()
                continue
            self._round += 1
            calls = len(self.calls)
            with contextlib.suppress(Exception):  # a round's failures are in self.calls
                self.one_round()
            # Back off a little after an unanswered call, as a client would (the gateway may be restarting).
            time.sleep(0.25 if any(c.status is None for c in self.calls[calls:]) else 0.05)
        self._idle.set()

    def call(self, operation: str, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        started = time.monotonic()
        try:
            answer = self._client.request(method, path, headers=self.headers, **kwargs)
        except httpx.ConnectError as exc:
            self.calls.append(Call(started, time.monotonic() - started, operation, None, f"refused: {exc}", True))
            return None
        except httpx.HTTPError as exc:
            # A connection closed mid-call (its server was killed) is an answer too; a timeout is a hang.
            seconds = time.monotonic() - started
            clear = not isinstance(exc, httpx.TimeoutException)
            self.calls.append(Call(started, seconds, operation, None, f"{type(exc).__name__}: {exc}", clear))
            return None
        seconds = time.monotonic() - started
        clear = True
        if answer.status_code >= 400:
            try:
                code = answer.json()["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = None
            clear = answer.status_code >= 500 and code is not None and seconds <= API_DEADLINE
            detail = f"{answer.status_code} {code or answer.text[:80]}"
            if answer.status_code == 503:
                detail += f" retry-after={answer.headers.get('retry-after')}"
        else:
            detail = str(answer.status_code)
        self.calls.append(Call(started, seconds, operation, answer.status_code, detail, clear))
        return answer

    def one_round(self) -> None:
        ledger, n = self.ledger, self._round
        self.retry_deletes()
        created = self.call("create image", "POST", "/api/images", json={"name": f"loop-{RUN}-{n}", "tag": "1"})
        image_id = None
        if created is not None and created.status_code == 201:
            image = created.json()
            image_id = image["id"]
            ledger.created["image"].add(image_id)
            with contextlib.suppress(httpx.HTTPError):
                upload = httpx.post(
                    image["upload"]["url"],
                    data=image["upload"]["fields"],
                    files={"file": ("image.tar", b"not really an archive " * 8)},
                    timeout=10,
                )
                if upload.status_code in (200, 201, 204):
                    ledger.uploaded.add(image_id)
        self.call("list images", "GET", "/api/images")
        if image_id:
            self.call("get image", "GET", f"/api/images/{image_id}")
        listener = self.call(
            "create listener", "POST", "/api/load-balancer/listeners", json={"service": "web", "protocol": "http"}
        )
        if listener is not None and listener.status_code == 201:
            listener_id = listener.json()["id"]
            ledger.created["listener"].add(listener_id)
            self.call("get listener", "GET", f"/api/load-balancer/listeners/{listener_id}")
            self.delete("listener", listener_id)
        self.call("list listeners", "GET", "/api/load-balancer/listeners")
        if image_id:
            self.delete("image", image_id)
        if n % self.CONTAINER_EVERY == 0:
            self.replace_container(f"loop-{n}")

    def replace_container(self, name: str) -> str | None:
        """Create a container (service "loop"), then delete the one made before it."""
        new_id = self.create_container(name)
        if self.container is not None and new_id is not None:
            self.delete("container", self.container)
        if new_id is not None:
            self.container = new_id
        return new_id

    def create_container(self, name: str) -> str | None:
        body = {
            "image_id": self.image_id,
            "name": name,
            "service": "loop",
            "ports": [{"container_port": 8080}],
            "memory_mb": 32,
        }
        created = self.call("create container", "POST", "/api/containers", json=body)
        new_id = None
        if created is not None and created.status_code == 202:
            new_id = created.json()["id"]
            self.ledger.created["container"].add(new_id)
        return new_id

    def delete(self, kind: str, item_id: str) -> None:
        paths = {
            "image": "/api/images/",
            "listener": "/api/load-balancer/listeners/",
            "container": "/api/containers/",
        }
        self.ledger.delete_sent[kind].add(item_id)
        answer = self.call(f"delete {kind}", "DELETE", paths[kind] + item_id)
        if answer is not None and answer.status_code in (202, 204):
            self.ledger.deleted[kind].add(item_id)
        elif answer is not None and answer.status_code == 404:
            pass  # an earlier try that got no answer did delete it
        else:
            self.pending_deletes.append((kind, item_id))

    def retry_deletes(self) -> None:
        pending, self.pending_deletes = self.pending_deletes, []
        for kind, item_id in pending:
            self.delete(kind, item_id)

    def between(self, start: float, end: float) -> list[Call]:
        return [c for c in self.calls if start <= c.started < end]


# ------------------------------------------------------------------------------------------ the books


class Books:
    """Compares what the API accepted with PostgreSQL, Docker, S3 and SQS."""

    def __init__(self, platform: Platform, owner_id: str, replicas: set[str], loop: ApiLoop) -> None:
        self.platform = platform
        self.owner_id = owner_id
        self.replicas = replicas
        self.loop = loop
        self.docker = docker.from_env(timeout=60)
        session = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
        self.s3 = session.client("s3", endpoint_url=platform.aws_url)
        self.sqs = session.client("sqs", endpoint_url=platform.aws_url)

    def check(self) -> tuple[list[str], list[str]]:
        """(lost, duplicated) right now; see the module docstring for what counts as which."""
        lost: list[str] = []
        duplicated: list[str] = []
        ledger = self.loop.ledger
        sql = self.platform.sql
        # Images: every accepted one the loop did not delete has its row; a deleted one has none; one row a name.
        images = {
            str(i): (name, key, status)
            for i, name, key, status in sql(
                "SELECT id, name, object_key, status FROM images WHERE owner_id = %s", self.owner_id
            )
        }
        for image_id in ledger.created["image"] - ledger.deleted["image"] - ledger.delete_sent["image"]:
            if image_id not in images:
                lost.append(f"image row {image_id}")
        for image_id in ledger.deleted["image"] & set(images):
            duplicated.append(f"image {image_id} still has its row after a 204 delete")
        names = [name for name, _, _ in images.values()]
        duplicated += [f"image name {name} twice" for name in set(names) if names.count(name) > 1]
        # Archives: one per live uploaded image, none for a deleted one.
        keys = set()
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            keys |= {item["Key"] for item in page.get("Contents", [])}
        live_keys = {key for _, key, _ in images.values()}
        duplicated += [f"archive {key} without an image" for key in keys - live_keys]
        for image_id in ledger.uploaded - ledger.deleted["image"]:
            if image_id in images and images[image_id][1] not in keys:
                lost.append(f"archive of image {image_id}")
        # Listeners.
        listeners = {str(row[0]) for row in sql("SELECT id FROM listeners WHERE owner_id = %s", self.owner_id)}
        kept = ledger.created["listener"] - ledger.deleted["listener"] - ledger.delete_sent["listener"]
        lost += [f"listener {i}" for i in kept - listeners]
        duplicated += [f"listener {i} after a 204 delete" for i in ledger.deleted["listener"] & listeners]
        # Containers: a record that wants to run runs exactly once; a deleted one runs nowhere; nothing unclaimed.
        rows = {
            str(i): (desired, status, ports)
            for i, desired, status, ports in sql(
                "SELECT id, desired_state, status, ports FROM containers WHERE owner_id = %s", self.owner_id
            )
        }
        wanted = (
            ledger.created["container"] - ledger.deleted["container"] - ledger.delete_sent["container"]
        ) | self.replicas
        for container_id in wanted:
            if container_id not in rows:
                lost.append(f"container row {container_id}")
            elif rows[container_id][1] != "running":
                lost.append(f"container {container_id} is {rows[container_id][1]}, not running")
        for container_id in ledger.deleted["container"]:
            if container_id in rows and rows[container_id][0] != "deleted":
                duplicated.append(f"container {container_id} wants {rows[container_id][0]} after a delete")
        in_docker: dict[str, list[str]] = {}
        for found in self.docker.api.containers(all=True, filters={"label": f"{CLUSTER_LABEL}={CLUSTER}"}):
            labels = found.get("Labels") or {}
            in_docker.setdefault(labels.get(CONTAINER_ID_LABEL, "?"), []).append(found["State"])
        for container_id, states in in_docker.items():
            if container_id not in rows or rows[container_id][0] == "deleted":
                duplicated.append(f"docker container for {container_id} nobody wants ({states})")
            elif len(states) > 1:
                duplicated.append(f"{len(states)} docker containers for {container_id}")
        for container_id in wanted:
            if container_id in rows and in_docker.get(container_id, []) != ["running"]:
                lost.append(f"docker container of {container_id}: {in_docker.get(container_id)}")
        # Host ports: one allocation per published port of a live container, none for anything else.
        allocations: dict[str, int] = {}
        for (owner,) in sql("SELECT owner_id FROM port_allocations"):
            allocations[str(owner)] = allocations.get(str(owner), 0) + 1
        for owner, count in allocations.items():
            if owner not in rows or rows[owner][0] == "deleted":
                duplicated.append(f"{count} port allocation(s) of {owner}, which wants none")
            elif count > len(rows[owner][2]):
                duplicated.append(f"{count} port allocations of {owner} for {len(rows[owner][2])} port(s)")
        for container_id in wanted:
            if container_id in rows and allocations.get(container_id, 0) < len(rows[container_id][2]):
                lost.append(f"port allocation of {container_id}")
        # Jobs: every queue drained, the dead-letter queue empty.
        for url in self.sqs.list_queues().get("QueueUrls", []):
            attributes = self.sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
            )["Attributes"]
            waiting = int(attributes["ApproximateNumberOfMessages"]) + int(
                attributes["ApproximateNumberOfMessagesNotVisible"]
            )
            if waiting:
                lost.append(f"{waiting} job(s) left in {url.rsplit('/', 1)[1]}")
        return lost, duplicated

    def settle(self, timeout: float = SETTLE_TIMEOUT) -> tuple[list[str], list[str], float]:
        """Wait until the books balance; (lost, duplicated, seconds waited) at the end either way."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            try:
                lost, duplicated = self.check()
            except (psycopg.Error, OSError) as exc:
                lost, duplicated = [f"books unreadable: {exc}"], []
            if (not lost and not duplicated) or time.monotonic() > deadline:
                return lost, duplicated, time.monotonic() - started
            time.sleep(0.5)


# ------------------------------------------------------------------------------------------ set-up


@dataclass
class Scene:
    platform: Platform
    headers: dict[str, str]
    owner_id: str
    image_id: str
    replicas: set[str]
    listener_id: str
    listener_port: int


def _sign_up(client: httpx.Client, platform: Platform) -> tuple[dict[str, str], str]:
    """A user on the team plan, signed in after the plan changed (the token carries the plan and its limits)."""
    email, password = f"chaos-{RUN}@example.com", "plum-kettle-harbor-" + secrets.token_hex(4)
    created = client.post("/api/auth/signup", json={"email": email, "password": password})
    assert created.status_code == 201, created.text
    _on_team_plan(platform, created.json()["id"])
    tokens = client.post("/api/auth/signin", json={"email": email, "password": password})
    assert tokens.status_code == 200, tokens.text
    return {"Authorization": f"Bearer {tokens.json()['access_token']}"}, created.json()["id"]


def _on_team_plan(platform: Platform, owner_id: str) -> None:
    """The free plan's quotas (3 containers, 1 listener, 120 API calls a minute) are below the loop's churn."""
    with psycopg.connect(platform.postgres.url) as conn:
        conn.execute("UPDATE users SET plan = 'team' WHERE id = %s", (owner_id,))


def _upload_web_image(client: httpx.Client, headers: dict[str, str], archive: Path) -> str:
    image = client.post("/api/images", json={"name": "web", "tag": RUN}, headers=headers).json()
    with archive.open("rb") as data:
        uploaded = httpx.post(
            image["upload"]["url"], data=image["upload"]["fields"], files={"file": ("image.tar", data)}, timeout=60
        )
    assert uploaded.status_code in (200, 201, 204), uploaded.text
    assert client.post(f"/api/images/{image['id']}/complete", headers=headers).status_code == 202

    def done() -> str | None:
        status = str(client.get(f"/api/images/{image['id']}", headers=headers).json()["status"])
        return status if status in ("ready", "rejected", "failed") else None

    assert wait_until(done, timeout=90, interval=0.3, message="the web image was not processed") == "ready"
    return str(image["id"])


def _deploy(client: httpx.Client, headers: dict[str, str], image_id: str, name: str) -> str:
    body = {"image_id": image_id, "name": name, "service": "web", "ports": [{"container_port": 8080}], "memory_mb": 32}

    def created() -> httpx.Response | None:
        answer = client.post("/api/containers", json=body, headers=headers)
        return None if answer.status_code == 503 else answer  # 503 until the worker registered its host

    answer = wait_until(created, timeout=60, interval=0.5, message="no host took the container")
    assert answer is not None and answer.status_code == 202, answer
    return str(answer.json()["id"])


def _running(client: httpx.Client, headers: dict[str, str], container_id: str, timeout: float = 90) -> None:
    wait_until(
        lambda: client.get(f"/api/containers/{container_id}", headers=headers).json()["status"] == "running",
        timeout=timeout,
        interval=0.3,
        message=f"container {container_id} did not run",
    )


@pytest.fixture(scope="module")
def scene(request: pytest.FixtureRequest) -> Iterator[Scene]:
    # Logs outlive a failed run (pytest's own temporary folders rotate with every other run on the machine).
    tmp = Path(tempfile.mkdtemp(prefix=f"berth-chaos-{RUN}-"))
    failed_before = request.session.testsfailed
    try:
        yield from _scene(tmp)
    finally:
        if request.session.testsfailed == failed_before:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"\nchaos: the platform's logs are kept in {tmp}")


def _scene(tmp: Path) -> Iterator[Scene]:
    docker_client = docker.from_env(timeout=120)
    tag = f"berth-test/web:chaos-{RUN}"
    build_test_image(docker_client, "web", tag)
    archive = save_image(docker_client, tag, tmp / "web.tar")
    docker_client.images.remove(tag)
    docker_client.close()
    with private_platform(tmp) as platform, httpx.Client(base_url=platform.gateway_url, timeout=60) as client:
        headers, owner_id = _sign_up(client, platform)
        image_id = _upload_web_image(client, headers, archive)
        replicas = {_deploy(client, headers, image_id, f"web-{index}") for index in range(2)}
        for replica in replicas:
            _running(client, headers, replica)
        port = _free_listener_port()
        listener = client.post(
            "/api/load-balancer/listeners",
            json={"service": "web", "port": port, "protocol": "http", "algorithm": "round_robin"},
            headers=headers,
        )
        assert listener.status_code == 201, listener.text

        def both_replicas_serve() -> bool:
            seen = {httpx.get(f"http://127.0.0.1:{port}{WHOAMI}", timeout=2).text for _ in range(6)}
            return len(seen) == 2

        wait_until(both_replicas_serve, timeout=30, interval=0.2, ignoring=(httpx.HTTPError,))
        yield Scene(platform, headers, owner_id, image_id, replicas, listener.json()["id"], port)


# ------------------------------------------------------------------------------------------ the phases


def _function_processes(gateway_pid: int) -> list[int]:
    found = []
    for pid in children_of(gateway_pid):
        with contextlib.suppress(OSError):
            if b"gateway.function_host" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


class Chaos:
    def __init__(self, scene: Scene, stream: Stream, loop: ApiLoop, books: Books) -> None:
        self.scene = scene
        self.platform = scene.platform
        self.stream = stream
        self.loop = loop
        self.books = books
        self._probe = httpx.Client(base_url=scene.platform.gateway_url, timeout=5, headers=scene.headers)

    def api_answers(self) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return self._probe.get("/api/images", params={"limit": 1}).status_code == 200
        return False

    def run(
        self, component: str, inject: Callable[[Outcome], float], *, extra_settle: Callable[[], bool] | None = None
    ) -> Outcome:
        """Inject a fault (``inject`` returns when the component was brought back), then measure."""
        outcome = Outcome(component)
        started = time.monotonic()
        self.loop.resume()
        time.sleep(1.0)  # traffic and API calls flowing before the fault
        restored = inject(outcome)
        wait_until(
            lambda: self.api_answers() and self.stream.ok_since(restored),
            timeout=60,
            interval=0.1,
            message=f"the platform did not answer again after {component} came back",
        )
        if extra_settle is not None:
            try:
                wait_until(extra_settle, timeout=60, interval=0.2, message=f"{component}: its own recovery check")
            except AssertionError as exc:
                outcome.lost.append(str(exc))
        recovered = time.monotonic()
        time.sleep(1.5)  # a stretch of healthy traffic and API calls after the recovery
        self.loop.pause()
        lost, duplicated, waited = self.books.settle()
        outcome.lost += lost
        outcome.duplicated += duplicated
        outcome.recovery_seconds = recovered - restored
        outcome.settle_seconds = waited
        ended = time.monotonic()
        requests = self.stream.between(started, ended)
        outcome.requests = len(requests)
        failures = [o for o in requests if not o[1]]
        outcome.failed_requests = len(failures)
        outcome.failure_samples = [f"{at - started:.2f}s {what}" for at, _, what, _ in failures[:3]]
        calls = self.loop.between(started, ended)
        outcome.api_calls = len(calls)
        errors = [c for c in calls if c.status is None or c.status >= 400]
        # A 404 for a delete the loop already saw succeed is the retried delete's normal answer.
        errors = [c for c in errors if not (c.status == 404 and c.operation.startswith("delete"))]
        outcome.api_errors = len(errors)
        outcome.hangs = sum(1 for c in calls if c.seconds > API_DEADLINE)
        outcome.unclear_errors = [f"{c.operation}: {c.detail} ({c.seconds:.1f}s)" for c in errors if not c.clear]
        outcome.error_samples = [f"{c.operation}: {c.detail}" for c in errors[:3]]
        RESULTS.append(outcome)
        return outcome


def test_killing_each_component_loses_nothing(scene: Scene, record_property: Callable[[str, object], None]) -> None:
    platform = scene.platform
    stream = Stream(scene.listener_port)
    loop = ApiLoop(platform, scene.headers, scene.image_id)
    books = Books(platform, scene.owner_id, scene.replicas, loop)
    chaos = Chaos(scene, stream, loop, books)
    stream.start()
    loop.start()
    lb_windows: tuple[float, float] = (0.0, 0.0)
    try:
        # GIVEN the books balance before any fault
        loop.pause()
        lost, duplicated, _ = books.settle()
        assert not lost and not duplicated, (lost, duplicated)

        # WHEN the local AWS is paused for 5 s
        def pause_aws(_: Outcome) -> float:
            platform.moto.signal(signal.SIGSTOP)
            time.sleep(5)
            platform.moto.signal(signal.SIGCONT)
            return time.monotonic()

        chaos.run("local AWS (SIGSTOP 5 s)", pause_aws)

        # WHEN every function process of the gateway is killed while calls run through them
        def kill_functions(outcome: Outcome) -> float:
            wait_until(lambda: _function_processes(platform.gateway.pid), timeout=10, message="no function process")
            for pid in _function_processes(platform.gateway.pid):
                os.kill(pid, signal.SIGKILL)
            return time.monotonic()

        chaos.run("function processes (SIGKILL)", kill_functions)

        # WHEN the gateway is killed, and restarted 1 s later
        def kill_gateway(outcome: Outcome) -> float:
            functions = _function_processes(platform.gateway.pid)
            platform.gateway.kill()
            # An idle instance exits on the socket's EOF; interpreter shutdown takes a second or more on a busy
            # machine, so only one still alive after 15 s counts as leaked.
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and any(process_alive(pid) for pid in functions):
                time.sleep(0.1)
            for pid in functions:
                if process_alive(pid):
                    outcome.duplicated.append(f"function process {pid} outlived its gateway")
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
            restarted = time.monotonic()
            platform.start_gateway()
            return restarted

        chaos.run("gateway (SIGKILL, restart)", kill_gateway)

        # WHEN the worker is killed while it creates a container, and restarted
        mid_job: dict[str, str] = {}

        def kill_worker_mid_job(outcome: Outcome) -> float:
            loop.pause()  # the API loop's calls go on, but this container is the test's own
            new_id = loop.create_container(f"mid-job-{RUN}")
            assert new_id is not None, loop.calls[-3:]
            mid_job["id"] = new_id
            wait_until(
                lambda: platform.sql("SELECT status FROM containers WHERE id = %s", new_id)[0][0] != "pending",
                timeout=30,
                interval=0.01,
                message="the worker never took the job",
            )
            platform.worker.kill()
            loop.resume()
            time.sleep(1)
            platform.worker.start()
            return time.monotonic()  # the worker has no port to answer on: recovery counts from its start

        def mid_job_container_runs() -> bool:
            rows = platform.sql("SELECT status FROM containers WHERE id = %s", mid_job["id"])
            return bool(rows) and rows[0][0] == "running"

        chaos.run("worker (SIGKILL mid-job)", kill_worker_mid_job, extra_settle=mid_job_container_runs)

        # WHEN lb-runtime is killed, and restarted
        def kill_lb(_: Outcome) -> float:
            nonlocal lb_windows
            killed = time.monotonic()
            platform.lb.kill()
            time.sleep(0.5)
            restarted = time.monotonic()
            platform.start_lb()
            wait_until(
                lambda: httpx.get(f"http://127.0.0.1:{scene.listener_port}{WHOAMI}", timeout=2).status_code == 200,
                timeout=30,
                interval=0.05,
                ignoring=(httpx.HTTPError,),
            )
            lb_windows = (killed, time.monotonic())
            return restarted

        chaos.run("lb-runtime (SIGKILL, restart)", kill_lb)

        # WHEN Redis is killed, and restarted 3 s later
        def kill_redis(_: Outcome) -> float:
            platform.redis.kill()
            time.sleep(3)
            restarted = time.monotonic()
            platform.redis.start()
            return restarted

        chaos.run("Redis (SIGKILL, restart)", kill_redis)

        # WHEN PostgreSQL stops at once (every backend ends), and starts again 3 s later
        def restart_postgres(_: Outcome) -> float:
            platform.postgres.stop("immediate")
            time.sleep(3)
            restarted = time.monotonic()
            platform.postgres.start()
            return restarted

        chaos.run("PostgreSQL (immediate stop, start)", restart_postgres)
    finally:
        loop.stop()
        stream.stop()
        print("\n" + render_table(RESULTS))
        record_property(CHAOS_TABLE, render_table(RESULTS))  # printed at the end of the run (tests/conftest.py)

    # THEN nothing was lost or duplicated, anywhere
    for outcome in RESULTS:
        assert not outcome.lost and not outcome.duplicated, render_table(RESULTS)
    # THEN no API call hung, and every API error was clear; none while the worker, lb-runtime or AWS were out
    for outcome in RESULTS:
        assert outcome.hangs == 0 and not outcome.unclear_errors, render_table(RESULTS)
        if outcome.component.startswith(("worker", "lb-runtime", "local AWS")):
            assert outcome.api_errors == 0, render_table(RESULTS)
    # THEN customers saw no failure except while lb-runtime itself was down, and none after it was back
    for outcome in RESULTS:
        if not outcome.component.startswith("lb-runtime"):
            assert outcome.failed_requests == 0, render_table(RESULTS)
    # A request in flight at the kill (started just before it) is cut by it: the window holds every request whose
    # span overlaps lb-runtime's absence.
    down_from, back_at = lb_windows
    outside = [o for o in stream.outcomes if not o[1] and (o[3] < down_from or o[0] > back_at)]
    assert not outside, (lb_windows, outside[:5])
