"""The load-balancer function: listeners put an external port in front of a service (/api/load-balancer)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from functions.load_balancer import certificates as certificate_logic
from functions.load_balancer import hostnames as hostname_logic
from functions.load_balancer import service
from functions.load_balancer.deps import (
    Certificates,
    Hostnames,
    Listeners,
    Ownership,
    Settings,
    Traffic,
    TrafficHistory,
)
from functions.load_balancer.models import (
    Certificate,
    CertificatePage,
    CreateCertificate,
    CreateHostname,
    CreateListener,
    Hostname,
    HostnamePage,
    Listener,
    ListenerPage,
    ListenerSeries,
    ListenerStats,
    UpdateHostname,
    UpdateListener,
    VerifyHostname,
)
from shared.http_app import create_app, lambda_handler
from shared.identity import CurrentUser

router = APIRouter(prefix="/api/load-balancer", tags=["load-balancer"])


@router.post("/listeners", status_code=201, response_model=Listener)
async def create_listener(
    body: CreateListener, user: CurrentUser, listeners: Listeners, certificates: Certificates, settings: Settings
) -> Listener:
    return await service.create_listener(listeners, certificates, settings, user.user_id, body)


@router.get("/listeners", response_model=ListenerPage)
async def list_listeners(
    user: CurrentUser,
    listeners: Listeners,
    certificates: Certificates,
    settings: Settings,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> ListenerPage:
    return await service.list_listeners(listeners, certificates, settings, user.user_id, limit, cursor)


@router.get("/listeners/{listener_id}", response_model=Listener)
async def get_listener(
    listener_id: str, user: CurrentUser, listeners: Listeners, certificates: Certificates, settings: Settings
) -> Listener:
    return await service.get_listener(listeners, certificates, settings, user.user_id, listener_id)


@router.patch("/listeners/{listener_id}", response_model=Listener)
async def update_listener(
    listener_id: str,
    body: UpdateListener,
    user: CurrentUser,
    listeners: Listeners,
    certificates: Certificates,
    settings: Settings,
) -> Listener:
    return await service.update_listener(listeners, certificates, settings, user.user_id, listener_id, body)


@router.delete("/listeners/{listener_id}", status_code=204)
async def delete_listener(listener_id: str, user: CurrentUser, listeners: Listeners) -> Response:
    await service.delete_listener(listeners, user.user_id, listener_id)
    return Response(status_code=204)


@router.get(
    "/listeners/{listener_id}/stats", response_model=ListenerStats | ListenerSeries, response_model_by_alias=True
)
async def listener_stats(
    listener_id: str,
    user: CurrentUser,
    listeners: Listeners,
    traffic: Traffic,
    history: TrafficHistory,
    start: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=40)] = None,
    step: Annotated[int | None, Query(ge=10, le=86400, multiple_of=10)] = None,
) -> ListenerStats | ListenerSeries:
    """lb-runtime's figures now; with from, to or step, the recorded history as a series instead."""
    if start is None and end is None and step is None:
        return await service.listener_stats(listeners, traffic, user.user_id, listener_id)
    return await service.listener_history(listeners, history, user.user_id, listener_id, start, end, step)


@router.post("/certificates", status_code=201, response_model=Certificate)
async def upload_certificate(
    body: CreateCertificate, user: CurrentUser, certificates: Certificates, settings: Settings
) -> Certificate:
    return await certificate_logic.upload_certificate(certificates, settings, user.user_id, body)


@router.get("/certificates", response_model=CertificatePage)
async def list_certificates(
    user: CurrentUser,
    certificates: Certificates,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> CertificatePage:
    return await certificate_logic.list_certificates(certificates, user.user_id, limit, cursor)


@router.get("/certificates/{certificate_id}", response_model=Certificate)
async def get_certificate(certificate_id: str, user: CurrentUser, certificates: Certificates) -> Certificate:
    return await certificate_logic.get_certificate(certificates, user.user_id, certificate_id)


@router.delete("/certificates/{certificate_id}", status_code=204)
async def delete_certificate(certificate_id: str, user: CurrentUser, certificates: Certificates) -> Response:
    await certificate_logic.delete_certificate(certificates, user.user_id, certificate_id)
    return Response(status_code=204)


@router.post("/hostnames", status_code=201, response_model=Hostname)
async def claim_hostname(
    body: CreateHostname, user: CurrentUser, hostnames: Hostnames, listeners: Listeners
) -> Hostname:
    return await hostname_logic.claim_hostname(hostnames, listeners, user.user_id, body)


@router.get("/hostnames", response_model=HostnamePage)
async def list_hostnames(
    user: CurrentUser,
    hostnames: Hostnames,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> HostnamePage:
    return await hostname_logic.list_hostnames(hostnames, user.user_id, limit, cursor)


@router.get("/hostnames/{hostname_id}", response_model=Hostname)
async def get_hostname(hostname_id: str, user: CurrentUser, hostnames: Hostnames) -> Hostname:
    return await hostname_logic.get_hostname(hostnames, user.user_id, hostname_id)


@router.post("/hostnames/{hostname_id}/verify", response_model=Hostname)
async def verify_hostname(
    hostname_id: str, body: VerifyHostname, user: CurrentUser, hostnames: Hostnames, proof: Ownership
) -> Hostname:
    return await hostname_logic.verify_hostname(hostnames, proof, user.user_id, hostname_id, body)


@router.patch("/hostnames/{hostname_id}", response_model=Hostname)
async def update_hostname(
    hostname_id: str, body: UpdateHostname, user: CurrentUser, hostnames: Hostnames, listeners: Listeners
) -> Hostname:
    return await hostname_logic.update_hostname(hostnames, listeners, user.user_id, hostname_id, body)


@router.delete("/hostnames/{hostname_id}", status_code=204)
async def delete_hostname(hostname_id: str, user: CurrentUser, hostnames: Hostnames) -> Response:
    await hostname_logic.delete_hostname(hostnames, user.user_id, hostname_id)
    return Response(status_code=204)


app = create_app("load-balancer", [router])
handler = lambda_handler(app)
