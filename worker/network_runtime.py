"""The network runtime port (what the host worker asks of Docker about bridge networks) and its Docker adapter.

Kept apart from the container runtime: tenant networks are created, attached and removed by
``worker.tenant_networks``; containers only name the network they join. Failures are classified as in
``worker.container_runtime``: ``RuntimeRetryable`` (try later) or ``RuntimeFinal`` (Docker refused the input).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import docker
import requests
from docker.errors import APIError, DockerException, NotFound

from worker.container_runtime import RuntimeFinal, RuntimeRetryable

# The option that names a bridge's Linux interface: a common prefix lets host firewall rules match `-i bt+`.
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"


@dataclass(frozen=True)
class BridgeNetwork:
    """A bridge network as Docker reports it."""

    id: str
    name: str
    subnet: str | None
    gateway: str | None
    labels: Mapping[str, str]
    bridge: str | None


class SubnetTaken(Exception):
    """Docker refused the subnet: another network holds an overlapping one (choose another and retry)."""


class NetworkRuntime(Protocol):
    async def list_networks(self, label: str | None = None) -> list[BridgeNetwork]:
        """Every network (carrying ``label``, ``key`` or ``key=value``, when given)."""
        ...

    async def used_subnets(self) -> list[str]:
        """The IPv4 subnets of every network on this Docker Engine (whoever made them)."""
        ...

    async def create_bridge(
        self, name: str, *, subnet: str, gateway: str, bridge: str, labels: Mapping[str, str]
    ) -> BridgeNetwork:
        """Create a bridge network with this subnet and interface name; raises SubnetTaken on overlap."""
        ...

    async def remove_network(self, name: str) -> bool:
        """Remove a network; False when it was gone (or still has endpoints: kept)."""
        ...

    async def connect(self, network: str, container_id: str) -> None:
        """Attach a container (running or not) to a network; nothing when it is attached already."""
        ...

    async def disconnect(self, network: str, container_id: str) -> None:
        """Detach a container from a network; nothing when it is not attached."""
        ...

    async def networks_in_use(self) -> set[str]:
        """Names of the networks some container (running or not) is configured to join."""
        ...


def _classify(exc: Exception, action: str) -> Exception:
    final = isinstance(exc, APIError) and exc.status_code is not None and 400 <= exc.status_code < 500
    if final and isinstance(exc, APIError) and exc.status_code not in (408, 409, 429):
        return RuntimeFinal(f"Docker refused to {action}: {exc.explanation or exc}")
    return RuntimeRetryable(f"Docker could not {action} right now: {exc}")


def _bridge(raw: dict[str, Any]) -> BridgeNetwork:
    configs = (raw.get("IPAM") or {}).get("Config") or []
    first: dict[str, Any] = next((config for config in configs if "." in (config.get("Subnet") or "")), {})
    return BridgeNetwork(
        id=str(raw.get("Id")),
        name=str(raw.get("Name")),
        subnet=first.get("Subnet"),
        gateway=first.get("Gateway"),
        labels=raw.get("Labels") or {},
        bridge=(raw.get("Options") or {}).get(BRIDGE_NAME_OPTION),
    )


class DockerNetworkRuntime:
    """NetworkRuntime over the Docker Engine API (docker SDK), blocking calls run in threads."""

    def __init__(self, base_url: str | None = None, timeout: float = 60.0) -> None:
        self._timeout = timeout
        self._client = (
            docker.DockerClient(base_url=base_url, timeout=int(timeout))
            if base_url
            else docker.from_env(timeout=int(timeout))
        )

    async def _run(self, action: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.wait_for(asyncio.to_thread(call, *args, **kwargs), self._timeout + 5)
        except TimeoutError as exc:
            raise RuntimeRetryable(f"Docker did not {action} within {self._timeout:.0f}s") from exc
        except (SubnetTaken, NotFound):
            raise
        except (DockerException, requests.RequestException) as exc:
            raise _classify(exc, action) from exc

    async def list_networks(self, label: str | None = None) -> list[BridgeNetwork]:
        filters = {"label": label} if label else None
        found = await self._run("list networks", self._client.api.networks, filters=filters)
        return [_bridge(raw) for raw in found]

    async def used_subnets(self) -> list[str]:
        return [network.subnet for network in await self.list_networks() if network.subnet]

    async def create_bridge(
        self, name: str, *, subnet: str, gateway: str, bridge: str, labels: Mapping[str, str]
    ) -> BridgeNetwork:
        api = self._client.api

        def create() -> BridgeNetwork:
            try:
                api.create_network(
                    name,
                    driver="bridge",
                    internal=False,
                    check_duplicate=True,
                    ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet, gateway=gateway)]),
                    options={BRIDGE_NAME_OPTION: bridge, "com.docker.network.bridge.enable_icc": "true"},
                    labels=dict(labels),
                )
            except APIError as exc:
                words = str(exc.explanation or exc).lower()
                if "overlap" in words:
                    raise SubnetTaken(str(exc.explanation or exc)) from exc
                raise
            return _bridge(api.inspect_network(name))

        result: BridgeNetwork = await self._run("create the network", create)
        return result

    async def remove_network(self, name: str) -> bool:
        def remove() -> bool:
            try:
                self._client.api.remove_network(name)
            except NotFound:
                return False
            except APIError as exc:
                if "active endpoints" in str(exc.explanation or exc):
                    return False
                raise
            return True

        removed: bool = await self._run("remove the network", remove)
        return removed

    async def connect(self, network: str, container_id: str) -> None:
        def connect() -> None:
            try:
                self._client.api.connect_container_to_network(container_id, network)
            except APIError as exc:
                if "already exists" not in str(exc.explanation or exc):
                    raise

        await self._run("connect the container", connect)

    async def disconnect(self, network: str, container_id: str) -> None:
        def disconnect() -> None:
            try:
                self._client.api.disconnect_container_from_network(container_id, network)
            except NotFound:
                return
            except APIError as exc:
                if "is not connected" not in str(exc.explanation or exc):
                    raise

        await self._run("disconnect the container", disconnect)

    async def networks_in_use(self) -> set[str]:
        found = await self._run("list containers", self._client.api.containers, all=True)
        return {name for item in found for name in ((item.get("NetworkSettings") or {}).get("Networks") or {})}
