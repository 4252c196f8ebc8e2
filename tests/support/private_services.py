"""Servers of a test's own, so it may kill them: a PostgreSQL cluster, a redis-server and Berth's processes.

The machine's PostgreSQL and Redis are shared with everyone's test runs and must never be stopped. A test
that kills its database or Redis (tests/chaos) starts private ones instead: ``PrivatePostgres`` runs
``initdb`` into a temporary directory with Debian's ``/usr/lib/postgresql/*/bin`` binaries (as the
``postgres`` user when run as root, which PostgreSQL refuses) and serves it on a free loopback port;
``PrivateRedis`` runs ``redis-server`` on a free port with an append-only file fsynced on every write, so a
SIGKILL loses nothing, as on a production Redis with AOF. ``ManagedProcess`` is any other process (moto,
gateway, worker, lb-runtime) in a session of its own, so it and its children can be signalled by PID and
its group removed at the end. Every stop is by PID or process group, never by name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tests.support.ports import free_port
from tests.support.waiting import wait_until


def children_of(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (read from /proc), zombies excluded."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` in bytes (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class ManagedProcess:
    """A command started in its own session (so its children share its process group), logging to a file."""

    def __init__(self, name: str, command: Sequence[str], env: dict[str, str], log_path: Path, cwd: Path) -> None:
        self.name = name
        self.command = list(command)
        self.env = env
        self.log_path = log_path
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"\n--- start {time.strftime('%H:%M:%S')}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process itself (not its group)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL the process alone and reap it; children it leaves behind are the test's to look at."""
        if self.process is not None and self.process.poll() is None:
            self.signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL to the whole process group (its children too) after ``grace`` seconds."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
            self.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _postgres_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not versions:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (apt-get install postgresql)")
    return versions[-1].parent


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own in a temporary directory, on a free loopback port.

    Superuser ``berth``, trust authentication on loopback only; ``url`` names database ``berth``. fsync is off
    (an immediate stop is a crash of the server, not of the machine: the OS still writes what it was given),
    but every commit waits for its WAL write, so a commit a client saw is never lost.
    """

    def __init__(self) -> None:
        self.bin = _postgres_bin()
        self.root = Path(tempfile.mkdtemp(prefix="berth-chaos-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.port = free_port()
        self.url = f"postgresql://berth@127.0.0.1:{self.port}/berth"
        # PostgreSQL refuses to run as root: run it as the postgres user, which must own the directory.
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            self._as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres", "postgres")
            os.chmod(self.root, 0o700)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._as_user, *args], capture_output=True, text=True, check=check, timeout=60, cwd=self.root
        )

    def init(self) -> None:
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "berth", "--auth=trust", "-E", "UTF8", "--no-sync"
        )
        self.start()

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        result = self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log_path),
            "-o",
            options,
            "-w",
            "start",
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"private PostgreSQL did not start: {result.stdout}{result.stderr}\n{self.log()}")

    def stop(self, mode: str = "immediate") -> None:
        """``immediate`` is a crash as far as clients can tell (every backend ends at once, no checkpoint)."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def answers(self) -> bool:
        result = self._run(str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), check=False)
        return result.returncode == 0

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    """A redis-server of the test's own on a free loopback port, persisting every write (AOF, fsync always)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="berth-chaos-redis-"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        command = [
            shutil.which("redis-server") or "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.root),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--daemonize", "no",
        ]  # fmt: skip
        self.process = ManagedProcess("redis", command, dict(os.environ), self.root / "redis.log", self.root)

    def start(self) -> None:
        self.process.start()
        wait_until(self.answers, timeout=15, interval=0.05, message="private redis-server did not answer")

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        self.process.kill()

    def remove(self) -> None:
        self.process.stop(grace=5)
        shutil.rmtree(self.root, ignore_errors=True)
