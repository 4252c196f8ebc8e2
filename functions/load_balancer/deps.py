"""Dependencies of the load-balancer routes: settings, the listener and certificate stores, lb-runtime's stats."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
from fastapi import Depends

from functions.load_balancer.certificate_store import CertificateStore
from functions.load_balancer.hostname_store import HostnameStore
from functions.load_balancer.ownership import DnsHttpProof, OwnershipProof
from functions.load_balancer.store import ListenerStore, TrafficHistoryStore
from shared.config import FunctionSettings, get_function_settings
from shared.db import get_database
from shared.errors import ServiceUnavailable


class LbRuntimeStats:
    """Per-listener traffic figures from lb-runtime's admin API (``GET /stats``)."""

    def __init__(self, admin_url: str) -> None:
        self._url = admin_url.rstrip("/") + "/stats"

    async def listener_stats(self, listener_id: str) -> dict[str, Any] | None:
        try:
            async with httpx.AsyncClient(timeout=2.0) as client:
                answer = await client.get(self._url, params={"listener": listener_id})
        except httpx.HTTPError as exc:
            raise ServiceUnavailable("lb-runtime cannot be reached for traffic figures; try again shortly.") from exc
        if answer.status_code == 404:
            return None
        if answer.status_code != 200:
            raise ServiceUnavailable(f"lb-runtime answered {answer.status_code} for traffic figures; try again.")
        figures = answer.json()
        return figures if isinstance(figures, dict) else None


async def _listeners() -> ListenerStore:
    settings = get_function_settings()
    return ListenerStore(get_database(settings.database_url, settings.database_pool_max))


async def _certificates() -> CertificateStore:
    settings = get_function_settings()
    return CertificateStore(get_database(settings.database_url, settings.database_pool_max))


async def _history() -> TrafficHistoryStore:
    settings = get_function_settings()
    return TrafficHistoryStore(get_database(settings.database_url, settings.database_pool_max))


async def _hostnames() -> HostnameStore:
    settings = get_function_settings()
    return HostnameStore(get_database(settings.database_url, settings.database_pool_max))


async def _ownership() -> OwnershipProof:
    return DnsHttpProof(get_function_settings().hostname_proof_resolver_address)


async def _traffic() -> LbRuntimeStats:
    return LbRuntimeStats(get_function_settings().lb_admin_url)


Settings = Annotated[FunctionSettings, Depends(get_function_settings)]
Listeners = Annotated[ListenerStore, Depends(_listeners)]
Certificates = Annotated[CertificateStore, Depends(_certificates)]
Hostnames = Annotated[HostnameStore, Depends(_hostnames)]
Ownership = Annotated[OwnershipProof, Depends(_ownership)]
Traffic = Annotated[LbRuntimeStats, Depends(_traffic)]
TrafficHistory = Annotated[TrafficHistoryStore, Depends(_history)]
