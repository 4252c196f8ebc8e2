"""The load-balancer function: listeners put an external port in front of a service (/api/load-balancer)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from functions.load_balancer import service
from functions.load_balancer.deps import Listeners, Settings, Traffic
from functions.load_balancer.models import CreateListener, Listener, ListenerPage, ListenerStats, UpdateListener
from shared.http_app import create_app, lambda_handler
from shared.identity import CurrentUser

router = APIRouter(prefix="/api/load-balancer", tags=["load-balancer"])


@router.post("/listeners", status_code=201, response_model=Listener)
async def create_listener(
    body: CreateListener, user: CurrentUser, listeners: Listeners, settings: Settings
) -> Listener:
    return await service.create_listener(listeners, settings, user.user_id, body)


@router.get("/listeners", response_model=ListenerPage)
async def list_listeners(
    user: CurrentUser,
    listeners: Listeners,
    settings: Settings,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> ListenerPage:
    return await service.list_listeners(listeners, settings, user.user_id, limit, cursor)


@router.get("/listeners/{listener_id}", response_model=Listener)
async def get_listener(listener_id: str, user: CurrentUser, listeners: Listeners, settings: Settings) -> Listener:
    return await service.get_listener(listeners, settings, user.user_id, listener_id)


@router.patch("/listeners/{listener_id}", response_model=Listener)
async def update_listener(
    listener_id: str, body: UpdateListener, user: CurrentUser, listeners: Listeners, settings: Settings
) -> Listener:
    return await service.update_listener(listeners, settings, user.user_id, listener_id, body)


@router.delete("/listeners/{listener_id}", status_code=204)
async def delete_listener(listener_id: str, user: CurrentUser, listeners: Listeners) -> Response:
    await service.delete_listener(listeners, user.user_id, listener_id)
    return Response(status_code=204)


@router.get("/listeners/{listener_id}/stats", response_model=ListenerStats)
async def listener_stats(listener_id: str, user: CurrentUser, listeners: Listeners, traffic: Traffic) -> ListenerStats:
    return await service.listener_stats(listeners, traffic, user.user_id, listener_id)


app = create_app("load-balancer", [router])
handler = lambda_handler(app)
