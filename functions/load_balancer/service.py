"""Listener logic: validation against the caller's services, external ports, and traffic stats from
lb-runtime. No HTTP framework here."""

from __future__ import annotations

from typing import Any, Protocol

from functions.load_balancer.models import (
    CreateListener,
    InstanceStats,
    LatencyMs,
    Listener,
    ListenerHealthCheck,
    ListenerPage,
    ListenerStats,
    UpdateListener,
)
from functions.load_balancer.store import ListenerStore, PortTaken
from shared.config import FunctionSettings
from shared.errors import Conflict, NotFound, ServiceUnavailable, ValidationFailed
from shared.pagination import decode_cursor, encode_cursor, parse_id

_CANDIDATES = 8


class PortInUse(Conflict):
    code = "port_taken"


class ListenerPortsExhausted(ServiceUnavailable):
    code = "ports_exhausted"


class TrafficStats(Protocol):
    async def listener_stats(self, listener_id: str) -> dict[str, Any] | None:
        """lb-runtime's figures for one listener; None when it carries no such listener (yet)."""
        ...


def _listener(row: dict[str, Any], settings: FunctionSettings) -> Listener:
    return Listener(
        id=str(row["id"]),
        service=row["service"],
        port=row["port"],
        address=settings.lb_bind_address,
        protocol=row["protocol"],
        algorithm=row["algorithm"],
        weights=row["weights"] or {},
        health_check=ListenerHealthCheck(**row["health_check"]) if row["health_check"] else None,
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
    listeners: ListenerStore, settings: FunctionSettings, owner_id: str, body: CreateListener
) -> Listener:
    if not await listeners.service_containers(owner_id, body.service):
        raise NotFound(f"You have no service {body.service}; deploy a container with that service name first.")
    weights = {parse_id(key): value for key, value in (body.weights or {}).items()}
    await _check_weights(listeners, owner_id, body.service, body.weights or {})
    values: dict[str, Any] = {
        "service": body.service,
        "protocol": body.protocol,
        "algorithm": body.algorithm,
        "weights": weights,
        "health_check": body.health_check.model_dump() if body.health_check else None,
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
    listeners: ListenerStore, settings: FunctionSettings, owner_id: str, listener_id: str
) -> Listener:
    return _listener(await _owned(listeners, owner_id, listener_id), settings)


async def list_listeners(
    listeners: ListenerStore, settings: FunctionSettings, owner_id: str, limit: int, cursor: str | None
) -> ListenerPage:
    rows = await listeners.page(owner_id, limit + 1, decode_cursor(cursor) if cursor else None)
    more = len(rows) > limit
    rows = rows[:limit]
    return ListenerPage(
        items=[_listener(row, settings) for row in rows],
        next_cursor=encode_cursor(rows[-1]) if more and rows else None,
    )


async def update_listener(
    listeners: ListenerStore, settings: FunctionSettings, owner_id: str, listener_id: str, body: UpdateListener
) -> Listener:
    row = await _owned(listeners, owner_id, listener_id)
    given = body.model_fields_set
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
        await _check_weights(listeners, owner_id, row["service"], body.weights or {})
        changes["weights"] = {parse_id(key): value for key, value in (body.weights or {}).items()}
    if "health_check" in given:
        changes["health_check"] = body.health_check.model_dump() if body.health_check else None
    if not changes:
        return _listener(row, settings)
    try:
        updated = await listeners.update(owner_id, str(row["id"]), changes)
    except PortTaken as exc:
        raise PortInUse(f"Port {body.port} is taken by another listener; pick another.") from exc
    if updated is None:
        raise NotFound(f"No listener {listener_id}.")
    return _listener(updated, settings)


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
    )
