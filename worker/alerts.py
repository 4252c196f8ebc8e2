"""Alert evaluation and webhook delivery, run by every host worker (safe with several: worker.alert_store).

A rule's episode moves pending -> firing -> resolved. The condition must hold ``for_seconds`` from the
first round that saw it before the episode fires (0: at once); a pending episode whose condition clears
is resolved without a notification. A firing episode resolves once its condition has stayed clear for
``resolve_after_seconds`` (the hold-off against flapping; 0: at once); a condition back meanwhile
restarts that clock. Firing and resolving each write one delivery per webhook of the rule's owner into the
outbox in the same transaction (``decide`` below is the pure state machine).

A delivery is an Alertmanager v4 webhook body (``version``, ``status``, ``alerts`` ...) plus Berth's own
``berth`` object, POSTed with ``X-Berth-Timestamp`` and ``X-Berth-Signature`` (shared.webhooks). A 2xx
answer delivers it; anything else is retried after a doubling backoff, and after
``alert_delivery_max_attempts`` the row is marked dead (the dead letter), keeping its last error.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import httpx

from shared.billing.plan_store import QUOTA_FIELDS
from shared.errors import DependencyError
from shared.observability import get_logger, log_event
from shared.secrets import SecretUnreadable, open_webhook_secret
from shared.traffic_history import quantile_ms
from shared.webhooks import PinnedWebhookTransport, WebhookUrlRefused, signed_headers
from worker.alert_store import AlertStore, Conn
from worker.periodic import PeriodicTask
from worker.settings import WorkerSettings

logger = get_logger("worker")
RULES_PER_ROUND = 500
DELIVERIES_PER_ROUND = 20


class Transition(StrEnum):
    OPEN = "open"  # a new pending episode
    OPEN_AND_FIRE = "open_and_fire"  # for_seconds 0: pending and firing in one round
    FIRE = "fire"
    RESOLVE = "resolve"  # firing -> resolved: notified
    DISMISS = "dismiss"  # pending -> resolved: never fired, not notified
    HOLD = "hold"  # firing, condition clear, hold-off running
    NONE = "none"


@dataclass(frozen=True)
class Decision:
    transition: Transition
    clear_since: datetime | None  # what the rule keeps as the start of the clear spell


def decide(
    *,
    open_state: str | None,
    started_at: datetime | None,
    clear_since: datetime | None,
    active: bool,
    now: datetime,
    for_seconds: int,
    resolve_after_seconds: int,
) -> Decision:
    """The next step of one rule's state machine, from its open episode (if any) and this round's finding."""
    if open_state is None:
        if not active:
            return Decision(Transition.NONE, None)
        return Decision(Transition.OPEN_AND_FIRE if for_seconds == 0 else Transition.OPEN, None)
    if open_state == "pending":
        if not active:
            return Decision(Transition.DISMISS, None)
        assert started_at is not None
        if (now - started_at).total_seconds() >= for_seconds:
            return Decision(Transition.FIRE, None)
        return Decision(Transition.NONE, None)
    # firing
    if active:
        return Decision(Transition.NONE, None)
    since = clear_since or now
    if (now - since).total_seconds() >= resolve_after_seconds:
        return Decision(Transition.RESOLVE, None)
    return Decision(Transition.HOLD, since)


@dataclass(frozen=True)
class Finding:
    active: bool
    summary: str
    labels: dict[str, str]


async def evaluate_condition(store: AlertStore, conn: Conn, rule: dict[str, Any]) -> Finding:
    """Whether ``rule``'s condition holds now, and a one-line summary of what was seen."""
    kind, owner = rule["kind"], str(rule["owner_id"])
    labels = {"alertname": kind, "severity": "warning", "rule_id": str(rule["id"])}
    threshold = rule["threshold"]
    if kind in ("container_unhealthy", "container_restarts"):
        container_id = str(rule["container_id"])
        labels["container_id"] = container_id
        container = await store.container_state(conn, owner, container_id)
        name = container["name"] if container else container_id
        labels["container"] = name
        if kind == "container_unhealthy":
            active = bool(
                container
                and container["desired_state"] == "running"
                and container["status"] in ("failed", "unhealthy", "lost", "stopped")
            )
            state = f"{container['status']} ({container['reason']})" if container and container["reason"] else None
            summary = (
                f"container {name} is {state or (container['status'] if container else 'gone')}"
                if active
                else f"container {name} is {container['status'] if container else 'gone'}"
            )
            return Finding(active, summary, labels)
        restarts = await store.restarts_within(conn, container_id, rule["window_seconds"])
        summary = f"container {name} restarted {restarts} times in {rule['window_seconds']} s (threshold {threshold:g})"
        return Finding(restarts > threshold, summary, labels)
    if kind == "service_unhealthy":
        service = rule["service"]
        labels["service"] = service
        down = await store.unhealthy_replicas(conn, owner, service)
        names = ", ".join(f"{row['name']} {row['status']}" for row in down[:5])
        summary = (
            f"service {service}: {len(down)} replica(s) not running ({names})" if down else f"service {service} healthy"
        )
        return Finding(bool(down), summary, labels)
    if kind in ("listener_error_rate", "listener_latency_p95"):
        listener_id = str(rule["listener_id"])
        labels["listener_id"] = listener_id
        window = await store.listener_window(conn, listener_id, rule["window_seconds"])
        if kind == "listener_error_rate":
            rate = window["errors"] / window["requests"] if window["requests"] else 0.0
            summary = (
                f"listener {listener_id}: {rate:.1%} of {window['requests']} requests failed in "
                f"{rule['window_seconds']} s (threshold {threshold:.1%})"
            )
            return Finding(window["requests"] > 0 and rate > threshold, summary, labels)
        p95 = quantile_ms(window["buckets"], 0.95)
        summary = (
            f"listener {listener_id}: p95 latency {p95} ms over {rule['window_seconds']} s (threshold {threshold:g} ms)"
        )
        return Finding(p95 is not None and p95 > threshold, summary, labels)
    if kind == "deploy_failed":
        service = rule["service"]
        labels["service"] = service
        release = await store.newest_release(conn, owner, service)
        active = bool(release and release["status"] in ("failed", "rolled_back"))
        summary = (
            f"service {service}: release {release['number']} {release['status']} ({release['reason'] or 'no reason'})"
            if release and active
            else f"service {service}: newest release {release['status'] if release else 'none'}"
        )
        return Finding(active, summary, labels)
    if kind == "quota_use":
        quota = rule["quota"]
        labels["quota"] = quota
        held, limit = await store.quota_use(conn, owner, quota)
        # A quota of 0 allows nothing more: it is used up whatever is held.
        share = held / limit if limit > 0 else 1.0
        summary = (
            f"quota {quota}: {held} of {limit} {QUOTA_FIELDS[quota]} held ({share:.0%}; threshold {threshold:.0%})"
        )
        return Finding(share >= threshold, summary, labels)
    return Finding(False, f"unknown rule kind {kind}", labels)


def _rfc3339(value: datetime | None) -> str:
    return value.isoformat().replace("+00:00", "Z") if value is not None else "0001-01-01T00:00:00Z"


def notification_body(alert: dict[str, Any], rule: dict[str, Any], labels: dict[str, str]) -> str:
    """The JSON body of a delivery: Alertmanager's webhook (version 4) with Berth's own ``berth`` object."""
    state = alert["state"]
    annotations = {"summary": alert["summary"]}
    group_key = f"berth/{rule['id']}"
    body = {
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": state,
        "receiver": "berth-webhook",
        "groupLabels": {"alertname": labels["alertname"]},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "",
        "alerts": [
            {
                "status": state,
                "labels": labels,
                "annotations": annotations,
                "startsAt": _rfc3339(alert["fired_at"] or alert["started_at"]),
                "endsAt": _rfc3339(alert["resolved_at"]),
                "generatorURL": "",
                "fingerprint": str(alert["id"]).replace("-", "")[:16],
            }
        ],
        "berth": {
            "alert_id": str(alert["id"]),
            "rule_id": str(rule["id"]),
            "kind": rule["kind"],
            "state": state,
            "summary": alert["summary"],
            "started_at": _rfc3339(alert["started_at"]),
            "fired_at": _rfc3339(alert["fired_at"]) if alert["fired_at"] else None,
            "resolved_at": _rfc3339(alert["resolved_at"]) if alert["resolved_at"] else None,
            "threshold": rule["threshold"],
            "for_seconds": rule["for_seconds"],
        },
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


async def evaluate_rules_round(store: AlertStore) -> int:
    """Evaluate every rule no other worker holds; how many state changes were notified. One transaction that
    every query of the store's database joins (the plan store's, for quota rules, too)."""
    notified = 0
    async with store.database.one_transaction() as conn:
        for rule in await store.lock_due_rules(conn, RULES_PER_ROUND):
            finding = await evaluate_condition(store, conn, rule)
            decision = decide(
                open_state=rule["open_state"],
                started_at=rule["open_started_at"],
                clear_since=rule["clear_since"],
                active=finding.active,
                now=rule["now"],
                for_seconds=rule["for_seconds"],
                resolve_after_seconds=rule["resolve_after_seconds"],
            )
            notified += await _apply(store, conn, rule, finding, decision)
            await store.mark_evaluated(conn, str(rule["id"]), decision.clear_since)
    return notified


async def _apply(store: AlertStore, conn: Conn, rule: dict[str, Any], finding: Finding, decision: Decision) -> int:
    transition = decision.transition
    alert_id = str(rule["open_alert_id"]) if rule["open_alert_id"] else None
    if transition in (Transition.OPEN, Transition.OPEN_AND_FIRE):
        alert_id = await store.open_alert(conn, rule, finding.summary, finding.labels)
        log_event(logger, "alert pending", rule_id=str(rule["id"]), alert_id=alert_id, summary=finding.summary)
        if transition is Transition.OPEN:
            return 0
    if transition is Transition.DISMISS:
        assert alert_id is not None
        await store.set_state(conn, alert_id, "resolved", rule["open_summary"] or finding.summary)
        log_event(logger, "alert dismissed before firing", rule_id=str(rule["id"]), alert_id=alert_id)
        return 0
    if transition in (Transition.OPEN_AND_FIRE, Transition.FIRE, Transition.RESOLVE):
        assert alert_id is not None
        state = "resolved" if transition is Transition.RESOLVE else "firing"
        alert = await store.set_state(conn, alert_id, state, finding.summary)
        body = notification_body(alert, rule, finding.labels)
        deliveries = await store.enqueue_deliveries(conn, str(rule["owner_id"]), alert_id, state, body)
        log_event(
            logger,
            f"alert {state}",
            rule_id=str(rule["id"]),
            alert_id=alert_id,
            deliveries=deliveries,
            summary=finding.summary,
        )
        return 1
    return 0


def backoff_seconds(settings: WorkerSettings, attempts: int) -> float:
    """The wait before attempt ``attempts + 1``: doubling from the base, capped."""
    return float(
        min(
            settings.alert_delivery_backoff_max_seconds,
            settings.alert_delivery_backoff_base_seconds * 2 ** (attempts - 1),
        )
    )


async def deliver_round(store: AlertStore, settings: WorkerSettings) -> int:
    """Send every due delivery once; how many were delivered."""
    lease = settings.alert_delivery_timeout_seconds + 30
    claimed = await store.claim_deliveries(DELIVERIES_PER_ROUND, lease)
    if not claimed:
        return 0
    # The transport checks each URL's addresses again and connects to the one it checked (no DNS rebinding).
    transport = PinnedWebhookTransport(allow_private=settings.alerts_allow_private_webhooks)
    async with httpx.AsyncClient(
        transport=transport, timeout=settings.alert_delivery_timeout_seconds, follow_redirects=False
    ) as client:
        results = await asyncio.gather(*(_deliver(store, settings, client, row) for row in claimed))
    return sum(results)


async def _deliver(store: AlertStore, settings: WorkerSettings, client: httpx.AsyncClient, row: dict[str, Any]) -> int:
    delivery_id = str(row["id"])
    try:
        secret = open_webhook_secret(settings, row["sealed_secret"])
        body = row["body"].encode()
        headers = {"Content-Type": "application/json", "User-Agent": "berth-alerts/1"}
        headers.update(signed_headers(secret, body, delivery_id))
        answer = await client.post(row["url"], content=body, headers=headers)
        error = None if 200 <= answer.status_code < 300 else f"the receiver answered {answer.status_code}"
    except (SecretUnreadable, WebhookUrlRefused) as exc:
        await store.dead_letter(delivery_id, str(exc))
        log_event(logger, "alert delivery dead", delivery_id=delivery_id, error=str(exc))
        return 0
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if error is None:
        await store.delivered(delivery_id)
        log_event(logger, "alert delivered", delivery_id=delivery_id, state=row["state"], attempts=row["attempts"])
        return 1
    if row["attempts"] >= settings.alert_delivery_max_attempts:
        await store.dead_letter(delivery_id, error)
        log_event(logger, "alert delivery dead", delivery_id=delivery_id, attempts=row["attempts"], error=error)
        return 0
    delay = backoff_seconds(settings, int(row["attempts"]))
    await store.retry_later(delivery_id, delay, error)
    log_event(logger, "alert delivery will retry", delivery_id=delivery_id, in_seconds=delay, error=error)
    return 0


def alert_tasks(store: AlertStore, settings: WorkerSettings) -> list[PeriodicTask]:
    """Rule evaluation and webhook delivery, each a periodic task of its own."""

    async def evaluate() -> None:
        await evaluate_rules_round(store)

    async def deliver() -> None:
        await deliver_round(store, settings)

    return [
        PeriodicTask("alert evaluation", settings.worker_alert_interval_seconds, evaluate, retry_on=(DependencyError,)),
        PeriodicTask(
            "alert delivery", settings.worker_alert_delivery_interval_seconds, deliver, retry_on=(DependencyError,)
        ),
    ]
