"""The service registry in Consul (BERTH_REGISTRY=consul), through the HTTP API of the host's local agent.

py-consul's asyncio client needs aiohttp, which Berth does not install, so the synchronous client runs in
worker threads; its own HTTP layer is called directly where its helpers lack a parameter Berth needs (the
Enterprise ``ns`` parameter, a check update with a status and an output).

How the registry's terms map onto Consul:

- an instance is an agent service: ID = the instance id (prefixed with the namespace unless Enterprise
  namespaces are on, since the agent has one flat ID space), Name = the service, Address/Port as given;
- the namespace is the Consul namespace (BERTH_CONSUL_NAMESPACES=true) or a ``berth:namespace=...`` tag, the
  owner a ``berth:owner=...`` tag; Meta carries both and the check's definition (``berth_*`` keys);
- health is one TTL check per instance that ``report_health`` updates (the host worker runs the HTTP/TCP probe
  itself, as with PostgreSQL), with DeregisterCriticalServiceAfter, so Consul reaps dead instances itself;
- the index is X-Consul-Index: a service's from /v1/health/service, a namespace's the larger of
  /v1/health/state/any and /v1/catalog/services (raft indexes, so one number serves both queries).
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

import consul
import requests
from consul.callback import CB

from shared.errors import DependencyError, NotFound
from shared.registry import (
    RESERVED_TAG_PREFIX,
    HealthCheck,
    HealthStatus,
    Instance,
    Namespace,
    RegistrySettings,
    ServiceRegistry,
    ServiceSummary,
    WatchResult,
    clip_output,
    parse_address,
)

T = TypeVar("T")

NAMESPACE_TAG = RESERVED_TAG_PREFIX + "namespace="
OWNER_TAG = RESERVED_TAG_PREFIX + "owner="
CHECK_NAME = "berth health"
# An instance without a check is passing until told otherwise: its TTL check never lapses in practice.
NO_CHECK_TTL = "8760h"
_SEVERITY = {"passing": 0, "warning": 1, "critical": 2, "maintenance": 2}


def _seconds(value: float) -> str:
    return f"{value:g}s"


class ConsulRegistry(ServiceRegistry):
    """The registry in Consul, through the local agent."""

    def __init__(self, settings: RegistrySettings) -> None:
        scheme, host, port = parse_address(settings.consul_http_addr)
        token = settings.consul_token.get_secret_value() if settings.consul_token else None
        self._client = consul.Consul(
            host=host,
            port=port,
            scheme=scheme,
            token=token,
            dc=settings.consul_datacenter,
            verify=settings.consul_verify_tls,
            connections_timeout=settings.consul_timeout_seconds,
        )
        # py-consul prefers CONSUL_HTTP_TOKEN over the token it is given; the settings already read both.
        self._client.token = token
        self._namespaces = settings.consul_namespaces
        self._max_wait = settings.consul_max_wait_seconds
        self._address = f"{scheme}://{host}:{port}"

    # -- the HTTP calls, run in threads, with driver errors translated --------------------------------------

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.to_thread(function, *args)
        except consul.ACLPermissionDenied as exc:
            raise DependencyError("Consul refused the registry's token.") from exc
        except (consul.ConsulException, requests.RequestException) as exc:
            raise DependencyError(f"Consul at {self._address} is unavailable; try again shortly.") from exc

    def _headers(self) -> dict[str, str]:
        return self._client.prepare_headers()

    def _params(self, namespace: Namespace | None, *extra: tuple[str, Any]) -> list[tuple[str, Any]]:
        params = list(extra)
        if self._namespaces and namespace is not None:
            params.append(("ns", namespace.value))
        if self._client.dc:
            params.append(("dc", self._client.dc))
        return params

    def _get(self, path: str, params: list[tuple[str, Any]], *, index: bool = False) -> Any:
        return self._client.http.get(CB.json(index=index), path, params=params, headers=self._headers())

    def _put(self, path: str, params: list[tuple[str, Any]], body: Any = None) -> bool:
        data = "" if body is None else json.dumps(body)
        return bool(self._client.http.put(CB.boolean(), path, params=params, headers=self._headers(), data=data))

    # -- naming --------------------------------------------------------------------------------------------

    def _service_id(self, namespace: Namespace, instance_id: str) -> str:
        return instance_id if self._namespaces else f"{namespace.value}:{instance_id}"

    def _check_id(self, namespace: Namespace, instance_id: str) -> str:
        return "berth:" + self._service_id(namespace, instance_id)

    def _namespace_tags(self, namespace: Namespace) -> list[tuple[str, Any]]:
        return [] if self._namespaces else [("tag", NAMESPACE_TAG + namespace.value)]

    # -- the port --------------------------------------------------------------------------------------------

    async def register(self, instance: Instance) -> Instance:
        """Create or replace the instance (namespace, id); returns it as stored."""
        stored = instance.model_copy(update={"updated_at": datetime.now(UTC)})
        check = instance.check
        meta = dict(instance.meta)
        meta.update({"berth_namespace": instance.namespace.value, "berth_instance_id": instance.id})
        meta["berth_updated_at"] = stored.updated_at.isoformat() if stored.updated_at else ""
        tags = list(instance.tags)
        if not self._namespaces:
            tags.append(NAMESPACE_TAG + instance.namespace.value)
        if instance.owner_id is not None:
            meta["berth_owner_id"] = str(instance.owner_id)
            tags.append(OWNER_TAG + str(instance.owner_id))
        ttl_check: dict[str, Any] = {
            "CheckID": self._check_id(instance.namespace, instance.id),
            "Name": CHECK_NAME,
            "Status": instance.status.value,
            "TTL": NO_CHECK_TTL,
        }
        if check is not None:
            meta.update(
                {
                    "berth_check_type": check.type.value,
                    "berth_check_interval": f"{check.interval_seconds:g}",
                    "berth_check_timeout": f"{check.timeout_seconds:g}",
                    "berth_check_deregister_after": f"{check.deregister_after_seconds:g}",
                }
            )
            if check.path:
                meta["berth_check_path"] = check.path
            ttl_check["TTL"] = _seconds(check.report_ttl_seconds)
            ttl_check["DeregisterCriticalServiceAfter"] = _seconds(check.deregister_after_seconds)
        body = {
            "ID": self._service_id(instance.namespace, instance.id),
            "Name": instance.service,
            "Address": instance.address,
            "Port": instance.port,
            "Tags": tags,
            "Meta": meta,
            "Check": ttl_check,
        }
        params = self._params(instance.namespace, ("replace-existing-checks", "true"))
        await self._call(self._put, "/v1/agent/service/register", params, body)
        if instance.output:
            await self.report_health(instance.namespace, instance.id, instance.status, instance.output)
        return stored

    async def deregister(self, namespace: Namespace, instance_id: str) -> bool:
        """Remove the instance; False when there was none."""
        service_id = self._service_id(namespace, instance_id)
        if await self._call(self._get, "/v1/agent/service/" + service_id, self._params(namespace)) is None:
            return False
        await self._call(self._put, "/v1/agent/service/deregister/" + service_id, self._params(namespace))
        return True

    async def report_health(
        self, namespace: Namespace, instance_id: str, status: HealthStatus, output: str = ""
    ) -> None:
        """Record a check result (or a TTL pass); raises NotFound for an unknown instance."""
        path = "/v1/agent/check/update/" + self._check_id(namespace, instance_id)
        body = {"Status": status.value, "Output": clip_output(output)}
        try:
            updated = await self._call(self._put, path, self._params(namespace), body)
        except DependencyError as exc:
            # Older agents answer 500 "Unknown check ID" rather than 404.
            if "unknown check" not in str(exc.__cause__).lower():
                raise
            updated = False
        if not updated:
            raise NotFound(f"No instance {instance_id} in {namespace}.")

    async def services(self, namespace: Namespace, owner_id: UUID | None = None) -> list[ServiceSummary]:
        """The namespace's services with instance and passing counts, only ``owner_id``'s when given."""
        _, catalog = await self._call(
            functools.partial(self._get, index=True), "/v1/catalog/services", self._params(namespace)
        )
        wanted = None if self._namespaces else NAMESPACE_TAG + namespace.value
        summaries = []
        for name, tags in sorted((catalog or {}).items()):
            if wanted is not None and wanted not in (tags or []):
                continue
            found = await self.instances(namespace, name, owner_id)
            if found:
                passing = sum(1 for instance in found if instance.status is HealthStatus.PASSING)
                summaries.append(ServiceSummary(name=name, instances=len(found), passing=passing))
        return summaries

    async def instances(
        self, namespace: Namespace, service: str, owner_id: UUID | None = None, passing_only: bool = False
    ) -> list[Instance]:
        """A service's instances ordered by id, only ``owner_id``'s and only passing ones when asked."""
        _, entries = await self._health_service(namespace, service, 0, 0.0)
        candidates = [self._instance(namespace, entry) for entry in entries]
        found = [
            instance
            for instance in candidates
            if instance is not None
            and (owner_id is None or instance.owner_id == owner_id)
            and (not passing_only or instance.status is HealthStatus.PASSING)
        ]
        return sorted(found, key=lambda instance: instance.id)

    async def watch(
        self, namespace: Namespace, service: str | None = None, index: int = 0, wait_seconds: float = 60.0
    ) -> WatchResult:
        """Wait until the namespace (or one service in it) changes past ``index``, or ``wait_seconds`` pass;
        index 0 answers at once with the current index."""
        deadline = time.monotonic() + max(0.0, wait_seconds)
        while True:
            remaining = min(self._max_wait, deadline - time.monotonic())
            block = index > 0 and remaining > 0
            if service is not None:
                current, _ = await self._health_service(namespace, service, index if block else 0, remaining)
            else:
                current = await self._namespace_index(namespace, index if block else 0, remaining)
            # A lower index than asked means Consul's state was reset: start over from it, as Consul advises.
            if index <= 0 or current != index:
                return WatchResult(current, True)
            if deadline - time.monotonic() <= 0:
                return WatchResult(current, False)

    async def current_index(self, namespace: Namespace, service: str | None = None) -> int:
        """The namespace's (or one service's) change index now, without waiting: what ``watch`` waits past."""
        if service is not None:
            index, _ = await self._health_service(namespace, service, 0, 0.0)
            return index
        return await self._namespace_index(namespace, 0, 0.0)

    async def expire(self, ttl_seconds: float) -> list[Instance]:
        """Remove instances not healthy for ``ttl_seconds`` or critical past their deregister-after.

        Consul reaps instances critical past their DeregisterCriticalServiceAfter itself (to about a minute);
        here the instances whose TTL check lapsed (their reporter went silent) go at once. Consul keeps no
        time of the last passing report, so ``ttl_seconds`` is not what decides here: the check's report TTL
        is (see HealthCheck.report_ttl_seconds). Only this agent's instances can be removed from here (the
        agent would put back what the catalog lost); other agents reap their own.
        """
        removed = []
        for namespace in Namespace:
            for summary in await self.services(namespace):
                _, entries = await self._health_service(namespace, summary.name, 0, 0.0)
                for entry in entries or []:
                    instance = self._instance(namespace, entry)
                    if instance is not None and self._lapsed(namespace, instance, entry):
                        await self.deregister(namespace, instance.id)
                        removed.append(instance)
        return removed

    async def close(self) -> None:
        """Release connections held by the adapter."""
        self._client.http.session.close()

    # -- reading Consul's answers ------------------------------------------------------------------------------

    async def _health_service(
        self, namespace: Namespace, service: str, index: int, wait_seconds: float
    ) -> tuple[int, list[dict[str, Any]]]:
        extra = self._namespace_tags(namespace)
        if index > 0:
            extra += [("index", index), ("wait", _seconds(max(1.0, wait_seconds)))]
        path = "/v1/health/service/" + service  # py-consul quotes the path
        raw_index, entries = await self._call(
            functools.partial(self._get, index=True), path, self._params(namespace, *extra)
        )
        return int(raw_index), entries or []

    async def _namespace_index(self, namespace: Namespace, index: int, wait_seconds: float) -> int:
        """The namespace's index: checks (health changes) and catalog services (registrations) both move it.

        Consul's indexes are raft indexes, so the same number blocks both queries; the first to move wins and
        the other ends on its own when its wait runs out.
        """
        extra: list[tuple[str, Any]] = []
        if index > 0:
            extra = [("index", index), ("wait", _seconds(max(1.0, wait_seconds)))]
        queries = [
            asyncio.ensure_future(
                self._call(functools.partial(self._get, index=True), path, self._params(namespace, *extra))
            )
            for path in ("/v1/health/state/any", "/v1/catalog/services")
        ]
        done, pending = await asyncio.wait(queries, return_when=asyncio.FIRST_COMPLETED)
        indexes = [int(task.result()[0]) for task in done]
        if index <= 0 or all(value == index for value in indexes):
            indexes += [int(value) for value, _ in await asyncio.gather(*pending)]
            pending = set()
        for task in pending:
            task.cancel()  # the thread finishes its blocking query by itself
        return max(indexes)

    def _instance(self, namespace: Namespace, entry: dict[str, Any]) -> Instance | None:
        service = entry.get("Service") or {}
        meta = dict(service.get("Meta") or {})
        if meta.get("berth_namespace") != namespace.value or "berth_instance_id" not in meta:
            return None  # not one of Berth's, or another namespace's (a same-named service)
        checks = entry.get("Checks") or []
        worst = max((_SEVERITY.get(check.get("Status", "critical"), 2) for check in checks), default=0)
        status = [HealthStatus.PASSING, HealthStatus.WARNING, HealthStatus.CRITICAL][worst]
        own_check: dict[str, Any] = next((check for check in checks if check.get("Name") == CHECK_NAME), {})
        health_check = None
        if "berth_check_type" in meta:
            health_check = HealthCheck(
                type=meta["berth_check_type"],
                path=meta.get("berth_check_path"),
                interval_seconds=float(meta["berth_check_interval"]),
                timeout_seconds=float(meta["berth_check_timeout"]),
                deregister_after_seconds=float(meta["berth_check_deregister_after"]),
            )
        updated_at = meta.get("berth_updated_at")
        return Instance(
            id=meta["berth_instance_id"],
            namespace=namespace,
            service=service["Service"],
            owner_id=meta.get("berth_owner_id") or None,
            address=service.get("Address") or (entry.get("Node") or {}).get("Address", ""),
            port=service["Port"],
            status=status,
            output=clip_output(own_check.get("Output") or ""),
            tags=tuple(tag for tag in service.get("Tags") or [] if not tag.startswith(RESERVED_TAG_PREFIX)),
            meta={key: value for key, value in meta.items() if not key.startswith("berth_")},
            check=health_check,
            updated_at=datetime.fromisoformat(updated_at) if updated_at else None,
        )

    def _lapsed(self, namespace: Namespace, instance: Instance, entry: dict[str, Any]) -> bool:
        check_id = self._check_id(namespace, instance.id)
        for check in entry.get("Checks") or []:
            if check.get("CheckID") == check_id:
                return bool(check.get("Status") == "critical" and "ttl expired" in (check.get("Output") or "").lower())
        return False
