"""Alert rules, episodes and the delivery outbox in PostgreSQL, for the host workers (worker.alerts).

Rules are evaluated under their rows' locks (``FOR UPDATE SKIP LOCKED``) in one transaction with the state
changes and the outbox rows they cause: a state change and its deliveries are written together or not at
all, and two workers never evaluate one rule at once. Deliveries are claimed the same way, with a lease
(``next_attempt_at`` pushed forward) so a worker that dies mid-send leaves the row to be retried."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from shared.billing.plan_store import PlanStore, Usage
from shared.db import Database
from shared.traffic_history import BUCKET_COUNT

_UNHEALTHY_STATUSES = ("failed", "unhealthy", "lost", "stopped")
Conn = AsyncConnection[DictRow]


class AlertStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    @property
    def database(self) -> Database:
        return self._db

    # --- evaluation -----------------------------------------------------------------------------------

    async def lock_due_rules(self, conn: Conn, limit: int) -> list[dict[str, Any]]:
        """Rules no other worker holds, least recently evaluated first, with their open episode."""
        cursor = await conn.execute(
            "SELECT r.*, now() AS now, a.state AS open_state, a.started_at AS open_started_at, "
            "a.fired_at AS open_fired_at, a.summary AS open_summary "
            "FROM alert_rules r LEFT JOIN alerts a ON a.id = r.open_alert_id "
            "ORDER BY r.evaluated_at NULLS FIRST LIMIT %s FOR UPDATE OF r SKIP LOCKED",
            (limit,),
        )
        return await cursor.fetchall()

    async def container_state(self, conn: Conn, owner_id: str, container_id: str) -> dict[str, Any] | None:
        cursor = await conn.execute(
            "SELECT name, status, desired_state, reason FROM containers "
            "WHERE owner_id = %s AND id = %s AND status <> 'deleted'",
            (owner_id, container_id),
        )
        return await cursor.fetchone()

    async def restarts_within(self, conn: Conn, container_id: str, window_seconds: int) -> int:
        """Restarts by the reconciler in the last ``window_seconds`` (its events: starting, 'restart N ...')."""
        cursor = await conn.execute(
            "SELECT count(*) AS n FROM container_events WHERE container_id = %s AND status = 'starting' "
            "AND reason LIKE 'restart %%' AND ts > now() - make_interval(secs => %s)",
            (container_id, window_seconds),
        )
        row = await cursor.fetchone()
        return int(row["n"]) if row else 0

    async def unhealthy_replicas(self, conn: Conn, owner_id: str, service: str) -> list[dict[str, Any]]:
        """The service's replicas wanted running that are not."""
        cursor = await conn.execute(
            "SELECT name, status, reason FROM containers WHERE owner_id = %s AND coalesce(service, name) = %s "
            "AND desired_state = 'running' AND status = ANY(%s) ORDER BY name",
            (owner_id, service, list(_UNHEALTHY_STATUSES)),
        )
        return await cursor.fetchall()

    async def listener_window(self, conn: Conn, listener_id: str, window_seconds: int) -> dict[str, Any]:
        """The listener's totals over the last ``window_seconds`` of 10 s history."""
        cursor = await conn.execute(
            "SELECT coalesce(sum(requests), 0) AS requests, "
            "coalesce(sum(errors_connect + responses_5xx), 0) AS errors, "
            "array_agg(latency_buckets) AS buckets FROM traffic_samples "
            "WHERE listener_id = %s AND resolution = 10 AND instance = '' "
            "AND ts > now() - make_interval(secs => %s)",
            (listener_id, window_seconds),
        )
        row = await cursor.fetchone()
        assert row is not None
        buckets = [0] * BUCKET_COUNT
        for sample in row["buckets"] or []:
            buckets = [a + b for a, b in zip(buckets, sample, strict=False)]
        return {"requests": int(row["requests"]), "errors": int(row["errors"]), "buckets": buckets}

    async def newest_release(self, conn: Conn, owner_id: str, service: str) -> dict[str, Any] | None:
        cursor = await conn.execute(
            "SELECT r.number, r.status, r.reason FROM service_releases r JOIN services s ON s.id = r.service_id "
            "WHERE s.owner_id = %s AND s.name = %s ORDER BY r.number DESC LIMIT 1",
            (owner_id, service),
        )
        return await cursor.fetchone()

    async def quota_use(self, conn: Conn, owner_id: str, quota: str) -> tuple[int, int]:
        """(what the owner holds, the plan's limit) of one of the plan's quotas, in its units: as the quota checks
        count it (shared.billing), and for memory per container the largest reservation held. Run inside
        ``Database.one_transaction`` so the plan store's queries join the evaluation's transaction."""
        plans = PlanStore(self._db)
        plan, _ = await plans.account(owner_id)
        limit = int(getattr(plan, quota))
        if quota == "max_memory_mb_per_container":
            cursor = await conn.execute(
                "SELECT COALESCE(max(memory_mb), 0) AS largest FROM containers "
                "WHERE owner_id = %s AND status <> 'deleted' AND desired_state <> 'deleted'",
                (owner_id,),
            )
            row = await cursor.fetchone()
            declared = [memory for _, memory in (await plans.service_reservations(owner_id)).values()]
            return max([int(row["largest"]) if row else 0, *declared]), limit
        return _held(await plans.usage(owner_id), quota), limit

    async def mark_evaluated(self, conn: Conn, rule_id: str, clear_since: Any) -> None:
        await conn.execute(
            "UPDATE alert_rules SET evaluated_at = now(), clear_since = %s WHERE id = %s", (clear_since, rule_id)
        )

    async def open_alert(self, conn: Conn, rule: dict[str, Any], summary: str, labels: dict[str, str]) -> str:
        """A new pending episode for ``rule``; its id (the rule's open alert)."""
        cursor = await conn.execute(
            "INSERT INTO alerts (rule_id, owner_id, state, started_at, summary, labels) "
            "VALUES (%s, %s, 'pending', now(), %s, %s) RETURNING id",
            (rule["id"], rule["owner_id"], summary, Jsonb(labels)),
        )
        row = await cursor.fetchone()
        assert row is not None
        await conn.execute("UPDATE alert_rules SET open_alert_id = %s WHERE id = %s", (row["id"], rule["id"]))
        return str(row["id"])

    async def set_state(self, conn: Conn, alert_id: str, state: str, summary: str) -> dict[str, Any]:
        """Move an episode to ``firing`` or ``resolved`` (stamping when); its row."""
        cursor = await conn.execute(
            "UPDATE alerts SET state = %s, summary = %s, "
            "fired_at = CASE WHEN %s = 'firing' THEN now() ELSE fired_at END, "
            "resolved_at = CASE WHEN %s = 'resolved' THEN now() ELSE resolved_at END "
            "WHERE id = %s RETURNING *",
            (state, summary, state, state, alert_id),
        )
        row = await cursor.fetchone()
        assert row is not None
        if state == "resolved":
            await conn.execute("UPDATE alert_rules SET open_alert_id = NULL WHERE open_alert_id = %s", (alert_id,))
        return row

    async def enqueue_deliveries(self, conn: Conn, owner_id: str, alert_id: str, state: str, body: str) -> int:
        """One outbox row per webhook of the owner for this state change (never two: the unique key)."""
        cursor = await conn.execute(
            "INSERT INTO alert_deliveries (alert_id, webhook_id, state, body) "
            "SELECT %s, id, %s, %s FROM alert_webhooks WHERE owner_id = %s "
            "ON CONFLICT (alert_id, webhook_id, state) DO NOTHING",
            (alert_id, state, body, owner_id),
        )
        return int(cursor.rowcount or 0)

    # --- delivery -------------------------------------------------------------------------------------

    async def claim_deliveries(self, limit: int, lease_seconds: float) -> list[dict[str, Any]]:
        """Due deliveries, each counted as one more attempt and leased for ``lease_seconds``."""
        return await self._db.fetch_all(
            "WITH due AS (SELECT id FROM alert_deliveries WHERE status = 'pending' AND next_attempt_at <= now() "
            "ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED), "
            "claimed AS (UPDATE alert_deliveries d SET attempts = d.attempts + 1, "
            "next_attempt_at = now() + make_interval(secs => %s) FROM due WHERE d.id = due.id "
            "RETURNING d.id, d.alert_id, d.webhook_id, d.state, d.body, d.attempts) "
            "SELECT c.*, w.url, w.sealed_secret FROM claimed c JOIN alert_webhooks w ON w.id = c.webhook_id",
            (limit, lease_seconds),
        )

    async def delivered(self, delivery_id: str) -> None:
        await self._db.execute(
            "UPDATE alert_deliveries SET status = 'delivered', delivered_at = now(), last_error = NULL WHERE id = %s",
            (delivery_id,),
        )

    async def retry_later(self, delivery_id: str, delay_seconds: float, error: str) -> None:
        await self._db.execute(
            "UPDATE alert_deliveries SET next_attempt_at = now() + make_interval(secs => %s), last_error = %s "
            "WHERE id = %s",
            (delay_seconds, error[:500], delivery_id),
        )

    async def dead_letter(self, delivery_id: str, error: str) -> None:
        await self._db.execute(
            "UPDATE alert_deliveries SET status = 'dead', last_error = %s WHERE id = %s", (error[:500], delivery_id)
        )


# What the owner holds against each quota counted by ``PlanStore.usage`` (the plan's field -> the usage's).
_USAGE_OF_QUOTA = {
    "max_containers": "containers",
    "max_memory_mb_total": "memory_mb_total",
    "max_listeners": "listeners",
    "max_image_storage_mb": "image_storage_mb",
}


def _held(use: Usage, quota: str) -> int:
    return int(getattr(use, _USAGE_OF_QUOTA[quota]))
