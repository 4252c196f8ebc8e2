"""Service logic: declared replicas of one configuration, changed by numbered, immutable releases. No HTTP here.

This function only records what the tenant wants: a service row (replicas, update policy, the release its
replicas converge on) and releases. The host workers' rollout driver (worker/rollouts.py) does the rolling,
in persisted steps, and writes each release's outcome; a deploy answers 202 with the release pending.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from functions.containers.models import HealthCheck, HealthCheckRequest, PortRequest
from functions.services.models import (
    CreateService,
    DeleteService,
    DeployService,
    RegionReplicas,
    Release,
    ReleasePage,
    ReleaseReplicas,
    RollbackService,
    Service,
    ServicePage,
    ServicePort,
    ServiceRegion,
    UpdatePolicy,
    UpdateService,
    _normalise_health_check,
)
from functions.services.store import ServiceChange, ServiceStore
from shared.capacity import check_service_capacity, plan_max_replicas, quota_lock
from shared.config import FunctionSettings
from shared.errors import ConfirmationMismatch, Conflict, NotFound, QuotaExceeded, ValidationFailed
from shared.jobs import HostJobQueues, Job, JobKind
from shared.pagination import decode_cursor, decode_sequence_cursor, encode_sequence_cursor, page_of, parse_id
from shared.secrets import seal_env

ROLLING = ("pending", "rolling")


def _service(row: dict[str, Any]) -> Service:
    config = row["config"]
    by_release = [ReleaseReplicas(**entry) for entry in row["by_release"]]
    return Service(
        id=str(row["id"]),
        name=row["name"],
        dns_name=f"{row['name']}.internal",
        replicas=row["replicas"],
        running_replicas=sum(entry.running for entry in by_release),
        replicas_by_release=by_release,
        release=row["release_number"],
        release_status=row["release_status"],
        image_id=str(row["image_id"]),
        command=config["command"],
        env_names=sorted(config["env"]),
        secret_env_names=sorted(row["secret_env_names"] or []),
        ports=[ServicePort(**port) for port in config["ports"]],
        cpu=float(config["cpu"]),
        memory_mb=config["memory_mb"],
        restart_policy=config["restart_policy"],
        health_check=HealthCheck.model_validate(config["health_check"]) if config["health_check"] else None,
        update_policy=UpdatePolicy.model_validate(row["update_policy"]),
        regions=[ServiceRegion.model_validate(region) for region in config.get("regions") or []],
        replicas_by_region=[RegionReplicas(**entry) for entry in row.get("by_region") or []],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _release(row: dict[str, Any]) -> Release:
    return Release(
        id=str(row["id"]),
        number=row["number"],
        image_id=str(row["image_id"]),
        config_digest=row["config_digest"],
        status=row["status"],
        reason=row["reason"],
        created_by=str(row["created_by"]) if row["created_by"] else None,
        created_at=row["created_at"],
        finished_at=row["finished_at"],
    )


def _digest(image_id: str, config: dict[str, Any], secret_env_names: list[str], secret_env: str | None) -> str:
    """What identifies a configuration: the image, the settings, and which sealed secrets (never their values)."""
    material = json.dumps(
        {"image_id": image_id, "config": config, "secret_env_names": secret_env_names}, sort_keys=True
    ).encode()
    secret = hashlib.sha256((secret_env or "").encode()).digest()
    return "sha256:" + hashlib.sha256(material + secret).hexdigest()


def _release_values(
    image_id: str, config: dict[str, Any], secret_env: str | None, secret_env_names: list[str], reason: str | None
) -> dict[str, Any]:
    return {
        "image_id": image_id,
        "config": config,
        "secret_env": secret_env,
        "secret_env_names": secret_env_names,
        "config_digest": _digest(image_id, config, secret_env_names, secret_env),
        "reason": reason,
    }


def _check_replicas(plan: str, replicas: int) -> None:
    limit = plan_max_replicas(plan)
    if replicas > limit:
        raise QuotaExceeded(
            f"replicas {replicas} is above your {plan} plan's limit of {limit} per service.",
            quota="max_replicas_per_service",
            limit=limit,
            used=replicas,
        )


def _check_minimums(plan: str, regions: list[dict[str, Any]], replicas: int, *, state: bool = False) -> None:
    """The regional minimums against the plan (403 quota_exceeded: a minimum above the plan's replicas per
    service) and the declared replicas (their sum above ``replicas``: 422 when both are in the body, 409 when
    one of them is the service's, ``state``)."""
    limit = plan_max_replicas(plan)
    for region in regions:
        if region["min"] > limit:
            raise QuotaExceeded(
                f"region {region['name']}'s minimum of {region['min']} replicas is above your {plan} plan's limit "
                f"of {limit} per service.",
                quota="max_replicas_per_service",
                limit=limit,
                used=region["min"],
            )
    needed = sum(region["min"] for region in regions)
    if needed > replicas:
        message = (
            f"The regions' minimums add up to {needed} replicas, more than the {replicas} declared; declare at "
            "least as many replicas as the regions' minimums need."
        )
        if state:
            raise Conflict(message)
        raise ValidationFailed(message, details=[{"loc": ["body", "regions"], "msg": "minimums above replicas"}])


async def _check_known_regions(services: ServiceStore, regions: list[dict[str, Any]]) -> None:
    """422 for a region no registered host belongs to (as a container's region)."""
    if not regions:
        return
    hosts = await services.known_regions()
    for index, region in enumerate(regions):
        if region["name"] not in hosts:
            raise ValidationFailed(
                f"No host belongs to region {region['name']!r}; name regions of your hosts.",
                details=[{"loc": ["body", "regions", index, "name"], "msg": "unknown region"}],
            )


def _regions_of(config: dict[str, Any]) -> list[dict[str, Any]]:
    """A release's regional minimums (none for releases made before services had regions)."""
    return list(config.get("regions") or [])


async def _ready_image(services: ServiceStore, owner_id: str, image_id: str) -> str:
    image = await services.image(owner_id, parse_id(image_id))
    if image is None:
        raise NotFound(f"No image {image_id}.")
    if image["status"] != "ready":
        raise Conflict(
            f"Image {image['name']}:{image['tag']} is {image['status']}; only a ready image can be deployed."
        )
    return str(image["id"])


async def _view(services: ServiceStore, owner_id: str, name: str) -> dict[str, Any]:
    row = await services.get(owner_id, name)
    if row is None:
        raise NotFound(f"No service {name}.")
    return row


async def create_service(
    services: ServiceStore, settings: FunctionSettings, owner_id: str, plan: str, body: CreateService
) -> Service:
    image_id = await _ready_image(services, owner_id, body.image_id)
    regions = [region.model_dump() for region in body.regions]
    _check_minimums(plan, regions, body.replicas)
    await _check_known_regions(services, regions)
    _check_replicas(plan, body.replicas)
    # The replicas declared; a rollout's surge replicas are transient and not counted.
    await check_service_capacity(owner_id, body.name, body.replicas, body.memory_mb)
    config = {
        "command": body.command,
        "env": body.env,
        "ports": [port.model_dump() for port in body.ports],
        "cpu": body.cpu,
        "memory_mb": body.memory_mb,
        "restart_policy": body.restart_policy,
        "health_check": body.health_check.model_dump() if body.health_check else None,
        "regions": regions,
    }
    release = _release_values(
        image_id, config, seal_env(settings, body.secret_env), sorted(body.secret_env), "created with the service"
    )
    async with quota_lock(owner_id):  # checked again with the insert: concurrent creates cannot pass the quota
        await check_service_capacity(owner_id, body.name, body.replicas, body.memory_mb)
        row = await services.create(owner_id, body.name, body.replicas, body.update_policy.model_dump(), release)
    if row is None:
        raise Conflict(f"You already have a service named {body.name}; pick another name or delete it first.")
    return _service(row)


async def get_service(services: ServiceStore, owner_id: str, name: str) -> Service:
    return _service(await _view(services, owner_id, name))


async def list_services(services: ServiceStore, owner_id: str, limit: int, cursor: str | None) -> ServicePage:
    rows = await services.page(owner_id, limit + 1, decode_cursor(cursor) if cursor is not None else None)
    items, next_cursor = page_of(rows, limit, _service)
    return ServicePage(items=items, next_cursor=next_cursor)


async def update_service(services: ServiceStore, owner_id: str, plan: str, name: str, body: UpdateService) -> Service:
    """Scale (``replicas``) or change the update policy: no new release, the rollout driver converges."""
    if "replicas" in body.model_fields_set and body.replicas is None:
        raise ValidationFailed("replicas cannot be null.", details=[{"field": "replicas", "message": "an integer"}])
    if "update_policy" in body.model_fields_set and body.update_policy is None:
        raise ValidationFailed(
            "update_policy cannot be null.", details=[{"field": "update_policy", "message": "an object"}]
        )
    row = await _view(services, owner_id, name)
    if body.replicas is not None:
        _check_minimums(plan, _regions_of(row["config"]), body.replicas, state=True)
    if body.replicas is not None and body.replicas > row["replicas"]:
        _check_replicas(plan, body.replicas)
        await check_service_capacity(owner_id, name, body.replicas, row["config"]["memory_mb"])
    if body.replicas is not None and row["release_status"] == "failed":
        raise Conflict(
            f"Release {row['release_number']} of {name} failed and its rollout stopped; deploy a fix or roll back "
            "before scaling."
        )
    async with quota_lock(owner_id):  # the scale-up checked again with the write, under the owner's lock
        if body.replicas is not None and body.replicas > row["replicas"]:
            await check_service_capacity(owner_id, name, body.replicas, row["config"]["memory_mb"])
        await services.update(
            str(row["id"]), body.replicas, body.update_policy.model_dump() if body.update_policy else None
        )
    return _service(await _view(services, owner_id, name))


def _not_rolling(current: dict[str, Any], name: str) -> None:
    if current["status"] in ROLLING:
        raise Conflict(
            f"Release {current['number']} of {name} is still {current['status']}; wait for it to finish (or roll "
            "back) before deploying again."
        )


async def _return_point(change: ServiceChange, current: dict[str, Any]) -> int | None:
    """The release an automatic rollback of the next release returns to: the current one when healthy, else
    the last that was."""
    if current["status"] == "healthy":
        return int(current["number"])
    previous = await change.last_healthy_release(int(current["number"]))
    return int(previous["number"]) if previous is not None else None


async def deploy_service(
    services: ServiceStore,
    settings: FunctionSettings,
    owner_id: str,
    plan: str,
    name: str,
    body: DeployService,
) -> Release:
    """A new release from the current one and the change; 409 while a release rolls."""
    for field in ("image_id", "command", "env", "secret_env", "ports", "cpu", "memory_mb", "restart_policy"):
        if field in body.model_fields_set and getattr(body, field) is None and field != "command":
            raise ValidationFailed(f"{field} cannot be null.", details=[{"field": field, "message": "not null"}])
    image_id = await _ready_image(services, owner_id, body.image_id) if body.image_id is not None else None
    await _check_known_regions(services, [region.model_dump() for region in body.regions or []])
    async with quota_lock(owner_id), services.locked(owner_id, name) as change:
        if change is None:
            raise NotFound(f"No service {name}.")
        current = await change.release(int(change.service["release_number"]))
        assert current is not None
        _not_rolling(current, name)
        config = dict(current["config"])
        for field in ("command", "env", "cpu", "memory_mb", "restart_policy"):
            if field in body.model_fields_set:
                config[field] = getattr(body, field)
        if body.ports is not None:
            config["ports"] = [port.model_dump() for port in body.ports]
        if "health_check" in body.model_fields_set:
            config["health_check"] = body.health_check.model_dump() if body.health_check else None
        if "regions" in body.model_fields_set:
            config["regions"] = [region.model_dump() for region in body.regions or []]
        _check_minimums(plan, _regions_of(config), int(change.service["replicas"]), state=True)
        _check_health_check(config, body_alone=body.ports is not None)
        # Replaces replicas one for one: no more are declared, but the memory per replica may change.
        await check_service_capacity(owner_id, name, int(change.service["replicas"]), config["memory_mb"])
        if body.secret_env is not None:
            secret_env, secret_names = seal_env(settings, body.secret_env), sorted(body.secret_env)
        else:
            secret_env, secret_names = current["secret_env"], list(current["secret_env_names"] or [])
        both = sorted(set(config["env"]) & set(secret_names))
        if both:
            message = f"a variable is either in env or in secret_env, not both: {', '.join(both)}"
            if body.env is not None and body.secret_env is not None:
                raise ValidationFailed(message)
            # One of the two is the current release's: the change conflicts with it (send both to move one).
            raise Conflict(f"{message} (the current release has the other)")
        release = _release_values(image_id or str(current["image_id"]), config, secret_env, secret_names, None)
        number = await change.add_release(await _return_point(change, current), owner_id, release)
        created = await change.release(number)
    assert created is not None
    return _release(created)


def _check_health_check(config: dict[str, Any], *, body_alone: bool) -> None:
    """Fill in a changed health check's defaults from the ports it will run with (the first is its port). A
    check without a port and no ports is a 422 when the change names the ports (``body_alone``), and a 409 when
    they are the current release's."""
    if config["health_check"] is None:
        return
    try:
        check = HealthCheckRequest.model_validate(config["health_check"])
        _normalise_health_check(check, [PortRequest.model_validate(port) for port in config["ports"]])
    except ValueError as exc:
        if not body_alone:
            raise Conflict(f"{exc} (the current release publishes none; send ports with the check)") from exc
        raise ValidationFailed(str(exc), details=[{"field": "health_check", "message": str(exc)}]) from exc
    config["health_check"] = HealthCheck.model_validate(check.model_dump()).model_dump()


async def rollback_service(services: ServiceStore, owner_id: str, name: str, body: RollbackService) -> Release:
    """A new release with the configuration of an earlier one (the previous healthy one by default). A release
    still rolling is stopped first: it reads rolled_back."""
    async with services.locked(owner_id, name) as change:
        if change is None:
            raise NotFound(f"No service {name}.")
        current_number = int(change.service["release_number"])
        current = await change.release(current_number)
        assert current is not None
        if body.release is not None:
            target = await change.release(body.release)
            if target is None:
                raise NotFound(f"Service {name} has no release {body.release}.")
        else:
            target = await change.last_healthy_release(current_number)
            if target is None:
                raise Conflict(f"Service {name} has no earlier healthy release to roll back to.")
        image = await services.image(owner_id, str(target["image_id"]))
        if image is None or image["status"] != "ready":
            raise Conflict(f"The image of release {target['number']} is gone; it cannot run again.")
        needed = sum(region["min"] for region in _regions_of(target["config"]))
        if needed > int(change.service["replicas"]):
            raise Conflict(
                f"Release {target['number']}'s regions need at least {needed} replicas and {name} declares "
                f"{change.service['replicas']}; scale up first."
            )
        return_point = await _return_point(change, current)
        if current["status"] in ROLLING:
            await change.finish_release(current_number, "rolled_back", f"rolled back to release {target['number']}")
        release = _release_values(
            str(target["image_id"]),
            target["config"],
            target["secret_env"],
            list(target["secret_env_names"] or []),
            f"rollback to release {target['number']}",
        )
        number = await change.add_release(return_point, owner_id, release)
        created = await change.release(number)
    assert created is not None
    return _release(created)


async def list_releases(
    services: ServiceStore, owner_id: str, name: str, limit: int, cursor: str | None
) -> ReleasePage:
    before = decode_sequence_cursor(cursor) if cursor is not None else None
    row = await _view(services, owner_id, name)
    rows = await services.releases(str(row["id"]), limit + 1, before)
    items, next_cursor = page_of(rows, limit, _release, lambda last: encode_sequence_cursor(last["number"]))
    return ReleasePage(items=items, next_cursor=next_cursor)


async def delete_service(
    services: ServiceStore, queue: HostJobQueues, owner_id: str, name: str, body: DeleteService
) -> Service:
    """Remove the service, its listeners and (draining first, as a stop does) every replica. 409
    confirmation_mismatch, deleting nothing, when ``confirm`` is not its name (as for an account)."""
    gone = _service(await _view(services, owner_id, name))
    if body.confirm != name:
        raise ConfirmationMismatch(f'To delete service {name}, send {{"confirm": "{name}"}}.')
    async with services.locked(owner_id, name) as change:
        if change is None:
            raise NotFound(f"No service {name}.")
        replicas = await change.delete()
    for replica in replicas:
        if replica["host_id"] is not None:
            await queue.send(replica["host_id"], Job(JobKind.RECONCILE_CONTAINER, {"container_id": str(replica["id"])}))
    return gone
