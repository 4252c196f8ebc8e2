"""The processes ``berth local up`` starts: how they are named, spawned, recorded, recognised and stopped.

Each managed process runs a ``berth`` subcommand (``SUBCOMMANDS``, the one place that names it), in a
session and process group of its own so it outlives the CLI, logging to the state dir, its PID in a pidfile.
A PID is trusted only while ``/proc/<pid>/cmdline`` still shows that subcommand, so a recycled PID is never
signalled, and a stale pidfile is removed when it is read. Stopping is SIGTERM (the process drains), then
SIGKILL to the whole group after the grace period; a zombie nobody reaped counts as gone. One ``berth local``
command at a time holds the state dir's lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from cli.local_stack.settings import LocalStackSettings
from shared.config import PROJECT_ROOT

GATEWAY = "gateway"
LOCAL_AWS = "local-aws"
WORKER = "worker"
LB_RUNTIME = "lb-runtime"
# What `up` may start, in the order `down` stops it (the worker first: it drains its jobs).
MANAGED = (WORKER, LB_RUNTIME, GATEWAY, LOCAL_AWS)

# The module that is the `berth` command, and the subcommand each managed process runs: `up` starts it with
# these words and `down` recognises it in /proc/<pid>/cmdline by the same words.
BERTH_MODULE = "cli.main"
SUBCOMMANDS: dict[str, tuple[str, ...]] = {
    GATEWAY: ("gateway",),
    LOCAL_AWS: ("local", "aws"),
    WORKER: ("worker",),
    LB_RUNTIME: ("lb",),
}


def berth_command(name: str) -> list[str]:
    """The command line that runs managed process ``name`` with this interpreter."""
    return [sys.executable, "-m", BERTH_MODULE, *SUBCOMMANDS[name]]


def process_alive(pid: int) -> bool:
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
    marker = [BERTH_MODULE, *SUBCOMMANDS[name]]
    return any(words[i : i + len(marker)] == marker for i in range(len(words)))


def _group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid`` (the group ``up`` gave each process it started)."""
    proc = Path("/proc")
    if not proc.exists():
        return [pgid] if process_alive(pgid) else []
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


def stop_process(pid: int, grace_seconds: float) -> str:
    """SIGTERM so the process drains, SIGKILL to its whole group after the grace period; returns the outcome."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not _wait_for_exit(lambda: [pid] if process_alive(pid) else [], grace_seconds):
        _signal_group(pid, signal.SIGKILL)
        _wait_for_exit(lambda: [pid] if process_alive(pid) else [], 5)
        return "killed (did not stop within the grace period)"
    # Children that outlived their parent (function workers, say) belong to the same group.
    if _group_members(pid):
        _signal_group(pid, signal.SIGTERM)
        if not _wait_for_exit(lambda: _group_members(pid), grace_seconds):
            _signal_group(pid, signal.SIGKILL)
    return "stopped"


def recorded_pid(settings: LocalStackSettings, name: str) -> int | None:
    """The PID ``up`` recorded for ``name`` when that process still runs; a stale pidfile is removed."""
    path = settings.pidfile(name)
    try:
        pid = int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        path.unlink(missing_ok=True)
        return None
    if process_alive(pid) and _is_berth_process(pid, name):
        return pid
    path.unlink(missing_ok=True)
    return None


def spawn_detached(settings: LocalStackSettings, name: str, command: list[str], env: dict[str, str]) -> int:
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


def log_tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` of a process's log, indented for an error message."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])


@contextlib.contextmanager
def state_lock(settings: LocalStackSettings) -> Iterator[None]:
    """One ``berth local`` command at a time per state dir, so two ``up`` never start two gateways."""
    settings.local_state_dir.mkdir(parents=True, exist_ok=True)
    with (settings.local_state_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
