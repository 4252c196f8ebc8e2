"""A throwaway local platform for benchmarks: its own database, Redis prefix, moto port, gateway port and
state folder, started with ``berth local up`` and removed again (database included) on exit."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from shared.migrate import apply_migrations, drop_database  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Platform:
    url: str
    state: Path
    env: dict[str, str]

    def sign_up(self, client: httpx.Client) -> dict[str, str]:
        """A new user's bearer headers."""
        email, password = f"bench-{secrets.token_hex(4)}@example.com", "plum-kettle-harbor-" + secrets.token_hex(6)
        client.post("/api/auth/signup", json={"email": email, "password": password}).raise_for_status()
        token = client.post("/api/auth/signin", json={"email": email, "password": password}).json()
        return {"Authorization": f"Bearer {token['access_token']}"}

    @property
    def worker_log(self) -> Path:
        return self.state / "logs" / "worker.log"


@contextmanager
def local_platform(extra_env: dict[str, str] | None = None) -> Iterator[Platform]:
    run = secrets.token_hex(4)
    base_url = os.environ.get("BERTH_DATABASE_URL", "postgresql://berth:berth@127.0.0.1:5432/berth")
    database_url = base_url.rsplit("/", 1)[0] + f"/berth_bench_{run}"
    state = Path(tempfile.mkdtemp(prefix="berth-bench-"))
    gateway_port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_ENDPOINT", "BERTH_"))}
    env.update(
        {
            "BERTH_DATABASE_URL": database_url,
            "BERTH_REDIS_PREFIX": f"berth-bench-{run}:",
            "BERTH_GATEWAY_PORT": str(gateway_port),
            "BERTH_LOCAL_AWS_PORT": str(free_port()),
            "BERTH_LOCAL_STATE_DIR": str(state),
            "BERTH_GATEWAY_RATE_LIMIT_PER_IP": "1000000",
            "BERTH_GATEWAY_RATE_LIMIT_PER_USER": "1000000",
            "BERTH_WORKER_WAIT_SECONDS": "1",
            "BERTH_CLUSTER_ID": f"bench-{run}",
            "BERTH_LOG_LEVEL": "INFO",
            **(extra_env or {}),
        }
    )
    berth = [sys.executable, "-m", "cli.main", "local"]
    apply_migrations(database_url)
    try:
        up = subprocess.run([*berth, "up"], env=env, cwd=ROOT, capture_output=True, text=True, check=False)
        if up.returncode != 0:
            raise SystemExit(f"berth local up failed:\n{up.stdout}\n{up.stderr}")
        yield Platform(f"http://127.0.0.1:{gateway_port}", state, env)
    finally:
        subprocess.run([*berth, "down"], env=env, cwd=ROOT, capture_output=True, check=False)
        drop_database(database_url)
