"""Listener logic: validation against the caller's services, external ports, and traffic stats from
lb-runtime. No HTTP framework here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from functions.load_balancer.certificate_store import CertificateStore
from functions.load_balancer.certificates import checked_listener_certificates
from functions.load_balancer.models import (
    CreateListener,
    InstanceSeries,
    InstanceStats,
    LatencyMs,
    Listener,
    ListenerHealthCheck,
    ListenerPage,
    ListenerRegions,
    ListenerSeries,
    ListenerStats,
    RegionStats,
    TrafficErrors,
    TrafficPoint,
    UpdateListener,
)
from functions.load_balancer.store import ListenerStore, PortTaken, TrafficHistoryStore
from shared.capacity import check_listener_capacity, quota_lock
from shared.config import FunctionSettings
from shared.errors import Conflict, NotFound, ServiceUnavailable, ValidationFailed
from shared.instants import EARLIEST, parse_date_time
from shared.pagination import decode_cursor, page_of, parse_id
from shared.traffic_history import BUCKET_COUNT, LISTENER_TOTAL, RESOLUTIONS, add_buckets, quantile_ms

_CANDIDATES = 8


class PortInUse(Conflict):
    code = "port_taken"


class ListenerPortsExhausted(ServiceUnavailable):
    code = "ports_exhausted"


class TrafficStats(Protocol):
    async def listener_stats(self, listener_id: str) -> dict[str, Any] | None:
        """lb-runtime's figures for one listener; None when it carries no such listener (yet)."""
        ...


def _listener(row: dict[str, Any], settings: FunctionSettings, certificate_ids: list[str] | None = None) -> Listener:
    return Listener(
        id=str(row["id"]),
        service=row["service"],
        port=row["port"],
        address=settings.lb_bind_address,
        protocol=row["protocol"],
        algorithm=row["algorithm"],
        weights=row["weights"] or {},
        health_check=ListenerHealthCheck(**row["health_check"]) if row["health_check"] else None,
        certificate_ids=certificate_ids or [],
        regions=ListenerRegions(**row["regions"]) if row.get("regions") else None,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def _owned(listeners: ListenerStore, owner_id: str, listener_id: str) -> dict[str, Any]:
    row = await listeners.get(owner_id, parse_id(listener_id))
    if row is None:
        raise NotFound(f"No listener {listener_id}.")
    return row


def _check_port(port: int, settings: FunctionSettings) -> None:
    allowed = settings.lb_port_range
    if port not in allowed:
        raise ValidationFailed(
            f"port {port} is outside the listener port range {allowed[0]}-{allowed[-1]}; pick one inside it "
            "or leave port out to get one allocated.",
            details=[{"loc": ["body", "port"], "msg": f"between {allowed[0]} and {allowed[-1]}"}],
        )


async def _check_regions(listeners: ListenerStore, regions: ListenerRegions | None) -> dict[str, Any] | None:
    """The policy to store; ValidationFailed (422) when ``order`` names a region no host belongs to."""
    if regions is None:
        return None
    unknown = sorted(set(regions.order) - await listeners.known_regions())
    if unknown:
        raise ValidationFailed(
            f"regions.order names regions no host belongs to: {', '.join(unknown)}.",
            details=[{"loc": ["body", "regions", "order"], "msg": "unknown region"}],
        )
    return regions.model_dump(exclude_none=True)


async def _check_weights(listeners: ListenerStore, owner_id: str, service: str, weights: dict[str, int]) -> None:
    if not weights:
        return
    members = set(await listeners.service_containers(owner_id, service))
    unknown = sorted(key for key in weights if parse_id(key) not in members)
    if unknown:
        raise ValidationFailed(
            f"weights name containers that are not replicas of your service {service}: {', '.join(unknown)}.",
            details=[{"loc": ["body", "weights"], "msg": "keys must be ids of the service's containers"}],
        )


async def create_listener(
    listeners: ListenerStore,
    certificates: CertificateStore,
    settings: FunctionSettings,
    owner_id: str,
    body: CreateListener,
) -> Listener:
    if not await listeners.service_containers(owner_id, body.service):
        raise NotFound(f"You have no service {body.service}; deploy a container with that service name first.")
    await check_listener_capacity(owner_id)
    certificate_ids = await checked_listener_certificates(certificates, owner_id, body.protocol, body.certificate_ids)
    async with quota_lock(owner_id):  # checked again with the insert, so concurrent creates cannot pass it
        await check_listener_capacity(owner_id)
        created = await _create_listener_row(listeners, settings, owner_id, body)
    if certificate_ids:
        await certificates.set_listener_certificates(created.id, certificate_ids)
    return created.model_copy(update={"certificate_ids": certificate_ids})


async def _create_listener_row(
    listeners: ListenerStore, settings: FunctionSettings, owner_id: str, body: CreateListener
) -> Listener:
    weights = {parse_id(key): value for key, value in (body.weights or {}).items()}
    await _check_weights(listeners, owner_id, body.service, body.weights or {})
    values: dict[str, Any] = {
        "service": body.service,
        "protocol": body.protocol,
        "algorithm": body.algorithm,
        "weights": weights,
        "health_check": body.health_check.model_dump() if body.health_check else None,
        "regions": await _check_regions(listeners, body.regions),
    }
    if body.port is not None:
        _check_port(body.port, settings)
        try:
            return _listener(await listeners.create(owner_id, {**values, "port": body.port}), settings)
        except PortTaken as exc:
            raise PortInUse(f"Port {body.port} is taken by another listener; pick another or leave port out.") from exc
    allowed = settings.lb_port_range
    # Each round offers a few free ports; one taken meanwhile by a concurrent create is skipped.
    for _ in range(len(allowed)):
        candidates = await listeners.free_ports(allowed[0], allowed[-1], _CANDIDATES)
        if not candidates:
            break
        for port in candidates:
            try:
                return _listener(await listeners.create(owner_id, {**values, "port": port}), settings)
            except PortTaken:
                continue
    raise ListenerPortsExhausted(
        f"Every listener port in {allowed[0]}-{allowed[-1]} is taken; delete a listener or ask the operator "
        "for a larger range."
    )


async def get_listener(
    listeners: ListenerStore,
    certificates: CertificateStore,
    settings: FunctionSettings,
    owner_id: str,
    listener_id: str,
) -> Listener:
    row = await _owned(listeners, owner_id, listener_id)
    presented = await certificates.listener_certificates([str(row["id"])])
    return _listener(row, settings, presented.get(str(row["id"])))


async def list_listeners(
    listeners: ListenerStore,
    certificates: CertificateStore,
    settings: FunctionSettings,
    owner_id: str,
    limit: int,
    cursor: str | None,
) -> ListenerPage:
    rows = await listeners.page(owner_id, limit + 1, decode_cursor(cursor) if cursor is not None else None)
    presented = await certificates.listener_certificates([str(row["id"]) for row in rows])
    items, next_cursor = page_of(rows, limit, lambda row: _listener(row, settings, presented.get(str(row["id"]))))
    return ListenerPage(items=items, next_cursor=next_cursor)


async def update_listener(
    listeners: ListenerStore,
    certificates: CertificateStore,
    settings: FunctionSettings,
    owner_id: str,
    listener_id: str,
    body: UpdateListener,
) -> Listener:
    row = await _owned(listeners, owner_id, listener_id)
    given = body.model_fields_set
    current = (await certificates.listener_certificates([str(row["id"])])).get(str(row["id"]), [])
    presented = current
    if "protocol" in given or "certificate_ids" in given:
        protocol = body.protocol if "protocol" in given and body.protocol is not None else row["protocol"]
        wanted = body.certificate_ids if "certificate_ids" in given else (current if protocol == "https" else [])
        presented = await checked_listener_certificates(
            certificates, owner_id, protocol, wanted, body_alone="protocol" in given and "certificate_ids" in given
        )
    changes: dict[str, Any] = {}
    if "port" in given:
        if body.port is None:
            raise ValidationFailed("port cannot be null; give a port in the listener range.")
        _check_port(body.port, settings)
        changes["port"] = body.port
    for field in ("protocol", "algorithm"):
        if field in given:
            if getattr(body, field) is None:
                raise ValidationFailed(f"{field} cannot be null.")
            changes[field] = getattr(body, field)
    if "weights" in given:
        if body.weights is None:
            raise ValidationFailed("weights cannot be null; send {} to clear them.")
        await _check_weights(listeners, owner_id, row["service"], body.weights)
        changes["weights"] = {parse_id(key): value for key, value in body.weights.items()}
    if "health_check" in given:
        changes["health_check"] = body.health_check.model_dump() if body.health_check else None
    if "regions" in given:
        changes["regions"] = await _check_regions(listeners, body.regions)
    updated = row
    if changes:
        try:
            found = await listeners.update(owner_id, str(row["id"]), changes)
        except PortTaken as exc:
            raise PortInUse(f"Port {body.port} is taken by another listener; pick another.") from exc
        if found is None:
            raise NotFound(f"No listener {listener_id}.")
        updated = found
    if presented != current:
        await certificates.set_listener_certificates(str(row["id"]), presented)
    return _listener(updated, settings, presented)


async def delete_listener(listeners: ListenerStore, owner_id: str, listener_id: str) -> None:
    row = await _owned(listeners, owner_id, listener_id)
    await listeners.delete(owner_id, str(row["id"]))


async def listener_stats(
    listeners: ListenerStore, traffic: TrafficStats, owner_id: str, listener_id: str
) -> ListenerStats:
    row = await _owned(listeners, owner_id, listener_id)
    figures = await traffic.listener_stats(str(row["id"]))
    if figures is None:
        # lb-runtime has not bound it yet (it picks up changes within a second): no traffic so far.
        return ListenerStats(
            listener_id=str(row["id"]),
            rps=0.0,
            latency_ms=LatencyMs(p50=None, p95=None, p99=None),
            requests=0,
            errors=0,
            active_connections=0,
            instances=[],
        )
    return ListenerStats(
        listener_id=str(row["id"]),
        rps=float(figures.get("rps", 0.0)),
        latency_ms=LatencyMs(**figures.get("latency_ms", {"p50": None, "p95": None, "p99": None})),
        requests=int(figures.get("requests", 0)),
        errors=int(figures.get("errors", 0)),
        active_connections=int(figures.get("active_connections", 0)),
        instances=[_instance_stats(instance) for instance in figures.get("instances", [])],
        regions={name: RegionStats(**split) for name, split in (figures.get("regions") or {}).items()},
        bytes_in=int(figures.get("bytes_in", 0)),
        bytes_out=int(figures.get("bytes_out", 0)),
    )


def _instance_stats(instance: dict[str, Any]) -> InstanceStats:
    if instance.get("ejected"):
        status = "ejected"  # failed requests lately: no traffic for a while
    elif instance.get("healthy", True):
        status = "healthy"
    else:
        status = "unhealthy"  # failing lb-runtime's active health check
    return InstanceStats(
        id=str(instance["id"]),
        address=str(instance["address"]),
        port=int(instance["port"]),
        status=status,
        requests=int(instance.get("requests", 0)),
        errors=int(instance.get("failures", 0)),
        active_connections=int(instance.get("in_flight", 0)),
        region=instance.get("region"),
        bytes_in=int(instance.get("bytes_in", 0)),
        bytes_out=int(instance.get("bytes_out", 0)),
    )


# ------------------------------------------------------------------------------------------ traffic history

HISTORY_MAX_POINTS = 1000
_HOUR = timedelta(hours=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY = 24 * 3600


def _instant(value: str, name: str) -> datetime:
    """An RFC 3339 date-time (the document's `format: date-time`, exactly as shared.instants reads it), in UTC;
    422 otherwise (a time without its offset too: say Z for UTC)."""
    moment = parse_date_time(value)
    if moment is None:
        raise ValidationFailed(
            f"{name} must be an RFC 3339 date-time with its offset, such as 2026-05-01T12:00:00Z.",
            details=[{"field": name, "message": "an RFC 3339 date-time"}],
        )
    return moment


def history_window(
    start: str | None, end: str | None, step: int | None, now: datetime
) -> tuple[datetime, datetime, int, int]:
    """(from aligned down to the step, to, step, resolution read) for a history request; 422 when unusable.
    Defaults: to now, from an hour before to, a step of 10 s up to an hour's range and 60 s beyond."""
    until = _instant(end, "to") if end is not None else now
    # An hour before to, or the earliest instant there is (a date-time may name year 0001, even 0000).
    since = _instant(start, "from") if start is not None else max(until, EARLIEST + _HOUR) - _HOUR
    if since >= until:
        raise ValidationFailed("from must be before to.")
    span = (until - since).total_seconds()
    if span > RESOLUTIONS[60]:
        raise ValidationFailed("The range may cover at most 30 days (the history kept).")
    if step is None:
        step = 10 if span <= 3600 else 60 * max(1, int(span // (60 * HISTORY_MAX_POINTS)) + 1)
    if step % 10:
        raise ValidationFailed("step must be a multiple of 10 seconds.")
    resolution = 60 if step % 60 == 0 else 10
    if resolution == 10 and (now - since).total_seconds() > RESOLUTIONS[10]:
        raise ValidationFailed("10 s history reaches back one day; ask for a step that is a multiple of 60.")
    try:
        aligned = since - (since - _EPOCH) % timedelta(seconds=step)
    except OverflowError:  # the step holding year 0001's first instant starts before it: the series starts there
        aligned = EARLIEST
    if (until - aligned).total_seconds() / step > HISTORY_MAX_POINTS:
        raise ValidationFailed(f"The range holds more than {HISTORY_MAX_POINTS} steps; ask for a larger step.")
    return aligned, until, step, resolution


def _point(ts: datetime, step: int, rows: list[dict[str, Any]]) -> TrafficPoint:
    buckets = [0] * BUCKET_COUNT
    requests = connect = status_4xx = status_5xx = connections = bytes_in = bytes_out = 0
    for row in rows:
        requests += row["requests"]
        connect += row["errors_connect"]
        status_4xx += row["responses_4xx"]
        status_5xx += row["responses_5xx"]
        connections = max(connections, row["open_connections"])
        bytes_in += row["bytes_in"]
        bytes_out += row["bytes_out"]
        buckets = add_buckets(buckets, list(row["latency_buckets"]))
    return TrafficPoint(
        ts=ts,
        requests=requests,
        rps=round(requests / step, 3),
        errors=TrafficErrors(connect=connect, status_4xx=status_4xx, status_5xx=status_5xx),
        error_rate=round((connect + status_5xx) / requests, 4) if requests else None,
        latency_ms=LatencyMs(
            p50=quantile_ms(buckets, 0.50), p95=quantile_ms(buckets, 0.95), p99=quantile_ms(buckets, 0.99)
        ),
        open_connections=connections,
        bytes_in=bytes_in,
        bytes_out=bytes_out,
    )


def _series(rows: list[dict[str, Any]], start: datetime, end: datetime, step: int) -> list[TrafficPoint]:
    slots: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        slots.setdefault(int((row["ts"] - start).total_seconds() // step), []).append(row)
    count = int(-(-(end - start).total_seconds() // step))
    return [_point(start + timedelta(seconds=index * step), step, slots.get(index, [])) for index in range(count)]


async def listener_history(
    listeners: ListenerStore,
    history: TrafficHistoryStore,
    owner_id: str,
    listener_id: str,
    start: str | None,
    end: str | None,
    step: int | None,
) -> ListenerSeries:
    row = await _owned(listeners, owner_id, listener_id)
    since, until, step, resolution = history_window(start, end, step, datetime.now(UTC))
    samples = await history.samples(str(row["id"]), resolution, since, until)
    by_instance: dict[str, list[dict[str, Any]]] = {}
    for sample in samples:
        by_instance.setdefault(sample["instance"], []).append(sample)
    return ListenerSeries(
        listener_id=str(row["id"]),
        step=step,
        points=_series(by_instance.pop(LISTENER_TOTAL, []), since, until, step),
        instances=[
            InstanceSeries(id=instance, points=_series(rows, since, until, step))
            for instance, rows in sorted(by_instance.items())
        ],
        **{"from": since, "to": until},
    )
