"""The production snapshot source: listeners from the control plane's database and each listener's
instances from the service registry (the passing instances of the listener owner's service).

``get`` is called every ``snapshot_poll_seconds`` and is cheap when nothing changed: it reads a version
(the count and newest change of the listeners, and the registry's change index of the client-containers
namespace, which every adapter answers without waiting), and only a new version builds a full snapshot. A
listener weight of 0 keeps an instance out. An https listener carries its certificates, keys opened with
the deployment's secret key (shared.secrets); one without a usable certificate is left out (never an invalid
snapshot, which would hold up every other listener's changes). Each instance carries its host's region
(the ``region`` meta its worker registers) and a listener its region policy (``listeners.regions``).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from shared.config import AuthSettings
from shared.db import get_database
from shared.host_routes import redirect_route_id, route_id
from shared.registry import Namespace, ServiceRegistry
from shared.secrets import SecretUnreadable, open_private_key


class ControlPlaneSource:
    def __init__(
        self,
        database_url: str,
        registry: ServiceRegistry,
        secrets: AuthSettings | None = None,
        shared_ports: tuple[int | None, int | None] = (None, None),
    ) -> None:
        self._database_url = database_url
        self._registry = registry
        # The shared http and https ports (host routes of verified host names); None: not served.
        self._shared_http, self._shared_https = shared_ports
        self._secrets = secrets or AuthSettings()
        self._version: tuple[Any, ...] | None = None

    async def _current_version(self) -> tuple[Any, ...]:
        database = get_database(self._database_url, 2)
        async with database.transaction() as conn:
            cursor = await conn.execute(
                "SELECT (SELECT count(*) FROM listeners) AS listeners, "
                "(SELECT max(updated_at) FROM listeners) AS changed"
            )
            row = await cursor.fetchone()
        assert row is not None
        return (row["listeners"], row["changed"], await self._registry.current_index(Namespace.CLIENT_CONTAINERS))

    async def _listeners(self) -> list[dict[str, Any]]:
        database = get_database(self._database_url, 2)
        async with database.transaction() as conn:
            cursor = await conn.execute(
                "SELECT id, owner_id, service, port, protocol, algorithm, weights, health_check, regions "
                "FROM listeners ORDER BY port"
            )
            return await cursor.fetchall()

    async def _certificates(self) -> dict[str, list[dict[str, Any]]]:
        """Each https listener's certificates in presentation order, private keys opened."""
        database = get_database(self._database_url, 2)
        async with database.transaction() as conn:
            cursor = await conn.execute(
                "SELECT lc.listener_id, c.id, c.hostnames, c.chain_pem, c.key_sealed "
                "FROM listener_certificates lc JOIN certificates c ON c.id = lc.certificate_id "
                "ORDER BY lc.listener_id, lc.position"
            )
            rows = await cursor.fetchall()
        found: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            try:
                key_pem = open_private_key(self._secrets, row["key_sealed"])
            except SecretUnreadable:
                continue
            found.setdefault(str(row["listener_id"]), []).append(
                {"id": str(row["id"]), "chain_pem": row["chain_pem"], "key_pem": key_pem, "hostnames": row["hostnames"]}
            )
        return found

    async def get(self) -> dict[str, Any] | None:
        version = await self._current_version()
        if version == self._version:
            return None
        listeners = []
        certificates = await self._certificates()
        for row in await self._listeners():
            if row["port"] in (self._shared_http, self._shared_https):
                continue  # the shared ports are the host routes' (a clash would refuse the whole snapshot)
            presented = certificates.get(str(row["id"]), []) if row["protocol"] == "https" else []
            if row["protocol"] == "https" and not presented:
                continue  # being created, or its keys do not open here: nothing to terminate TLS with
            weights: dict[str, int] = row["weights"] or {}
            found = await self._registry.instances(
                Namespace.CLIENT_CONTAINERS, row["service"], UUID(str(row["owner_id"])), passing_only=True
            )
            instances = [
                {
                    "id": instance.id,
                    "address": instance.address,
                    "port": instance.port,
                    "weight": weights.get(instance.id, 1),
                }
                # A region lb-runtime would refuse (BERTH_REGION is checked; Consul meta is not) is left out.
                | ({"region": instance.meta["region"]} if 0 < len(instance.meta.get("region", "")) <= 32 else {})
                for instance in found
                if weights.get(instance.id, 1) > 0
            ]
            check = row["health_check"]
            listeners.append(
                {
                    "id": str(row["id"]),
                    "port": row["port"],
                    "protocol": row["protocol"],
                    "algorithm": row["algorithm"],
                    "health_check": (
                        {
                            key: check[key]
                            for key in (
                                "type",
                                "path",
                                "interval_seconds",
                                "timeout_seconds",
                                "healthy_threshold",
                                "unhealthy_threshold",
                            )
                            if key in check
                        }
                        if check
                        else None
                    ),
                    "instances": instances,
                }
                | ({"certificates": presented} if presented else {})
                | ({"regions": row["regions"]} if row["regions"] else {})
            )
        # The version is taken before reading: a change while building shows up as a new version next call.
        listeners.extend(self._shared_listeners(listeners, await self._routed_hostnames()))
        self._version = version
        return {"listeners": listeners}

    async def _routed_hostnames(self) -> list[dict[str, Any]]:
        """Verified host names attached to a listener of the same owner, with that listener's id."""
        if self._shared_http is None and self._shared_https is None:
            return []
        database = get_database(self._database_url, 2)
        async with database.transaction() as conn:
            cursor = await conn.execute(
                "SELECT h.hostname, h.listener_id FROM hostnames h "
                "JOIN listeners l ON l.id = h.listener_id AND l.owner_id = h.owner_id "
                "WHERE h.verified_at IS NOT NULL ORDER BY h.hostname"
            )
            return await cursor.fetchall()

    def _shared_listeners(
        self, listeners: list[dict[str, Any]], hostnames: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """The shared ports: each verified name routes to its own listener's instances (an https listener's
        name is served on the shared https port with its certificates, and redirected there from http). Each
        route is named after its listener (shared.host_routes): its traffic is recorded and metered as that
        listener's."""
        by_id = {listener["id"]: listener for listener in listeners}
        http_routes: list[dict[str, Any]] = []
        https_routes: list[dict[str, Any]] = []
        for row in hostnames:
            listener = by_id.get(str(row["listener_id"]))
            if listener is None:
                continue
            host = row["hostname"]
            route = {
                "id": route_id(listener["id"], host),
                "host": host,
                "algorithm": listener["algorithm"],
                "health_check": listener["health_check"],
                "instances": listener["instances"],
            }
            if listener["protocol"] == "https" and self._shared_https is not None:
                https_routes.append(route | {"certificates": listener["certificates"]})
                if self._shared_http is not None:
                    http_routes.append(
                        {
                            "id": redirect_route_id(listener["id"], host),
                            "host": host,
                            "redirect_https_port": self._shared_https,
                        }
                    )
            elif listener["protocol"] == "http" and self._shared_http is not None:
                http_routes.append(route)
        shared = []
        if self._shared_http is not None:
            shared.append({"id": "shared-http", "port": self._shared_http, "protocol": "http", "routes": http_routes})
        if self._shared_https is not None and https_routes:
            shared.append(
                {"id": "shared-https", "port": self._shared_https, "protocol": "https", "routes": https_routes}
            )
        return shared
