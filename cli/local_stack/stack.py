"""``berth local up|down|status|aws``: the orchestration, in the order a developer sees it.

``up`` refuses ports another program holds, applies migrations, checks Redis, then starts each managed
process that does not answer yet (the local AWS, the gateway, the host worker, lb-runtime), waiting until it
answers, and reuses whatever already does: a process it did not start it never records, so ``down`` leaves
it alone. ``down`` stops only what ``up`` recorded, in ``MANAGED`` order. ``status`` only looks. Every
command prints what runs where; failures are one ``BerthError`` message on stderr and a non-zero exit code
(2: invalid settings, 1: a command failed, 3: ``status`` found the gateway or S3/SQS not answering).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from cli.local_stack.aws import DUMMY_AWS_CREDENTIALS, ensure_aws_resources, no_aws_credentials, serve_local_aws
from cli.local_stack.probes import (
    OIDC_PATH,
    Probe,
    check_database,
    check_redis,
    database_address,
    database_answers,
    docker_host,
    docker_state,
    lb_admin_address,
    port_open,
    probe_gateway,
    probe_lb_runtime,
    probe_local_aws,
    redis_address,
    redis_answers,
)
from cli.local_stack.processes import (
    GATEWAY,
    LB_RUNTIME,
    LOCAL_AWS,
    MANAGED,
    WORKER,
    berth_command,
    log_tail,
    process_alive,
    recorded_pid,
    spawn_detached,
    state_lock,
    stop_process,
)
from cli.local_stack.settings import LocalStackSettings
from shared.config import PROJECT_ROOT
from shared.errors import BerthError, Conflict, DependencyError, ServiceUnavailable
from shared.jobs import JOBS_MAX_RECEIVE_COUNT


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
    # A developer's webhook receivers listen on this machine: allow private targets locally (docs/ALERTS.md).
    env.setdefault("BERTH_ALERTS_ALLOW_PRIVATE_WEBHOOKS", "true")
    # lb-runtime serves its admin API where the load-balancer function looks for it.
    env.setdefault("BERTH_LB_ADMIN_ADDRESS", lb_admin_address(settings)[0])
    env.setdefault("BERTH_LB_ADMIN_PORT", str(lb_admin_address(settings)[1]))
    env.setdefault("AWS_DEFAULT_REGION", settings.aws_region)
    if endpoint and no_aws_credentials():
        env.update(DUMMY_AWS_CREDENTIALS)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _ensure_process(
    settings: LocalStackSettings,
    name: str,
    probe: Callable[[], Probe],
    port_hint: str,
) -> str:
    """Reuse ``name`` if it answers, else start it and wait until it does; returns its state for the table."""
    command = berth_command(name)
    pid = recorded_pid(settings, name)
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
        pid = spawn_detached(settings, name, command, child_environment(settings))
    else:
        print(f"{name}: pid {pid} is running but not answering yet; waiting", flush=True)
    deadline = time.monotonic() + settings.local_start_timeout_seconds
    while time.monotonic() < deadline:
        if not process_alive(pid):
            settings.pidfile(name).unlink(missing_ok=True)
            raise ServiceUnavailable(
                f"{name} exited before it answered. Last lines of {settings.logfile(name)}:\n"
                + log_tail(settings.logfile(name))
            )
        if probe() is Probe.ANSWERS:
            return f"started (pid {pid})" if started else f"running (pid {pid})"
        time.sleep(0.2)
    if started:
        stop_process(pid, settings.local_stop_grace_seconds)
        settings.pidfile(name).unlink(missing_ok=True)
    raise ServiceUnavailable(
        f"{name} did not answer on {port_hint} within {settings.local_start_timeout_seconds:.0f}s "
        f"(BERTH_LOCAL_START_TIMEOUT_SECONDS). Last lines of {settings.logfile(name)}:\n"
        + log_tail(settings.logfile(name))
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
        with state_lock(settings):
            rows = _bring_up(settings)
    except BerthError as exc:
        print(f"berth local up: {exc.message}", file=sys.stderr)
        if any(recorded_pid(settings, name) for name in MANAGED):
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
    checks = [(GATEWAY, "BERTH_GATEWAY_PORT", settings.gateway_port, probe_gateway)]
    if settings.runs_local_aws:
        checks.append((LOCAL_AWS, "BERTH_LOCAL_AWS_PORT", settings.local_aws_port, probe_local_aws))
    for name, variable, port, probe in checks:
        if recorded_pid(settings, name) is None and probe(settings) is Probe.FOREIGN:
            raise Conflict(
                f"port {port} is taken by another program that is not a Berth {name}. Stop that program "
                f"(`ss -ltnp 'sport = :{port}'` shows which) or pick a free port: {variable}=<port> berth local up"
            )


def _bring_up(settings: LocalStackSettings) -> list[tuple[str, str, str]]:
    _refuse_taken_ports(settings)
    print("PostgreSQL: applying migrations", flush=True)
    applied = check_database(settings)
    check_redis(settings)

    endpoint = settings.aws_endpoint
    if settings.runs_local_aws:
        aws_state = _ensure_process(
            settings,
            LOCAL_AWS,
            lambda: probe_local_aws(settings),
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
        lambda: probe_gateway(settings),
        f"{settings.gateway_host}:{settings.gateway_port} (BERTH_GATEWAY_PORT)",
    )
    # The worker listens on no port: it is up while the process it started runs.
    worker_state = _ensure_process(
        settings,
        WORKER,
        lambda: Probe.ANSWERS if recorded_pid(settings, WORKER) else Probe.ABSENT,
        "the job queue",
    )
    admin_host, admin_port = lb_admin_address(settings)
    lb_state = _ensure_process(
        settings,
        LB_RUNTIME,
        lambda: probe_lb_runtime(settings),
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
        ("PostgreSQL", database_address(settings.database_url), f"up, {migrations}"),
        ("Redis", redis_address(settings.redis_url), f"up (key prefix {settings.redis_prefix})"),
        ("Docker", docker_host(), docker_state()),
        ("logs", _relative(settings.logs_dir) + "/", logs),
    ]


def down() -> int:
    """Stop what ``up`` started (by its pidfiles); PostgreSQL, Redis and Docker are left alone."""
    settings = _load_settings()
    if settings is None:
        return 2
    failed = False
    with state_lock(settings):
        for name in MANAGED:
            path = settings.pidfile(name)
            if not path.exists():
                print(f"{name}: not started by `berth local`; nothing to stop")
                continue
            pid = recorded_pid(settings, name)
            if pid is None:
                print(f"{name}: already stopped (removed its stale pidfile)")
                continue
            try:
                outcome = stop_process(pid, settings.local_stop_grace_seconds)
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
    gateway = _describe(settings, GATEWAY, probe_gateway(settings))
    if settings.runs_local_aws:
        aws = _describe(settings, LOCAL_AWS, probe_local_aws(settings))
    else:
        aws = (True, "external, not managed by `berth local`")
    database = "up" if database_answers(settings.database_url) else "not answering"
    redis_up = asyncio.run(redis_answers(settings.redis_url))
    _print_table(
        [
            ("gateway", settings.gateway_url, gateway[1]),
            ("host worker", "", _describe_worker(settings)),
            ("lb-runtime", settings.lb_admin_url, _describe(settings, LB_RUNTIME, probe_lb_runtime(settings))[1]),
            ("S3/SQS (moto)" if settings.runs_local_aws else "S3/SQS", settings.aws_endpoint or "AWS", aws[1]),
            ("PostgreSQL", database_address(settings.database_url), database),
            ("Redis", redis_address(settings.redis_url), "up" if redis_up else "not answering"),
            ("Docker", docker_host(), docker_state()),
            ("state", _relative(settings.local_state_dir), ""),
        ]
    )
    return 0 if gateway[0] and aws[0] else 3


def _describe(settings: LocalStackSettings, name: str, found: Probe) -> tuple[bool, str]:
    pid = recorded_pid(settings, name)
    if found is Probe.ANSWERS:
        return True, f"running (pid {pid})" if pid else "running (not started by `berth local`)"
    if pid is not None:
        return False, f"pid {pid} runs but does not answer; see {_relative(settings.logfile(name))}"
    if found is Probe.FOREIGN:
        return False, "port taken by another program"
    return False, "stopped"


def _describe_worker(settings: LocalStackSettings) -> str:
    pid = recorded_pid(settings, WORKER)
    return f"running (pid {pid})" if pid else "stopped"


def run_local_aws() -> int:
    """Serve S3 and SQS (moto) on the local AWS port in the foreground until SIGTERM or Ctrl-C."""
    settings = _load_settings()
    if settings is None:
        return 2
    host, port = settings.local_aws_host, settings.local_aws_port
    if port_open(host, port):
        print(
            f"berth local aws: {host}:{port} is already in use; stop what listens there or set "
            "BERTH_LOCAL_AWS_PORT to a free port",
            file=sys.stderr,
        )
        return 1
    try:
        serve_local_aws(host, port)
    except DependencyError as exc:
        print(f"berth local aws: {exc.message}", file=sys.stderr)
        return 1
    return 0
