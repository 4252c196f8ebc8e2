"""``berth local``: the whole platform on this machine, started and stopped with one command each.

``up`` starts what is missing (the local AWS, i.e. moto serving S3 and SQS, and the gateway with every
function behind it), creates the bucket and queues, applies migrations, and reuses whatever already
answers; ``down`` stops only the processes ``up`` started, by the PIDs it recorded. PostgreSQL, Redis
and Docker are the machine's own services (``infrastructure/local/bootstrap.sh`` installs and starts
them): they are checked here, never started or stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import Field, ValidationError

from gateway.settings import GatewaySettings
from shared.config import PROJECT_ROOT
from shared.errors import BerthError, Conflict, DependencyError, ServiceUnavailable
from shared.jobs import JOBS_MAX_RECEIVE_COUNT

GATEWAY = "gateway"
LOCAL_AWS = "local-aws"
WORKER = "worker"
LB_RUNTIME = "lb-runtime"
# What `up` may start, in the order `down` stops it (the worker first: it drains its jobs).
MANAGED = (WORKER, LB_RUNTIME, GATEWAY, LOCAL_AWS)
DUMMY_AWS_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
OIDC_PATH = "/api/auth/.well-known/openid-configuration"

# How each managed process shows up in /proc/<pid>/cmdline, so a recycled PID is never signalled.
_COMMAND_MARKERS = {
    GATEWAY: ("cli.main", "gateway"),
    LOCAL_AWS: ("cli.main", "local", "aws"),
    WORKER: ("cli.main", "worker"),
    LB_RUNTIME: ("cli.main", "lb"),
}


class LocalStackSettings(GatewaySettings):
    """The gateway's settings plus where ``berth local`` runs the local AWS and keeps its state."""

    # Pidfiles and logs of what ``up`` started; also the gateway's state dir unless that is set.
    local_state_dir: Path = PROJECT_ROOT / ".berth"
    local_start_timeout_seconds: float = Field(default=60.0, gt=0)
    local_stop_grace_seconds: float = Field(default=10.0, gt=0)

    @property
    def runs_local_aws(self) -> bool:
        """True when ``up`` should run moto itself rather than use an endpoint someone else runs."""
        return self.aws_endpoint == self.local_aws_url

    @property
    def gateway_url(self) -> str:
        scheme = "https" if self.gateway_tls else "http"
        host = "127.0.0.1" if self.gateway_host in ("", "0.0.0.0") else self.gateway_host
        return f"{scheme}://{host}:{self.gateway_port}"

    @property
    def logs_dir(self) -> Path:
        return self.local_state_dir / "logs"

    def pidfile(self, name: str) -> Path:
        return self.local_state_dir / f"{name}.pid"

    def logfile(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"


# --------------------------------------------------------------------------------------------- processes


def _process_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie nobody reaped yet (PID 1 in a container may not) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    state = _proc_stat(pid)
    return state is None or state[0] != "Z"


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) from /proc, or None where there is no /proc."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses; the fields after its closing one do not.
    fields = raw.rsplit(")", 1)[1].split()
    return fields[0], int(fields[2])


def _is_berth_process(pid: int, name: str) -> bool:
    """True when ``pid`` still runs the command ``up`` started for ``name`` (not a recycled PID)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no /proc on this OS: trust the pidfile
    except OSError:
        return False
    words = [word.decode(errors="replace") for word in argv]
    marker = list(_COMMAND_MARKERS[name])
    return any(words[i : i + len(marker)] == marker for i in range(len(words)))


def _group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid`` (the group ``up`` gave each process it started)."""
    proc = Path("/proc")
    if not proc.exists():
        return [pgid] if _process_alive(pgid) else []
    members = []
    for entry in proc.iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None and stat[1] == pgid and stat[0] != "Z":
                members.append(int(entry.name))
    return members


def _wait_for_exit(pids: Callable[[], list[int]], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pids():
            return True
        time.sleep(0.1)
    return not pids()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _stop_process(pid: int, grace_seconds: float) -> str:
    """SIGTERM so the process drains, SIGKILL to its whole group after the grace period."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not _wait_for_exit(lambda: [pid] if _process_alive(pid) else [], grace_seconds):
        _signal_group(pid, signal.SIGKILL)
        _wait_for_exit(lambda: [pid] if _process_alive(pid) else [], 5)
        return "killed (did not stop within the grace period)"
    # Children that outlived their parent (function workers, say) belong to the same group.
    if _group_members(pid):
        _signal_group(pid, signal.SIGTERM)
        if not _wait_for_exit(lambda: _group_members(pid), grace_seconds):
            _signal_group(pid, signal.SIGKILL)
    return "stopped"


def _recorded_pid(settings: LocalStackSettings, name: str) -> int | None:
    """The PID ``up`` recorded for ``name`` when that process still runs; a stale pidfile is removed."""
    path = settings.pidfile(name)
    try:
        pid = int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        path.unlink(missing_ok=True)
        return None
    if _process_alive(pid) and _is_berth_process(pid, name):
        return pid
    path.unlink(missing_ok=True)
    return None


def _spawn_detached(settings: LocalStackSettings, name: str, command: list[str], env: dict[str, str]) -> int:
    """Start ``command`` in its own session (it outlives this CLI), log to the state dir, record its PID."""
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    with settings.logfile(name).open("ab") as log:
        log.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')} berth local up: {' '.join(command)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=PROJECT_ROOT,
            start_new_session=True,
        )
    settings.pidfile(name).write_text(f"{process.pid}\n")
    return process.pid


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])


@contextlib.contextmanager
def _state_lock(settings: LocalStackSettings) -> Iterator[None]:
    """One ``berth local`` command at a time per state dir, so two ``up`` never start two gateways."""
    settings.local_state_dir.mkdir(parents=True, exist_ok=True)
    with (settings.local_state_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------------------ probes


class Probe(Enum):
    ABSENT = "nothing listens"
    ANSWERS = "answers"
    FOREIGN = "another program holds the port"


def _port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _probe_gateway(settings: LocalStackSettings) -> Probe:
    """Whether a Berth gateway answers on the gateway port (any JSON answer in Berth's shapes)."""
    host = urlsplit(settings.gateway_url).hostname or "127.0.0.1"
    if not _port_open(host, settings.gateway_port):
        return Probe.ABSENT
    try:
        answer = httpx.get(settings.gateway_url + OIDC_PATH, timeout=5, verify=False)  # noqa: S501 - self-signed
        body = answer.json()
    except (httpx.HTTPError, ValueError):
        return Probe.FOREIGN
    return Probe.ANSWERS if isinstance(body, dict) and ("issuer" in body or "error" in body) else Probe.FOREIGN


def _lb_admin(settings: LocalStackSettings) -> tuple[str, int]:
    parts = urlsplit(settings.lb_admin_url)
    return parts.hostname or "127.0.0.1", parts.port or 9180


def _probe_lb_runtime(settings: LocalStackSettings) -> Probe:
    """Whether lb-runtime answers on its admin port (its /healthz JSON)."""
    host, port = _lb_admin(settings)
    if not _port_open(host, port):
        return Probe.ABSENT
    try:
        body = httpx.get(settings.lb_admin_url.rstrip("/") + "/healthz", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return Probe.FOREIGN
    return Probe.ANSWERS if isinstance(body, dict) and "listeners" in body else Probe.FOREIGN


def _aws_client(settings: LocalStackSettings, service: str, endpoint: str | None, *, attempts: int = 3) -> Any:
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(region_name=settings.aws_region)
    credentials: dict[str, str] = {}
    if session.get_credentials() is None:
        credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
    config = Config(
        connect_timeout=3,
        read_timeout=10,
        retries={"max_attempts": attempts, "mode": "standard"},
        s3={"addressing_style": "path"},
    )
    return session.client(service, endpoint_url=endpoint, config=config, **credentials)


def _probe_local_aws(settings: LocalStackSettings) -> Probe:
    """Whether something speaking the S3 API answers on the local AWS port."""
    if not _port_open(settings.local_aws_host, settings.local_aws_port):
        return Probe.ABSENT
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        _aws_client(settings, "s3", settings.local_aws_url, attempts=1).list_buckets()
    except (BotoCoreError, ClientError):
        return Probe.FOREIGN
    return Probe.ANSWERS


def _check_database(settings: LocalStackSettings) -> list[str]:
    """Apply pending migrations (creating the database if needed); returns the ids applied."""
    import psycopg

    from shared.migrate import apply_migrations

    try:
        return apply_migrations(settings.database_url)
    except psycopg.Error as exc:
        raise DependencyError(
            f"PostgreSQL at {_database_address(settings.database_url)} refused or did not answer ({exc}). "
            "Run `make up` (it runs infrastructure/local/bootstrap.sh as root to install and start it) "
            "or set BERTH_DATABASE_URL to a server you run."
        ) from exc


async def _redis_answers(url: str) -> bool:
    from redis.exceptions import RedisError

    from shared.cache import get_redis

    client = get_redis(url)
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()


def _check_redis(settings: LocalStackSettings) -> None:
    if not asyncio.run(_redis_answers(settings.redis_url)):
        raise DependencyError(
            f"Redis at {_redis_address(settings.redis_url)} did not answer. Run `make up` (bootstrap starts "
            "one on 127.0.0.1:6379) or set BERTH_REDIS_URL to a server you run."
        )


def _docker_state() -> str:
    """Docker is for the host worker; ``up`` reports it and carries on without it."""
    try:
        result = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
    except FileNotFoundError:
        return "not installed (run infrastructure/local/bootstrap.sh as root)"
    except subprocess.TimeoutExpired:
        return "not answering (`docker info` timed out)"
    if result.returncode != 0:
        return "not running (run infrastructure/local/bootstrap.sh as root to start dockerd)"
    return f"running (Engine {result.stdout.strip()})"


def _docker_host() -> str:
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


def _database_address(url: str) -> str:
    """host:port/dbname, never the password."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(url)
    return f"{params.get('host', 'localhost')}:{params.get('port', 5432)}/{params.get('dbname', '')}"


def _redis_address(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"


# ---------------------------------------------------------------------------------------- AWS resources


def _client_error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def ensure_aws_resources(settings: LocalStackSettings, endpoint: str | None) -> dict[str, str]:
    """Create the images bucket, the jobs dead-letter queue and the jobs queue (idempotent)."""
    from botocore.exceptions import ClientError

    s3 = _aws_client(settings, "s3", endpoint)
    bucket_args: dict[str, Any] = {"Bucket": settings.images_bucket}
    if settings.aws_region != "us-east-1":
        bucket_args["CreateBucketConfiguration"] = {"LocationConstraint": settings.aws_region}
    try:
        s3.create_bucket(**bucket_args)
    except ClientError as exc:
        if _client_error_code(exc) != "BucketAlreadyOwnedByYou":
            raise
    # Browsers (the UI) upload archives straight to the bucket, as template.yaml allows on AWS.
    port = settings.gateway_port
    s3.put_bucket_cors(
        Bucket=settings.images_bucket,
        CORSConfiguration={
            "CORSRules": [
                {
                    "AllowedMethods": ["POST", "PUT"],
                    "AllowedOrigins": sorted(
                        {settings.gateway_url, f"http://localhost:{port}", f"https://localhost:{port}"}
                    ),
                    "AllowedHeaders": ["*"],
                    "ExposeHeaders": ["ETag"],
                    "MaxAgeSeconds": 600,
                }
            ]
        },
    )

    sqs = _aws_client(settings, "sqs", endpoint)
    dead_letter_url = sqs.create_queue(QueueName=settings.jobs_dead_letter_queue)["QueueUrl"]
    dead_letter_arn = sqs.get_queue_attributes(QueueUrl=dead_letter_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = {
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": JOBS_MAX_RECEIVE_COUNT})
    }
    try:
        jobs_url = sqs.create_queue(QueueName=settings.jobs_queue, Attributes=redrive)["QueueUrl"]
    except ClientError as exc:
        # The queue exists with other attributes (an older policy): bring it in line.
        if "QueueNameExists" not in _client_error_code(exc) and "QueueAlreadyExists" not in _client_error_code(exc):
            raise
        jobs_url = sqs.get_queue_url(QueueName=settings.jobs_queue)["QueueUrl"]
        sqs.set_queue_attributes(QueueUrl=jobs_url, Attributes=redrive)
    return {"bucket": settings.images_bucket, "jobs_queue": jobs_url, "dead_letter_queue": dead_letter_url}


# ------------------------------------------------------------------------------------------ orchestration


def child_environment(settings: LocalStackSettings) -> dict[str, str]:
    """The environment of the processes ``up`` starts: the caller's, plus what ties the stack together.

    Only values the caller did not set explicitly are filled in, so an override always wins.
    """
    env = dict(os.environ)
    explicit = settings.model_fields_set
    endpoint = settings.aws_endpoint
    if endpoint and "aws_endpoint_url" not in explicit:
        env["BERTH_AWS_ENDPOINT_URL"] = endpoint
    if "gateway_state_dir" not in explicit:
        env["BERTH_GATEWAY_STATE_DIR"] = str(settings.local_state_dir)
    # Tokens name the gateway that issued them; follow the gateway's actual port and scheme.
    if "jwt_issuer" not in explicit:
        env["BERTH_JWT_ISSUER"] = settings.gateway_url + "/api/auth"
    if "jwks_url" not in explicit:
        env["BERTH_JWKS_URL"] = settings.gateway_url + "/api/auth/.well-known/jwks.json"
    env.setdefault("BERTH_WORKER_WORK_DIR", str(settings.local_state_dir / "worker"))
    # lb-runtime serves its admin API where the load-balancer function looks for it.
    env.setdefault("BERTH_LB_ADMIN_ADDRESS", _lb_admin(settings)[0])
    env.setdefault("BERTH_LB_ADMIN_PORT", str(_lb_admin(settings)[1]))
    env.setdefault("AWS_DEFAULT_REGION", settings.aws_region)
    if endpoint and _no_aws_credentials():
        env.update(DUMMY_AWS_CREDENTIALS)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _no_aws_credentials() -> bool:
    import boto3

    return boto3.session.Session().get_credentials() is None


def _ensure_process(
    settings: LocalStackSettings,
    name: str,
    command: list[str],
    probe: Callable[[], Probe],
    port_hint: str,
) -> str:
    """Reuse ``name`` if it answers, else start it and wait until it does; returns its state for the table."""
    pid = _recorded_pid(settings, name)
    found = probe()
    if found is Probe.ANSWERS:
        if pid is not None:
            return f"running, reused (pid {pid})"
        return "running, reused (not started by `berth local`; `down` leaves it alone)"
    if found is Probe.FOREIGN and pid is None:
        raise Conflict(
            f"{port_hint} is taken by another program that is not a Berth {name}. Stop that program "
            f"(`ss -ltnp` shows which) or move Berth's {name} to a free port (see README, Configuration)."
        )
    started = pid is None
    if pid is None:
        print(f"{name}: starting ({' '.join(command[1:])})", flush=True)
        pid = _spawn_detached(settings, name, command, child_environment(settings))
    else:
        print(f"{name}: pid {pid} is running but not answering yet; waiting", flush=True)
    deadline = time.monotonic() + settings.local_start_timeout_seconds
    while time.monotonic() < deadline:
        if not _process_alive(pid):
            settings.pidfile(name).unlink(missing_ok=True)
            raise ServiceUnavailable(
                f"{name} exited before it answered. Last lines of {settings.logfile(name)}:\n"
                + _log_tail(settings.logfile(name))
            )
        if probe() is Probe.ANSWERS:
            return f"started (pid {pid})" if started else f"running (pid {pid})"
        time.sleep(0.2)
    if started:
        _stop_process(pid, settings.local_stop_grace_seconds)
        settings.pidfile(name).unlink(missing_ok=True)
    raise ServiceUnavailable(
        f"{name} did not answer on {port_hint} within {settings.local_start_timeout_seconds:.0f}s "
        f"(BERTH_LOCAL_START_TIMEOUT_SECONDS). Last lines of {settings.logfile(name)}:\n"
        + _log_tail(settings.logfile(name))
    )


def _print_table(rows: list[tuple[str, str, str]]) -> None:
    widths = [max(len(row[column]) for row in rows) for column in range(2)]
    for component, where, state in rows:
        print(f"  {component:<{widths[0]}}  {where:<{widths[1]}}  {state}")


def _load_settings() -> LocalStackSettings | None:
    try:
        return LocalStackSettings()
    except ValidationError as exc:
        print(f"berth local: the settings are invalid (see README, Configuration):\n{exc}", file=sys.stderr)
        return None


def _relative(path: Path) -> str:
    """Paths inside the project as the README shows them (``.berth/logs/...``), others in full."""
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def up() -> int:
    """Start the local platform, reusing whatever already runs; prints what runs where."""
    settings = _load_settings()
    if settings is None:
        return 2
    try:
        with _state_lock(settings):
            rows = _bring_up(settings)
    except BerthError as exc:
        print(f"berth local up: {exc.message}", file=sys.stderr)
        if any(_recorded_pid(settings, name) for name in MANAGED):
            print(
                "(what already started keeps running for the next `up`; `berth local down` stops it)", file=sys.stderr
            )
        return 1
    print(f"\nBerth runs locally (state and logs in {_relative(settings.local_state_dir)}):")
    _print_table(rows)
    url = settings.gateway_url
    insecure = "k" if settings.gateway_tls else ""
    print(
        f"\nTry:  curl -s{insecure} {url}{OIDC_PATH}\n"
        f"      curl -s{insecure} -X POST {url}/api/auth/signup -H 'content-type: application/json' "
        """-d '{"email": "you@example.com", "password": "plum-kettle-harbor-91"}'\n"""
        "Stop: berth local down   (or: make down)"
    )
    return 0


def _refuse_taken_ports(settings: LocalStackSettings) -> None:
    """Fail before starting anything when another program holds a port ``up`` needs."""
    checks = [(GATEWAY, "BERTH_GATEWAY_PORT", settings.gateway_port, _probe_gateway)]
    if settings.runs_local_aws:
        checks.append((LOCAL_AWS, "BERTH_LOCAL_AWS_PORT", settings.local_aws_port, _probe_local_aws))
    for name, variable, port, probe in checks:
        if _recorded_pid(settings, name) is None and probe(settings) is Probe.FOREIGN:
            raise Conflict(
                f"port {port} is taken by another program that is not a Berth {name}. Stop that program "
                f"(`ss -ltnp 'sport = :{port}'` shows which) or pick a free port: {variable}=<port> berth local up"
            )


def _bring_up(settings: LocalStackSettings) -> list[tuple[str, str, str]]:
    _refuse_taken_ports(settings)
    print("PostgreSQL: applying migrations", flush=True)
    applied = _check_database(settings)
    _check_redis(settings)
    python = [sys.executable, "-m", "cli.main"]

    endpoint = settings.aws_endpoint
    if settings.runs_local_aws:
        aws_state = _ensure_process(
            settings,
            LOCAL_AWS,
            [*python, "local", "aws"],
            lambda: _probe_local_aws(settings),
            f"{settings.local_aws_host}:{settings.local_aws_port} (BERTH_LOCAL_AWS_PORT)",
        )
    else:
        aws_state = "external, not managed by `berth local`"
    print(f"S3/SQS: ensuring bucket {settings.images_bucket} and queues at {endpoint or 'AWS'}", flush=True)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        ensure_aws_resources(settings, endpoint)
    except (BotoCoreError, ClientError) as exc:
        raise DependencyError(
            f"Preparing S3/SQS at {endpoint or 'AWS'} failed ({exc}). Check AWS_ENDPOINT_URL and the "
            "credentials, or unset AWS_ENDPOINT_URL to use the local moto."
        ) from exc

    gateway_state = _ensure_process(
        settings,
        GATEWAY,
        [*python, "gateway"],
        lambda: _probe_gateway(settings),
        f"{settings.gateway_host}:{settings.gateway_port} (BERTH_GATEWAY_PORT)",
    )
    # The worker listens on no port: it is up while the process it started runs.
    worker_state = _ensure_process(
        settings,
        WORKER,
        [*python, "worker"],
        lambda: Probe.ANSWERS if _recorded_pid(settings, WORKER) else Probe.ABSENT,
        "the job queue",
    )
    admin_host, admin_port = _lb_admin(settings)
    lb_state = _ensure_process(
        settings,
        LB_RUNTIME,
        [*python, "lb"],
        lambda: _probe_lb_runtime(settings),
        f"{admin_host}:{admin_port} (BERTH_LB_ADMIN_URL)",
    )
    migrations = f"{len(applied)} migration(s) applied" if applied else "schema up to date"
    queues = f"{settings.jobs_queue} -> {settings.jobs_dead_letter_queue} after {JOBS_MAX_RECEIVE_COUNT} tries"
    logs = ", ".join(settings.logfile(name).name for name in MANAGED)
    return [
        ("gateway", settings.gateway_url, gateway_state),
        ("host worker", f"jobs from {settings.jobs_queue} and its host queue", worker_state),
        (
            "lb-runtime",
            f"listeners on {settings.lb_bind_address}:{settings.lb_port_range_start}-{settings.lb_port_range_end}, "
            f"admin {settings.lb_admin_url}",
            lb_state,
        ),
        ("S3/SQS (moto)" if settings.runs_local_aws else "S3/SQS", endpoint or "AWS (default endpoints)", aws_state),
        ("S3 bucket", settings.images_bucket, "ready"),
        ("SQS queues", queues, "ready"),
        ("PostgreSQL", _database_address(settings.database_url), f"up, {migrations}"),
        ("Redis", _redis_address(settings.redis_url), f"up (key prefix {settings.redis_prefix})"),
        ("Docker", _docker_host(), _docker_state()),
        ("logs", _relative(settings.logs_dir) + "/", logs),
    ]


def down() -> int:
    """Stop what ``up`` started (by its pidfiles); PostgreSQL, Redis and Docker are left alone."""
    settings = _load_settings()
    if settings is None:
        return 2
    failed = False
    with _state_lock(settings):
        for name in MANAGED:
            path = settings.pidfile(name)
            if not path.exists():
                print(f"{name}: not started by `berth local`; nothing to stop")
                continue
            pid = _recorded_pid(settings, name)
            if pid is None:
                print(f"{name}: already stopped (removed its stale pidfile)")
                continue
            try:
                outcome = _stop_process(pid, settings.local_stop_grace_seconds)
            except PermissionError:
                print(f"{name}: pid {pid} belongs to another user; stop it as that user", file=sys.stderr)
                failed = True
                continue
            path.unlink(missing_ok=True)
            print(f"{name}: {outcome} (pid {pid})")
    return 1 if failed else 0


def status() -> int:
    """Print what runs where; 0 when the gateway and the S3/SQS endpoint answer, 3 otherwise."""
    settings = _load_settings()
    if settings is None:
        return 2
    gateway = _describe(settings, GATEWAY, _probe_gateway(settings))
    if settings.runs_local_aws:
        aws = _describe(settings, LOCAL_AWS, _probe_local_aws(settings))
    else:
        aws = (True, "external, not managed by `berth local`")
    database = "up" if _database_answers(settings.database_url) else "not answering"
    redis_up = asyncio.run(_redis_answers(settings.redis_url))
    _print_table(
        [
            ("gateway", settings.gateway_url, gateway[1]),
            ("host worker", "", _describe_worker(settings)),
            ("lb-runtime", settings.lb_admin_url, _describe(settings, LB_RUNTIME, _probe_lb_runtime(settings))[1]),
            ("S3/SQS (moto)" if settings.runs_local_aws else "S3/SQS", settings.aws_endpoint or "AWS", aws[1]),
            ("PostgreSQL", _database_address(settings.database_url), database),
            ("Redis", _redis_address(settings.redis_url), "up" if redis_up else "not answering"),
            ("Docker", _docker_host(), _docker_state()),
            ("state", _relative(settings.local_state_dir), ""),
        ]
    )
    return 0 if gateway[0] and aws[0] else 3


def _describe(settings: LocalStackSettings, name: str, found: Probe) -> tuple[bool, str]:
    pid = _recorded_pid(settings, name)
    if found is Probe.ANSWERS:
        return True, f"running (pid {pid})" if pid else "running (not started by `berth local`)"
    if pid is not None:
        return False, f"pid {pid} runs but does not answer; see {_relative(settings.logfile(name))}"
    if found is Probe.FOREIGN:
        return False, "port taken by another program"
    return False, "stopped"


def _describe_worker(settings: LocalStackSettings) -> str:
    pid = _recorded_pid(settings, WORKER)
    return f"running (pid {pid})" if pid else "stopped"


def _database_answers(url: str) -> bool:
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error:
        return False
    return True


def run_local_aws() -> int:
    """Serve S3 and SQS (moto) on the local AWS port in the foreground until SIGTERM or Ctrl-C."""
    settings = _load_settings()
    if settings is None:
        return 2
    host, port = settings.local_aws_host, settings.local_aws_port
    if _port_open(host, port):
        print(
            f"berth local aws: {host}:{port} is already in use; stop what listens there or set "
            "BERTH_LOCAL_AWS_PORT to a free port",
            file=sys.stderr,
        )
        return 1
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        print("berth local aws: moto is not installed; run: pip install -e '.[local]'", file=sys.stderr)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    print(f"local AWS (moto: S3, SQS) on http://{host}:{port}; SIGTERM or Ctrl-C stops it", flush=True)
    while not stop.wait(1):
        pass
    server.stop()
    return 0
