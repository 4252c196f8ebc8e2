"""The ``plans`` table an admin edits, users' plan and suspension, and what each user holds now."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from psycopg.types.json import Jsonb

from shared.billing.meters import METERS
from shared.db import Database
from shared.errors import NotFound, ValidationFailed

# The quotas a plan holds, with the words a person reads.
QUOTA_FIELDS: dict[str, str] = {
    "max_containers": "containers",
    "max_memory_mb_per_container": "MB of memory per container",
    "max_memory_mb_total": "MB of memory in total",
    "max_listeners": "listeners",
    "max_image_storage_mb": "MB of image storage",
}
_PLAN_COLUMNS = (
    "name, max_containers, max_memory_mb_per_container, max_memory_mb_total, max_listeners, "
    "max_image_storage_mb, currency, unit_prices, api_requests_per_minute, updated_at"
)
_PLAN_COLUMNS_OF_P = ", ".join("p." + column.strip() for column in _PLAN_COLUMNS.split(","))
# Containers that hold a reservation of their own: everything not deleted nor being deleted, except a
# service's replicas, which the service's declared ``replicas`` reserve instead (see ``usage``).
_LIVE_CONTAINER = "owner_id = %s AND status <> 'deleted' AND desired_state <> 'deleted' AND service_id IS NULL"
# Per service of an owner: its declared replicas and the memory per replica of its target release.
_SERVICE_RESERVATIONS = (
    "SELECT s.name, s.replicas, COALESCE((r.config->>'memory_mb')::int, 0) AS memory_mb FROM services s "
    "LEFT JOIN service_releases r ON r.service_id = s.id AND r.number = s.release_number WHERE s.owner_id = %s"
)
MB = 1024 * 1024
# Plan fields other than quotas and prices that an admin may change.
_PLAN_SCALARS = ("currency", "api_requests_per_minute")


@dataclass(frozen=True)
class Plan:
    name: str
    max_containers: int
    max_memory_mb_per_container: int
    max_memory_mb_total: int
    max_listeners: int
    max_image_storage_mb: int
    currency: str
    unit_prices: dict[str, Decimal] = field(default_factory=dict)
    # API requests per minute per user (None: the OpenAPI document's per-user limits); shared.plan_rate_limits
    api_requests_per_minute: int | None = None

    def price(self, meter: str) -> Decimal:
        """Minor units per pricing unit of ``meter`` (0 when the plan does not price it)."""
        return self.unit_prices.get(meter, Decimal(0))


@dataclass(frozen=True)
class Usage:
    """What a user holds now, in the quotas' units."""

    containers: int
    memory_mb_total: int
    listeners: int
    image_storage_mb: int


def _plan(row: dict[str, Any]) -> Plan:
    return Plan(
        name=row["name"],
        max_containers=row["max_containers"],
        max_memory_mb_per_container=row["max_memory_mb_per_container"],
        max_memory_mb_total=row["max_memory_mb_total"],
        max_listeners=row["max_listeners"],
        max_image_storage_mb=row["max_image_storage_mb"],
        currency=row["currency"],
        unit_prices={name: Decimal(str(value)) for name, value in (row["unit_prices"] or {}).items()},
        api_requests_per_minute=row["api_requests_per_minute"],
    )


def validate_prices(prices: dict[str, str]) -> dict[str, str]:
    """Prices keyed by known meters, each a non-negative exact decimal (as a string); 422 otherwise."""
    clean: dict[str, str] = {}
    for meter, text in prices.items():
        if meter not in METERS:
            raise ValidationFailed(f"unit_prices: {meter!r} is not a meter; one of {', '.join(METERS)}.")
        try:
            value = Decimal(text)
        except ArithmeticError as exc:
            raise ValidationFailed(f"unit_prices.{meter}: {text!r} is not a decimal number.") from exc
        if not value.is_finite() or value < 0:
            raise ValidationFailed(f"unit_prices.{meter}: must be a finite number >= 0.")
        clean[meter] = str(value)
    return clean


class PlanStore:
    """The plans table, users' plan and suspension, and what each user holds now."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def plans(self) -> list[Plan]:
        """Every plan, by name."""
        return [_plan(row) for row in await self._db.fetch_all(f"SELECT {_PLAN_COLUMNS} FROM plans ORDER BY name")]

    async def plan(self, name: str) -> Plan | None:
        """One plan, or None."""
        row = await self._db.fetch_one(f"SELECT {_PLAN_COLUMNS} FROM plans WHERE name = %s", (name,))
        return _plan(row) if row else None

    async def update_plan(self, name: str, changes: dict[str, Any]) -> Plan:
        """Change a plan's quotas or prices (``unit_prices`` merges into the present ones)."""
        sets = [f"{column} = %({column})s" for column in changes if column in QUOTA_FIELDS or column in _PLAN_SCALARS]
        params: dict[str, Any] = {**changes, "name": name}
        if "unit_prices" in changes:
            sets.append("unit_prices = unit_prices || %(unit_prices)s")
            params["unit_prices"] = Jsonb(validate_prices(changes["unit_prices"]))
        sets.append("updated_at = now()")
        row = await self._db.fetch_one(
            f"UPDATE plans SET {', '.join(sets)} WHERE name = %(name)s RETURNING {_PLAN_COLUMNS}",
            params,
        )
        if row is None:
            raise NotFound(f"No plan {name}.")
        return _plan(row)

    async def account(self, user_id: str) -> tuple[Plan, bool]:
        """The user's plan (read now, not from a token) and whether the account is suspended."""
        row = await self._db.fetch_one(
            f"SELECT {_PLAN_COLUMNS_OF_P}, u.suspended_at IS NOT NULL AS suspended "
            "FROM users u JOIN plans p ON p.name = u.plan WHERE u.id = %s::uuid",
            (user_id,),
        )
        if row is None:
            raise NotFound("No such account.")
        return _plan(row), bool(row["suspended"])

    async def usage(self, user_id: str) -> Usage:
        """What the user holds now: containers and their memory, listeners, stored image megabytes.

        A container counts while it is not deleted; a service counts its declared ``replicas`` at its target
        release's memory, whatever replicas exist at the moment: the extra replicas of a rolling deploy
        (``max_surge``) and those still draining after a scale-down are transient and not counted (as on
        Heroku or Fly.io; their time is metered and billed all the same)."""
        row = await self._db.fetch_one(
            "SELECT "
            f"(SELECT count(*) FROM containers WHERE {_LIVE_CONTAINER}) AS containers, "
            f"(SELECT COALESCE(sum(memory_mb), 0) FROM containers WHERE {_LIVE_CONTAINER}) AS memory_mb, "
            "(SELECT count(*) FROM listeners WHERE owner_id = %s) AS listeners, "
            "(SELECT COALESCE(sum(upload_bytes), 0) FROM images WHERE owner_id = %s) AS image_bytes",
            (user_id, user_id, user_id, user_id),
        )
        assert row is not None
        services = await self.service_reservations(user_id)
        return Usage(
            containers=int(row["containers"]) + sum(replicas for replicas, _ in services.values()),
            memory_mb_total=int(row["memory_mb"]) + sum(replicas * memory for replicas, memory in services.values()),
            listeners=int(row["listeners"]),
            image_storage_mb=-(-int(row["image_bytes"]) // MB),
        )

    async def service_reservations(self, user_id: str) -> dict[str, tuple[int, int]]:
        """Per service of the user: (declared replicas, MB per replica of its target release)."""
        rows = await self._db.fetch_all(_SERVICE_RESERVATIONS, (user_id,))
        return {row["name"]: (int(row["replicas"]), int(row["memory_mb"])) for row in rows}

    async def set_user_plan(self, user_id: str, plan: str) -> bool:
        """Put the user on ``plan`` (which must exist); False when there is no such user."""
        return (
            await self._db.execute(
                "UPDATE users SET plan = %s, updated_at = now() WHERE id = %s::uuid AND status <> 'deleted'",
                (plan, user_id),
            )
            > 0
        )

    async def set_suspended(self, user_id: str, suspended: bool, reason: str | None) -> bool:
        """Suspend (keeping the first suspension's time) or lift it; False when there is no such user."""
        return (
            await self._db.execute(
                "UPDATE users SET suspended_at = CASE WHEN %(s)s THEN COALESCE(suspended_at, now()) END, "
                "suspended_reason = CASE WHEN %(s)s THEN %(reason)s END, updated_at = now() "
                "WHERE id = %(id)s::uuid AND status <> 'deleted'",
                {"s": suspended, "reason": reason, "id": user_id},
            )
            > 0
        )
