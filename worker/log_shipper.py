"""Container log shipping: every ``worker_log_ship_interval_seconds`` the worker copies its host's containers'
new log lines (Docker's timestamps, stdout and stderr told apart) into container_logs, so logs stay readable
from anywhere, and after the container or its host is gone. Lines older than ``log_retention_hours`` are
deleted, at most once a minute.

Where a container got to is the newest line stored for it: a restarted worker continues from there, and the
store skips anything at or before it, so nothing is stored twice. PostgreSQL keeps microseconds, so the
cursor is a microsecond and a batch never ends inside one.

Docker stamps a line when it reads it, and the stdout and stderr copiers run apart, so a line can reach the
log file a moment after a newer line of the other stream. A running container's lines are therefore shipped
once they are ``SETTLE_SECONDS`` old; a stopped container's (and a final shipment's) all at once. Docker and
the worker share the host's clock.

A round ships at most ``MAX_LINES_PER_ROUND`` lines (and about ``MAX_BYTES_PER_ROUND``) per container; the
rest waits for the next round. A container that stopped is shipped until nothing is left, then left alone
until its record changes. A container gone from Docker is skipped; any other failure is logged and the next
round tries again.
"""

from __future__ import annotations

import asyncio
import codecs
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.errors import DependencyError
from shared.observability import get_logger, log_event
from worker.container_runtime import CONTAINER_ID_LABEL, ContainerRuntime, LogStream, RuntimeFinal, RuntimeRetryable
from worker.log_store import LogLine, LogStore, to_microseconds
from worker.periodic import PeriodicTask
from worker.settings import WorkerSettings

logger = get_logger("worker")

SHIP_CONCURRENCY = 4
MAX_LINES_PER_ROUND = 5000
MAX_BYTES_PER_ROUND = 8 * 1024 * 1024
# Docker splits longer lines into 16 KiB pieces; a stored line keeps the first.
MAX_LINE_BYTES = 16 * 1024
SETTLE_SECONDS = 1.0
PRUNE_INTERVAL_SECONDS = 60.0
# A quiet container is read with `tail`, which Docker answers from the end of its log file; only when every
# one of these entries is new does the shipper read from the cursor onwards (which scans the file).
PROBE_ENTRIES = 200
# A final shipment (before a container is removed) drains up to this many rounds' worth of lines.
MAX_FINAL_BATCHES = 20
DOCKER_LOG_TIMEOUT_SECONDS = 60.0
# Docker states whose containers can still write lines.
ACTIVE_STATES = frozenset({"running", "restarting", "paused"})

_TIMESTAMP = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")


@dataclass(frozen=True)
class Batch:
    """New lines of one container, oldest first; ``complete`` when nothing older than the read's horizon
    was left behind (no cap was hit)."""

    lines: list[LogLine]
    complete: bool


def _docker_ns(stamp: bytes, seconds_cache: dict[bytes, int]) -> int | None:
    """Docker's RFC 3339 time (nanoseconds, ``docker logs --timestamps``) as nanoseconds since the epoch."""
    match = _TIMESTAMP.match(stamp)
    if match is None:
        return None
    whole, fraction, zone = match.groups()
    key = whole + zone
    seconds = seconds_cache.get(key)
    if seconds is None:
        offset = "+00:00" if zone == b"Z" else zone.decode()
        parsed = datetime.fromisoformat(whole.decode() + offset)
        seconds = seconds_cache[key] = int(parsed.timestamp())
    return seconds * 1_000_000_000 + int((fraction or b"0").ljust(9, b"0"))


def _line_text(raw: bytes) -> str:
    """The stored text of a line: at most ``MAX_LINE_BYTES`` of UTF-8 (a character cut in two is dropped),
    without NUL characters (PostgreSQL text cannot hold them)."""
    if len(raw) > MAX_LINE_BYTES:
        text = codecs.getincrementaldecoder("utf-8")("replace").decode(raw[:MAX_LINE_BYTES], final=False)
    else:
        text = raw.decode("utf-8", errors="replace")
    return text.replace("\x00", "\ufffd")


def _lines_of(chunks: Iterable[bytes]) -> Iterable[bytes]:
    """Split Docker's log frames into lines; a line without a final newline (the last output of a stopped
    container, or a long line whose last piece is not written yet) ends the stream."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        yield from complete
    if buffer:
        yield buffer


class _StreamRead:
    """The new lines of one stream: after ``after_us``, up to ``horizon_us``, at most ``max_lines`` (and about
    ``max_bytes``), never ending inside a microsecond."""

    def __init__(self, stream: LogStream, after_us: int, horizon_us: int, max_lines: int, max_bytes: int) -> None:
        self.stream = stream
        self.after_us = after_us
        self.horizon_us = horizon_us
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self.lines: list[LogLine] = []
        # The microsecond up to which this stream's lines are all here (the horizon unless a cap was hit).
        self.complete_to_us = horizon_us

    def consume(self, chunks: Iterable[bytes]) -> None:
        self.lines, self.complete_to_us = [], self.horizon_us
        seconds_cache: dict[bytes, int] = {}
        size = 0
        cut_at_us: int | None = None
        for raw in _lines_of(chunks):
            stamp, _, text = raw.partition(b" ")
            ts_ns = _docker_ns(stamp, seconds_cache)
            if ts_ns is None:
                continue
            ts_us = ts_ns // 1000
            if ts_us <= self.after_us:
                continue
            if ts_us > self.horizon_us or (cut_at_us is not None and ts_us != cut_at_us):
                break
            line = LogLine(ts_ns, self.stream, _line_text(text))
            self.lines.append(line)
            size += len(line.text)
            if cut_at_us is None and (len(self.lines) >= self.max_lines or size >= self.max_bytes):
                cut_at_us = ts_us  # full: finish this microsecond, then stop
        if cut_at_us is not None:
            self.complete_to_us = cut_at_us


async def _read_batch(
    runtime: ContainerRuntime, docker_id: str, after_us: int, horizon_us: int, max_lines: int, max_bytes: int
) -> Batch | None:
    """Read one container's new lines. None when Docker has no such container."""
    since = after_us / 1_000_000 - 0.001 if after_us > 0 else None  # Docker's `since` is inclusive
    reads = []
    # One request per stream, so each line is known to come from that stream.
    streams: tuple[LogStream, ...] = ("stdout", "stderr")
    for stream in streams:
        read = _StreamRead(stream, after_us, horizon_us, max_lines, max_bytes)
        entries: list[bytes] = []
        if not await runtime.read_logs(docker_id, stream, entries.extend, tail=PROBE_ENTRIES, since=since):
            return None
        if len(entries) < PROBE_ENTRIES:
            read.consume(entries)
        # Every entry of the tail was new: there may be more between the cursor and the tail (a capped read
        # stops at its cap, without reading the rest of the log).
        elif not await runtime.read_logs(docker_id, stream, read.consume, since=since):
            return None
        reads.append(read)

    # A stream cut by the cap is complete only up to its cut: the other stream's later lines wait too.
    complete_to_us = min(read.complete_to_us for read in reads)
    merged = sorted(
        (line for read in reads for line in read.lines if line.ts_us <= complete_to_us), key=lambda line: line.ts_ns
    )
    complete = complete_to_us == horizon_us
    if len(merged) > max_lines:
        last_us = merged[max_lines - 1].ts_us
        merged = [line for line in merged if line.ts_us <= last_us]
        complete = False
    return Batch(merged, complete)


async def _read_new_lines(
    runtime: ContainerRuntime,
    docker_id: str,
    after_us: int,
    horizon_us: int,
    max_lines: int = MAX_LINES_PER_ROUND,
    max_bytes: int = MAX_BYTES_PER_ROUND,
) -> Batch | None:
    try:
        return await asyncio.wait_for(
            _read_batch(runtime, docker_id, after_us, horizon_us, max_lines, max_bytes), DOCKER_LOG_TIMEOUT_SECONDS
        )
    except TimeoutError as exc:
        raise RuntimeRetryable(
            f"Docker did not answer the container's logs within {DOCKER_LOG_TIMEOUT_SECONDS:.0f}s"
        ) from exc


def _now_us() -> int:
    return to_microseconds(datetime.now(UTC))


async def ship_container(store: LogStore, runtime: ContainerRuntime, container_id: str, docker_id: str) -> int:
    """Ship everything new of one container now (before it is removed, so its last lines are kept), without
    waiting for lines to settle; returns how many lines were stored. A container gone from Docker ships
    nothing; Docker and database failures are raised."""
    shipped = 0
    for _ in range(MAX_FINAL_BATCHES):
        last = await store.last_shipped(container_id)
        batch = await _read_new_lines(runtime, docker_id, to_microseconds(last) if last is not None else 0, _now_us())
        if batch is None:
            return shipped
        shipped += await store.insert_lines(container_id, batch.lines)
        if batch.complete:
            break
    return shipped


def _find_state(states: dict[str, str], docker_id: str) -> str | None:
    if docker_id in states:
        return states[docker_id]
    # A recorded short id still names the container Docker lists by its full id.
    return next((state for full_id, state in states.items() if full_id.startswith(docker_id)), None)


class LogShipper:
    """The periodic shipper of one host: remembers which stopped containers are drained, and when it last
    pruned. A fresh one (a restarted worker) continues from what the database holds."""

    def __init__(
        self,
        store: LogStore,
        runtime: ContainerRuntime,
        settings: WorkerSettings,
        *,
        max_lines: int = MAX_LINES_PER_ROUND,
        settle_seconds: float = SETTLE_SECONDS,
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.settings = settings
        self.max_lines = max_lines
        self.settle_us = int(settle_seconds * 1_000_000)
        # container id -> (docker id, record version) of stopped containers with nothing left to ship.
        self._drained: dict[str, tuple[Any, ...]] = {}
        self._pruned_at: float | None = None

    async def ship_round(self) -> int:
        """Ship what is new of this host's containers and prune when due; returns how many lines were stored."""
        await self._prune_when_due()
        rows = await self.store.shippable_on_host(self.settings.host_id)
        if not rows:
            self._drained.clear()
            return 0
        listed = await self.runtime.list_labelled_containers(CONTAINER_ID_LABEL)
        states = {item["id"]: str(item.get("status") or "") for item in listed}
        limit = asyncio.Semaphore(SHIP_CONCURRENCY)
        counts = await asyncio.gather(*(self._ship_one(limit, row, states) for row in rows))
        known = {str(row["id"]) for row in rows}
        for container_id in list(self._drained):
            if container_id not in known:
                del self._drained[container_id]
        return sum(counts)

    async def _ship_one(self, limit: asyncio.Semaphore, row: dict[str, Any], states: dict[str, str]) -> int:
        container_id, docker_id = str(row["id"]), str(row["docker_id"])
        state = _find_state(states, docker_id)
        if state is None:
            self._drained.pop(container_id, None)
            return 0  # gone from Docker: nothing to read; reconciling notices a lost container
        version = (docker_id, row["updated_at"], row["restart_count"])
        active = state in ACTIVE_STATES
        if active:
            self._drained.pop(container_id, None)
        elif self._drained.get(container_id) == version:
            return 0
        floor_us = _now_us() - int(self.settings.log_retention_hours * 3600 * 1_000_000)
        after_us = max(to_microseconds(row["last_ts"]) if row["last_ts"] is not None else 0, floor_us)
        horizon_us = _now_us() - (self.settle_us if active else 0)
        async with limit:
            try:
                batch = await _read_new_lines(self.runtime, docker_id, after_us, horizon_us, self.max_lines)
                if batch is None:
                    return 0
                inserted = await self.store.insert_lines(container_id, batch.lines)
            except (RuntimeRetryable, RuntimeFinal, DependencyError) as exc:
                log_event(logger, "log shipping failed; will retry", container_id=container_id, error=str(exc))
                return 0
            except Exception:
                logger.exception("log shipping crashed; will retry", extra={"container_id": container_id})
                return 0
        if not active and batch.complete:
            self._drained[container_id] = version
        return inserted

    async def _prune_when_due(self) -> None:
        now = time.monotonic()
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_INTERVAL_SECONDS:
            return
        try:
            deleted = await self.store.prune(self.settings.log_retention_hours)
        except DependencyError as exc:
            log_event(logger, "log retention failed; will retry", error=str(exc))
            return
        self._pruned_at = now
        if deleted:
            log_event(logger, "old container log lines deleted", deleted=deleted)


def log_shipper_task(store: LogStore, runtime: ContainerRuntime, settings: WorkerSettings) -> PeriodicTask:
    """Shipping every ``worker_log_ship_interval_seconds``; failures wait for the next round."""
    return PeriodicTask(
        "log shipping round",
        settings.worker_log_ship_interval_seconds,
        LogShipper(store, runtime, settings).ship_round,
        retry_on=(DependencyError, RuntimeRetryable, RuntimeFinal),
    )
