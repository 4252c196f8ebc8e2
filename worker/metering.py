"""Metering: turns what happened into usage records, exactly once by construction.

Time is cut into windows of ``metering_window_seconds`` (aligned to the epoch; a divisor of an hour). A window
[start, end) is metered once ``metering_grace_seconds`` have passed since its end, from data that carries its
own time, so a sample that arrives late but within the grace lands in its own window:

- per container, replica-seconds and memory GiB-seconds (memory limit x time running) from its lifecycle
  events (``container_events``, written by a trigger on every status change: start, stop, loss), never by
  polling; CPU-seconds from the deltas of the cgroup CPU counter, and egress bytes from the deltas of the
  transmit counter, in the stats samples (a counter that went down was reset: the new value is the delta),
  less the bytes lb-runtime received from the container in the window (its answers through listeners, from
  the instance rows of the traffic history, summed over listeners), floored at zero per window: a byte that
  leaves the platform through a listener is billed once, as the listener's egress. The transmit counter
  counts frames, so the IP/TCP (and Ethernet) headers of those answers, the container's ACKs and lb-runtime's
  health checks stay container egress; so does everything else it sends (to the internet, to other
  containers, to clients on its own published port);
- per image, stored GiB-hours from its upload size and how long it existed in the window;
- per listener, the requests lb-runtime served through it and the bytes it wrote to the listener's clients
  (egress) and received from them (ingress), from the listener's own 10 s traffic history rows
  (``traffic_samples``, instance '', never its per-instance rows, which break the same requests down and
  count bytes on the instances' side);
  a row belongs to the window holding its start, and it is complete once its 10 s are over (the recorder
  writes only the interval it is in), so a window is whole after its grace like the others.

Each record's id is derived from (tenant, subject, meter, window). ``MeteringStore.write`` inserts records with
``ON CONFLICT DO NOTHING`` and grows the hourly rollup only for a record it inserted, both in one transaction.
So metering a window again (another worker, a retry, a crash after the write and before the cursor moved)
writes nothing, and a sample stored twice (same container and time) is one row. The cursor only saves work.

Limits: a sample stored after its window was metered (later than the grace) is not counted in that window;
a counter reset that leaves the counter above its previous value is taken for growth. A container's transmit
counter and lb-runtime's bytes received from it are observed at different moments (the stats sample, the
recorder's round), so answers sent near a window's end may be taken off the neighbouring window instead:
within a steady stream the shift evens out, but at the edge of a burst the floor can stop it from evening
out, and up to a recording interval (plus a stats interval) of the container's answers is then billed on both
meters, or comes off its other egress of the next window. Listener traffic is only as complete as its history:
a gap in recording (lb-runtime unreachable) is traffic not metered (and answers not taken off container
egress), a listener deleted before its window is metered takes its history with it, and 10 s rows are kept a
day, so a worker down for longer meters the older windows without their traffic.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from shared.billing.invoice_store import finalize_period
from shared.billing.invoices import period_containing
from shared.billing.meters import GIB, MeterName
from shared.db import Database
from shared.errors import DependencyError
from shared.observability import get_logger, log_event
from worker.metering_store import RUNNING_STATUSES, MeteringStore, UsageRecord
from worker.periodic import PeriodicTask
from worker.settings import WorkerSettings

logger = get_logger("worker")

CURSOR = "usage"
# At most this many windows per round, so a worker that was down for long catches up in steps.
MAX_WINDOWS_PER_ROUND = 240
NANOSECONDS = Decimal(1_000_000_000)


def seconds_of(delta: timedelta) -> Decimal:
    """A duration as exact decimal seconds (to the microsecond)."""
    return Decimal(delta.days * 86400 + delta.seconds) + Decimal(delta.microseconds) / Decimal(1_000_000)


def running_time(
    status_before: str | None, times: Sequence[datetime], statuses: Sequence[str], start: datetime, end: datetime
) -> Decimal:
    """Seconds of [start, end) spent in a running status, given the status at ``start`` and the changes in
    the window (in order)."""
    total = Decimal(0)
    since = start if status_before in RUNNING_STATUSES else None
    for when, status in zip(times, statuses, strict=True):
        if status in RUNNING_STATUSES:
            if since is None:
                since = when
        elif since is not None:
            total += seconds_of(when - since)
            since = None
    if since is not None:
        total += seconds_of(end - since)
    return total


def counter_deltas(samples: Sequence[dict[str, Any]], field: str) -> dict[str, int]:
    """Per container, the growth of a cumulative counter over the window's samples (rows ordered by container
    and time; a ``baseline`` row is the last sample before the window and only a starting point)."""
    growth: dict[str, int] = {}
    previous: dict[str, int] = {}
    for row in samples:
        container_id, value = str(row["container_id"]), row[field]
        if value is None:
            continue
        value = int(value)
        if not row["baseline"]:
            before = previous.get(container_id)
            delta = value if before is None or value < before else value - before
            growth[container_id] = growth.get(container_id, 0) + delta
        previous[container_id] = value
    return growth


def container_egress(transmitted: int, proxied: int) -> int:
    """A container's billed egress in a window: what it transmitted less its answers to lb-runtime (billed to
    the listener as its clients' bytes), never below zero."""
    return max(0, transmitted - proxied)


def window_bounds(moment: datetime, window_seconds: int) -> datetime:
    """The start of the window that holds ``moment``."""
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % window_seconds, UTC)


async def meter_window(store: MeteringStore, start: datetime, end: datetime) -> list[UsageRecord]:
    """Every usage record of [start, end) (quantities above zero only)."""
    records: list[UsageRecord] = []

    def add(owner: Any, kind: str, subject: Any, service: str | None, meter: str, quantity: Decimal) -> None:
        if quantity > 0:
            records.append(UsageRecord(str(owner), kind, str(subject), service, meter, start, end, quantity))

    for row in await store.lifecycles(start, end):
        seconds = running_time(row["status_before"], row["event_times"], row["event_statuses"], start, end)
        add(row["owner_id"], "container", row["id"], row["service"], MeterName.REPLICA_SECONDS, seconds)
        gib = Decimal(row["memory_mb"]) / Decimal(1024)
        add(row["owner_id"], "container", row["id"], row["service"], MeterName.MEMORY_GIB_SECONDS, seconds * gib)

    samples = await store.counter_samples(start, end)
    owners = {str(row["container_id"]): (row["owner_id"], row["service"]) for row in samples}
    for container_id, nanoseconds in counter_deltas(samples, "cpu_usage_ns").items():
        owner, service = owners[container_id]
        add(owner, "container", container_id, service, MeterName.CPU_SECONDS, Decimal(nanoseconds) / NANOSECONDS)
    proxied = await store.proxied_answers(start, end)
    for container_id, sent in counter_deltas(samples, "net_tx_bytes").items():
        owner, service = owners[container_id]
        egress = container_egress(sent, proxied.get(container_id, 0))
        add(owner, "container", container_id, service, MeterName.EGRESS_BYTES, Decimal(egress))

    for row in await store.stored_images(start, end):
        stored = seconds_of(end - max(start, row["created_at"]))
        gib_hours = Decimal(row["upload_bytes"]) / GIB * stored / Decimal(3600)
        add(row["owner_id"], "image", row["id"], None, MeterName.IMAGE_STORAGE_GIB_HOURS, gib_hours)

    for row in await store.listener_traffic(start, end):
        for meter, column in (
            (MeterName.LISTENER_REQUESTS, "requests"),
            (MeterName.LISTENER_EGRESS_BYTES, "bytes_out"),
            (MeterName.LISTENER_INGRESS_BYTES, "bytes_in"),
        ):
            add(row["owner_id"], "listener", row["id"], row["service"], meter, Decimal(row[column]))
    return records


async def meter_round(
    store: MeteringStore,
    settings: WorkerSettings,
    now: datetime | None = None,
    after_write: Callable[[datetime, datetime], Awaitable[None]] | None = None,
) -> int:
    """Meter every window that ended at least the grace ago and is past the cursor; returns how many
    records were inserted. ``after_write`` (tests) runs between a window's write and the cursor's move."""
    window = settings.metering_window_seconds
    now = now or datetime.now(UTC)
    last_end = window_bounds(now - timedelta(seconds=settings.metering_grace_seconds), window)
    start = await store.cursor(CURSOR)
    if start is None:
        earliest = await store.earliest_activity()
        start = window_bounds(earliest, window) if earliest is not None else last_end
    inserted = 0
    for _ in range(MAX_WINDOWS_PER_ROUND):
        end = start + timedelta(seconds=window)
        if end > last_end:
            break
        records = await meter_window(store, start, end)
        written = await store.write(records)
        inserted += written
        if after_write is not None:
            await after_write(start, end)
        await store.advance(CURSOR, end)
        if records:
            log_event(logger, "usage metered", window_start=start.isoformat(), records=len(records), new=written)
        start = end
    return inserted


async def fleet_round(store: MeteringStore, settings: WorkerSettings) -> int:
    """``meter_round`` unless another process meters now: every worker of the fleet runs the metering task,
    and the rounds of one moment would all meter the same windows (idempotent, but the work done N times)."""
    async with store.round_lock() as claimed:
        return await meter_round(store, settings) if claimed else 0


def metering_task(store: MeteringStore, settings: WorkerSettings) -> PeriodicTask:
    """Metering every ``metering_interval_seconds`` (by one worker of the fleet at a time); a failed round is
    retried by the next one."""
    return PeriodicTask(
        "metering",
        settings.metering_interval_seconds,
        functools.partial(fleet_round, store, settings),
        retry_on=(DependencyError,),
    )


async def finalize_round(database: Database, store: MeteringStore, settings: WorkerSettings) -> list[str]:
    """Finalize the previous billing period's invoices once it is metered to its end (and bill usage that
    reached it after finalization by adjustments, on later rounds)."""
    current = period_containing(datetime.now(UTC))
    previous = period_containing(current.start - timedelta(microseconds=1))
    metered_until = await store.cursor(CURSOR)
    if metered_until is None or metered_until < previous.end:
        return []
    written = await finalize_period(database, previous)
    if written:
        log_event(logger, "invoices finalized", period=previous.label, invoices=len(written))
    return written


def invoicing_task(database: Database, store: MeteringStore, settings: WorkerSettings) -> PeriodicTask:
    """Finalization of ended billing periods every ``billing_finalize_interval_seconds``."""
    return PeriodicTask(
        "invoice finalization",
        settings.billing_finalize_interval_seconds,
        functools.partial(finalize_round, database, store, settings),
        retry_on=(DependencyError,),
    )
