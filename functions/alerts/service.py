"""Alert logic: webhooks (URL checks, sealed secrets), rules on the caller's own subjects, alert history; and
the caller's request trails (shared.request_trail). No HTTP framework here; the host workers evaluate the
rules and deliver the notifications (worker.alerts)."""

from __future__ import annotations

import asyncio
from typing import Any

from functions.alerts.models import (
    SUBJECT_OF,
    Alert,
    AlertPage,
    CreateRule,
    CreateWebhook,
    RequestEvent,
    RequestTrailAnswer,
    Rule,
    RuleKind,
    RulePage,
    Webhook,
    WebhookPage,
)
from functions.alerts.store import AlertStore
from shared.config import FunctionSettings
from shared.errors import NotFound, ValidationFailed
from shared.pagination import decode_cursor, page_of, parse_id
from shared.secrets import seal_webhook_secret
from shared.webhooks import WebhookUrlRefused, check_webhook_url

# The most lines one answer holds (a request id a caller reuses may gather more).
MAX_TRAIL_EVENTS = 1000


class WebhookUrlNotAllowed(ValidationFailed):
    code = "webhook_url_refused"


def _webhook(row: dict[str, Any]) -> Webhook:
    return Webhook(id=str(row["id"]), url=row["url"], created_at=row["created_at"])


def _rule(row: dict[str, Any]) -> Rule:
    return Rule(
        id=str(row["id"]),
        kind=RuleKind(row["kind"]),
        container_id=str(row["container_id"]) if row["container_id"] else None,
        service=row["service"],
        listener_id=str(row["listener_id"]) if row["listener_id"] else None,
        quota=row["quota"],
        threshold=row["threshold"],
        window_seconds=row["window_seconds"],
        for_seconds=row["for_seconds"],
        resolve_after_seconds=row["resolve_after_seconds"],
        state=row["state"],
        created_at=row["created_at"],
    )


def _alert(row: dict[str, Any]) -> Alert:
    return Alert(
        id=str(row["id"]),
        rule_id=str(row["rule_id"]),
        kind=RuleKind(row["kind"]),
        state=row["state"],
        started_at=row["started_at"],
        fired_at=row["fired_at"],
        resolved_at=row["resolved_at"],
        summary=row["summary"],
    )


async def create_webhook(store: AlertStore, settings: FunctionSettings, owner_id: str, body: CreateWebhook) -> Webhook:
    try:
        # Resolving the host name blocks: off the event loop.
        await asyncio.to_thread(check_webhook_url, body.url, allow_private=settings.alerts_allow_private_webhooks)
    except WebhookUrlRefused as exc:
        raise WebhookUrlNotAllowed(str(exc), details=[{"field": "url", "message": str(exc)}]) from exc
    row = await store.create_webhook(owner_id, body.url, seal_webhook_secret(settings, body.secret))
    return _webhook(row)


async def list_webhooks(store: AlertStore, owner_id: str, limit: int, cursor: str | None) -> WebhookPage:
    rows = await store.webhook_page(owner_id, limit + 1, decode_cursor(cursor) if cursor else None)
    items, next_cursor = page_of(rows, limit, _webhook)
    return WebhookPage(items=items, next_cursor=next_cursor)


async def get_webhook(store: AlertStore, owner_id: str, webhook_id: str) -> Webhook:
    row = await store.get_webhook(owner_id, parse_id(webhook_id))
    if row is None:
        raise NotFound("No such webhook.")
    return _webhook(row)


async def delete_webhook(store: AlertStore, owner_id: str, webhook_id: str) -> None:
    if not await store.delete_webhook(owner_id, parse_id(webhook_id)):
        raise NotFound("No such webhook.")


async def create_rule(store: AlertStore, owner_id: str, body: CreateRule) -> Rule:
    subject = SUBJECT_OF[RuleKind(body.kind)]
    value = getattr(body, subject)
    if subject in ("container_id", "listener_id"):
        value = parse_id(value)
    # A quota is every owner's (its name is checked by the model); the other subjects must be the caller's.
    if subject != "quota" and not await store.subject_exists(owner_id, subject, value):
        raise NotFound(f"No such {subject.removesuffix('_id').replace('_', ' ')}: {getattr(body, subject)}.")
    fields = body.model_dump()
    fields[subject] = value
    return _rule(await store.create_rule(owner_id, fields))


async def list_rules(store: AlertStore, owner_id: str, limit: int, cursor: str | None) -> RulePage:
    rows = await store.rule_page(owner_id, limit + 1, decode_cursor(cursor) if cursor else None)
    items, next_cursor = page_of(rows, limit, _rule)
    return RulePage(items=items, next_cursor=next_cursor)


async def get_rule(store: AlertStore, owner_id: str, rule_id: str) -> Rule:
    row = await store.get_rule(owner_id, parse_id(rule_id))
    if row is None:
        raise NotFound("No such alert rule.")
    return _rule(row)


async def delete_rule(store: AlertStore, owner_id: str, rule_id: str) -> None:
    if not await store.delete_rule(owner_id, parse_id(rule_id)):
        raise NotFound("No such alert rule.")


async def list_alerts(
    store: AlertStore, owner_id: str, limit: int, cursor: str | None, state: str | None, rule_id: str | None
) -> AlertPage:
    rows = await store.alert_page(
        owner_id,
        limit + 1,
        decode_cursor(cursor) if cursor else None,
        state,
        parse_id(rule_id) if rule_id is not None else None,
    )
    items, next_cursor = page_of(rows, limit, _alert)
    return AlertPage(items=items, next_cursor=next_cursor)


async def request_trail(store: AlertStore, owner_id: str, request_id: str) -> RequestTrailAnswer:
    """The caller's lines of one of their requests; 404 when they have none (another caller's, too old, or a
    request that logged nothing)."""
    rows = await store.request_events(owner_id, request_id, MAX_TRAIL_EVENTS + 1)
    if not rows:
        raise NotFound(f"No trail of request {request_id} of yours (trails are kept for a few days).")
    events = [
        RequestEvent(
            at=row["at"], source=row["source"], service=row["service"], message=row["message"], fields=row["fields"]
        )
        for row in rows[:MAX_TRAIL_EVENTS]
    ]
    return RequestTrailAnswer(request_id=request_id, events=events, truncated=len(rows) > MAX_TRAIL_EVENTS)
