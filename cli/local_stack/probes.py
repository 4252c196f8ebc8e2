"""What answers where: the stack's own processes on their ports, and the machine's services behind them.

A port probe answers ``ABSENT`` (nothing listens), ``ANSWERS`` (a Berth gateway, lb-runtime or S3 API is
there) or ``FOREIGN`` (another program holds the port, which ``up`` refuses rather than start beside it).
PostgreSQL, Redis and Docker are the machine's own services: they are checked here, never started or
stopped; a failed check raises ``DependencyError`` with the way to fix it. Addresses are reported without
passwords.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from enum import Enum
from urllib.parse import urlsplit

import httpx

from cli.local_stack.aws import aws_client
from cli.local_stack.settings import LocalStackSettings
from shared.errors import DependencyError

# The gateway's public discovery document: any Berth gateway answers it, with Berth's JSON shapes.
OIDC_PATH = "/api/auth/.well-known/openid-configuration"


class Probe(Enum):
    ABSENT = "nothing listens"
    ANSWERS = "answers"
    FOREIGN = "another program holds the port"


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when something accepts a TCP connection on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def probe_gateway(settings: LocalStackSettings) -> Probe:
    """Whether a Berth gateway answers on the gateway port (any JSON answer in Berth's shapes)."""
    host = urlsplit(settings.gateway_url).hostname or "127.0.0.1"
    if not port_open(host, settings.gateway_port):
        return Probe.ABSENT
    try:
        answer = httpx.get(settings.gateway_url + OIDC_PATH, timeout=5, verify=False)  # noqa: S501 - self-signed
        body = answer.json()
    except (httpx.HTTPError, ValueError):
        return Probe.FOREIGN
    return Probe.ANSWERS if isinstance(body, dict) and ("issuer" in body or "error" in body) else Probe.FOREIGN


def lb_admin_address(settings: LocalStackSettings) -> tuple[str, int]:
    """(host, port) of lb-runtime's admin API, from ``BERTH_LB_ADMIN_URL``."""
    parts = urlsplit(settings.lb_admin_url)
    return parts.hostname or "127.0.0.1", parts.port or 9180


def probe_lb_runtime(settings: LocalStackSettings) -> Probe:
    """Whether lb-runtime answers on its admin port (its /healthz JSON)."""
    host, port = lb_admin_address(settings)
    if not port_open(host, port):
        return Probe.ABSENT
    try:
        body = httpx.get(settings.lb_admin_url.rstrip("/") + "/healthz", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return Probe.FOREIGN
    return Probe.ANSWERS if isinstance(body, dict) and "listeners" in body else Probe.FOREIGN


def probe_local_aws(settings: LocalStackSettings) -> Probe:
    """Whether something speaking the S3 API answers on the local AWS port."""
    if not port_open(settings.local_aws_host, settings.local_aws_port):
        return Probe.ABSENT
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        aws_client(settings, "s3", settings.local_aws_url, attempts=1).list_buckets()
    except (BotoCoreError, ClientError):
        return Probe.FOREIGN
    return Probe.ANSWERS


def check_database(settings: LocalStackSettings) -> list[str]:
    """Apply pending migrations (creating the database if needed); returns the ids applied."""
    import psycopg

    from shared.migrate import apply_migrations

    try:
        return apply_migrations(settings.database_url)
    except psycopg.Error as exc:
        raise DependencyError(
            f"PostgreSQL at {database_address(settings.database_url)} refused or did not answer ({exc}). "
            "Run `make up` (it runs infrastructure/local/bootstrap.sh as root to install and start it) "
            "or set BERTH_DATABASE_URL to a server you run."
        ) from exc


def database_answers(url: str) -> bool:
    """True when PostgreSQL at ``url`` accepts a connection."""
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error:
        return False
    return True


async def redis_answers(url: str) -> bool:
    """True when Redis at ``url`` answers a PING."""
    from redis.exceptions import RedisError

    from shared.cache import get_redis

    client = get_redis(url)
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()


def check_redis(settings: LocalStackSettings) -> None:
    """Raise ``DependencyError`` unless Redis answers."""
    if not asyncio.run(redis_answers(settings.redis_url)):
        raise DependencyError(
            f"Redis at {redis_address(settings.redis_url)} did not answer. Run `make up` (bootstrap starts "
            "one on 127.0.0.1:6379) or set BERTH_REDIS_URL to a server you run."
        )


def docker_state() -> str:
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


def docker_host() -> str:
    """The Docker Engine address the worker uses."""
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


def database_address(url: str) -> str:
    """host:port/dbname, never the password."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(url)
    return f"{params.get('host', 'localhost')}:{params.get('port', 5432)}/{params.get('dbname', '')}"


def redis_address(url: str) -> str:
    """host:port/db, never the password."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"
