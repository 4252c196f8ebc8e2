"""The alerts function: the caller's webhooks, alert rules and alert history (/api/alerts/*), and the trails
of the caller's requests (/api/requests/*)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response

from functions.alerts import service
from functions.alerts.deps import Alerts, Settings
from functions.alerts.models import (
    REQUEST_ID_PATTERN,
    AlertPage,
    CreateRule,
    CreateWebhook,
    RequestTrailAnswer,
    Rule,
    RulePage,
    Webhook,
    WebhookPage,
)
from shared.http_app import create_app, lambda_handler
from shared.identity import CurrentUser
from shared.pagination import KEYSET_CURSOR_PATTERN

router = APIRouter(prefix="/api/alerts", tags=["alerts"])
requests_router = APIRouter(prefix="/api/requests", tags=["requests"])
Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(max_length=60, pattern=KEYSET_CURSOR_PATTERN)]


@router.post("/webhooks", status_code=201, response_model=Webhook)
async def create_webhook(body: CreateWebhook, user: CurrentUser, alerts: Alerts, settings: Settings) -> Webhook:
    return await service.create_webhook(alerts, settings, user.user_id, body)


@router.get("/webhooks", response_model=WebhookPage)
async def list_webhooks(user: CurrentUser, alerts: Alerts, limit: Limit = 20, cursor: Cursor = None) -> WebhookPage:
    return await service.list_webhooks(alerts, user.user_id, limit, cursor)


@router.get("/webhooks/{webhook_id}", response_model=Webhook)
async def get_webhook(webhook_id: str, user: CurrentUser, alerts: Alerts) -> Webhook:
    return await service.get_webhook(alerts, user.user_id, webhook_id)


@router.delete("/webhooks/{webhook_id}", status_code=204)
async def delete_webhook(webhook_id: str, user: CurrentUser, alerts: Alerts) -> Response:
    await service.delete_webhook(alerts, user.user_id, webhook_id)
    return Response(status_code=204)


@router.post("/rules", status_code=201, response_model=Rule)
async def create_rule(body: CreateRule, user: CurrentUser, alerts: Alerts) -> Rule:
    return await service.create_rule(alerts, user.user_id, body)


@router.get("/rules", response_model=RulePage)
async def list_rules(user: CurrentUser, alerts: Alerts, limit: Limit = 20, cursor: Cursor = None) -> RulePage:
    return await service.list_rules(alerts, user.user_id, limit, cursor)


@router.get("/rules/{rule_id}", response_model=Rule)
async def get_rule(rule_id: str, user: CurrentUser, alerts: Alerts) -> Rule:
    return await service.get_rule(alerts, user.user_id, rule_id)


@router.delete("/rules/{rule_id}", status_code=204)
async def delete_rule(rule_id: str, user: CurrentUser, alerts: Alerts) -> Response:
    await service.delete_rule(alerts, user.user_id, rule_id)
    return Response(status_code=204)


@router.get("", response_model=AlertPage)
async def list_alerts(
    user: CurrentUser,
    alerts: Alerts,
    limit: Limit = 20,
    cursor: Cursor = None,
    state: Literal["pending", "firing", "resolved"] | None = None,
    rule_id: Annotated[str | None, Query(max_length=64)] = None,
) -> AlertPage:
    return await service.list_alerts(alerts, user.user_id, limit, cursor, state, rule_id)


@requests_router.get("/{request_id}", response_model=RequestTrailAnswer)
async def get_request_trail(
    request_id: Annotated[str, Path(max_length=128, pattern=REQUEST_ID_PATTERN)], user: CurrentUser, alerts: Alerts
) -> RequestTrailAnswer:
    return await service.request_trail(alerts, user.user_id, request_id)


app = create_app("alerts", [router, requests_router])
handler = lambda_handler(app)
