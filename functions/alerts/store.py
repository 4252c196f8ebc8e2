"""The alerts function's data access: webhooks, rules, alert history and request trails, every query scoped to
the owner."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.db import Database

_WEBHOOK_COLUMNS = "id, url, created_at"
_RULE_COLUMNS = (
    "r.id, r.kind, r.container_id, r.service, r.listener_id, r.quota, r.threshold, r.window_seconds, r.for_seconds, "
    "r.resolve_after_seconds, r.created_at, coalesce(a.state, 'ok') AS state"
)
_ALERT_COLUMNS = (
    "a.id, a.rule_id, r.kind, a.state, a.started_at, a.fired_at, a.resolved_at, a.summary, a.started_at AS created_at"
)


def _keyset(after: tuple[datetime, str] | None, params: list[Any]) -> str:
    if after is None:
        return ""
    params.extend(after)
    return " AND (created_at, id) < (%s, %s)"


class AlertStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    # --- webhooks -------------------------------------------------------------------------------------

    async def create_webhook(self, owner_id: str, url: str, sealed_secret: str) -> dict[str, Any]:
        """Store a webhook; its row without the secret."""
        row = await self._db.fetch_one(
            "INSERT INTO alert_webhooks (owner_id, url, sealed_secret) VALUES (%s, %s, %s) "
            f"RETURNING {_WEBHOOK_COLUMNS}",
            (owner_id, url, sealed_secret),
        )
        assert row is not None
        return row

    async def webhook_page(self, owner_id: str, limit: int, after: tuple[datetime, str] | None) -> list[dict[str, Any]]:
        """Newest first, without secrets."""
        params: list[Any] = [owner_id]
        keyset = _keyset(after, params)
        return await self._db.fetch_all(
            f"SELECT {_WEBHOOK_COLUMNS} FROM alert_webhooks WHERE owner_id = %s{keyset} "
            "ORDER BY created_at DESC, id DESC LIMIT %s",
            (*params, limit),
        )

    async def get_webhook(self, owner_id: str, webhook_id: str) -> dict[str, Any] | None:
        """One of the owner's webhooks, without its secret."""
        return await self._db.fetch_one(
            f"SELECT {_WEBHOOK_COLUMNS} FROM alert_webhooks WHERE owner_id = %s AND id = %s", (owner_id, webhook_id)
        )

    async def delete_webhook(self, owner_id: str, webhook_id: str) -> bool:
        """Remove a webhook (its pending deliveries go with it); False when the owner has no such webhook."""
        return bool(
            await self._db.execute("DELETE FROM alert_webhooks WHERE owner_id = %s AND id = %s", (owner_id, webhook_id))
        )

    # --- rules ----------------------------------------------------------------------------------------

    async def subject_exists(self, owner_id: str, subject: str, value: str) -> bool:
        """Whether the owner has the container, listener or service a rule names."""
        if subject == "container_id":
            row = await self._db.fetch_one(
                "SELECT 1 FROM containers WHERE owner_id = %s AND id = %s AND status <> 'deleted'", (owner_id, value)
            )
        elif subject == "listener_id":
            row = await self._db.fetch_one("SELECT 1 FROM listeners WHERE owner_id = %s AND id = %s", (owner_id, value))
        else:
            row = await self._db.fetch_one(
                "SELECT 1 WHERE EXISTS (SELECT 1 FROM services WHERE owner_id = %s AND name = %s) "
                "OR EXISTS (SELECT 1 FROM containers WHERE owner_id = %s AND coalesce(service, name) = %s "
                "AND status <> 'deleted')",
                (owner_id, value, owner_id, value),
            )
        return row is not None

    async def create_rule(self, owner_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        row = await self._db.fetch_one(
            "WITH r AS (INSERT INTO alert_rules (owner_id, kind, container_id, service, listener_id, quota, "
            "threshold, window_seconds, for_seconds, resolve_after_seconds) "
            "VALUES (%(owner_id)s, %(kind)s, %(container_id)s, %(service)s, %(listener_id)s, %(quota)s, "
            "%(threshold)s, %(window_seconds)s, %(for_seconds)s, %(resolve_after_seconds)s) RETURNING *) "
            f"SELECT {_RULE_COLUMNS} FROM r LEFT JOIN alerts a ON a.id = r.open_alert_id",
            {"owner_id": owner_id, **fields},
        )
        assert row is not None
        return row

    async def rule_page(self, owner_id: str, limit: int, after: tuple[datetime, str] | None) -> list[dict[str, Any]]:
        params: list[Any] = [owner_id]
        keyset = ""
        if after is not None:
            keyset = " AND (r.created_at, r.id) < (%s, %s)"
            params.extend(after)
        return await self._db.fetch_all(
            f"SELECT {_RULE_COLUMNS} FROM alert_rules r LEFT JOIN alerts a ON a.id = r.open_alert_id "
            f"WHERE r.owner_id = %s{keyset} ORDER BY r.created_at DESC, r.id DESC LIMIT %s",
            (*params, limit),
        )

    async def get_rule(self, owner_id: str, rule_id: str) -> dict[str, Any] | None:
        return await self._db.fetch_one(
            f"SELECT {_RULE_COLUMNS} FROM alert_rules r LEFT JOIN alerts a ON a.id = r.open_alert_id "
            "WHERE r.owner_id = %s AND r.id = %s",
            (owner_id, rule_id),
        )

    async def delete_rule(self, owner_id: str, rule_id: str) -> bool:
        """Remove a rule and its history; False when the owner has no such rule."""
        return bool(
            await self._db.execute("DELETE FROM alert_rules WHERE owner_id = %s AND id = %s", (owner_id, rule_id))
        )

    # --- history --------------------------------------------------------------------------------------

    async def alert_page(
        self, owner_id: str, limit: int, after: tuple[datetime, str] | None, state: str | None, rule_id: str | None
    ) -> list[dict[str, Any]]:
        """Newest episode first, optionally of one state or one rule."""
        params: list[Any] = [owner_id]
        conditions = "a.owner_id = %s"
        if state is not None:
            conditions += " AND a.state = %s"
            params.append(state)
        if rule_id is not None:
            conditions += " AND a.rule_id = %s"
            params.append(rule_id)
        if after is not None:
            conditions += " AND (a.started_at, a.id) < (%s, %s)"
            params.extend(after)
        return await self._db.fetch_all(
            f"SELECT {_ALERT_COLUMNS} FROM alerts a JOIN alert_rules r ON r.id = a.rule_id "
            f"WHERE {conditions} ORDER BY a.started_at DESC, a.id DESC LIMIT %s",
            (*params, limit),
        )

    # --- request trails -------------------------------------------------------------------------------

    async def request_events(self, owner_id: str, request_id: str, limit: int) -> list[dict[str, Any]]:
        """The owner's lines of one request (shared.request_trail), oldest first; never another owner's."""
        return await self._db.fetch_all(
            "SELECT at, source, service, message, fields FROM request_events "
            "WHERE owner_id = %s AND request_id = %s ORDER BY at, id LIMIT %s",
            (owner_id, request_id, limit),
        )
