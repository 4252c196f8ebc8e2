"""Quotas, checked where spending starts.

Quotas are enforced only when something new would spend (creating or scaling containers or a service's
replicas, creating a listener, uploading an image): nothing running is ever stopped because a plan shrank.
Every check reads the user's plan from the database, never from the access token, so a plan change takes
effect on the next request. ``check_container_quota`` is the one function the containers and services code
both call.

A suspended account (``users.suspended_at``) may sign in and read, but every create call answers 403
``account_suspended``.

A check and the write it guards are atomic per owner: the caller runs both inside ``quota_lock``, one
transaction that holds an advisory lock on the owner (every quota of one owner shares it), so two concurrent
creates of one tenant are checked one after the other, each seeing the other's committed row.

A service reserves its declared replicas (``PlanStore.usage``): creating it, scaling it up or deploying a
release with more memory per replica is checked with ``check_service_quota`` against the service's own
reservation; the surge replicas of a rolling deploy are transient and count against no quota.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from shared.billing.plan_store import Plan, PlanStore, Usage
from shared.db import Database
from shared.errors import AccountSuspended, QuotaExceeded


@asynccontextmanager
async def quota_lock(database: Database, owner_id: str) -> AsyncIterator[None]:
    """One transaction, holding the owner's quota lock, that every query inside the block joins; the checks
    and the write inside it commit together at the end of the block."""
    async with database.one_transaction() as conn:
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('quota'), hashtext(%s))", (str(owner_id),))
        yield


async def _spending_account(plans: PlanStore, owner_id: str) -> Plan:
    plan, suspended = await plans.account(owner_id)
    if suspended:
        raise AccountSuspended()
    return plan


async def ensure_not_suspended(database: Database, owner_id: str) -> None:
    """403 ``account_suspended`` when the account is suspended."""
    await _spending_account(PlanStore(database), owner_id)


async def check_container_quota(database: Database, owner_id: str, added_count: int, memory_mb: int) -> None:
    """Refuse (403 ``quota_exceeded``) adding ``added_count`` containers (or replicas) of ``memory_mb`` each
    beyond the owner's plan; 403 ``account_suspended`` for a suspended account. Scaling down passes."""
    plans = PlanStore(database)
    plan = await _spending_account(plans, owner_id)
    _check_per_container(plan, memory_mb)
    if added_count <= 0:
        return
    _check_containers(plan, await plans.usage(owner_id), added_count, added_count * memory_mb)


def _check_per_container(plan: Plan, memory_mb: int) -> None:
    if memory_mb > plan.max_memory_mb_per_container:
        raise QuotaExceeded(
            f"{memory_mb} MB is above the {plan.name} plan's {plan.max_memory_mb_per_container} MB per container.",
            quota="max_memory_mb_per_container",
            limit=plan.max_memory_mb_per_container,
            used=memory_mb,
        )


def _check_containers(plan: Plan, use: Usage, added_count: int, added_memory_mb: int) -> None:
    """Refuse growth (``added_count`` containers, ``added_memory_mb`` in all) beyond the plan; shrinking passes."""
    if added_count > 0 and use.containers + added_count > plan.max_containers:
        raise QuotaExceeded(
            f"The {plan.name} plan allows {plan.max_containers} containers; you have {use.containers} and asked "
            f"for {added_count} more.",
            quota="max_containers",
            limit=plan.max_containers,
            used=use.containers,
        )
    if added_memory_mb > 0 and use.memory_mb_total + added_memory_mb > plan.max_memory_mb_total:
        raise QuotaExceeded(
            f"The {plan.name} plan allows {plan.max_memory_mb_total} MB of memory in total; your containers hold "
            f"{use.memory_mb_total} MB and {added_memory_mb} MB more would pass it.",
            quota="max_memory_mb_total",
            limit=plan.max_memory_mb_total,
            used=use.memory_mb_total,
        )


async def check_service_quota(database: Database, owner_id: str, service: str, replicas: int, memory_mb: int) -> None:
    """Refuse (403 ``quota_exceeded``) ``service`` declaring ``replicas`` of ``memory_mb`` each (created, scaled
    or deployed) when that grows the owner's reservation beyond the plan; 403 ``account_suspended``."""
    plans = PlanStore(database)
    plan = await _spending_account(plans, owner_id)
    _check_per_container(plan, memory_mb)
    held_replicas, held_memory_mb = (await plans.service_reservations(owner_id)).get(service, (0, 0))
    _check_containers(
        plan,
        await plans.usage(owner_id),
        replicas - held_replicas,
        replicas * memory_mb - held_replicas * held_memory_mb,
    )


async def check_listener_quota(database: Database, owner_id: str) -> None:
    """Refuse one more listener beyond the owner's plan (or for a suspended account)."""
    plans = PlanStore(database)
    plan = await _spending_account(plans, owner_id)
    use = await plans.usage(owner_id)
    if use.listeners + 1 > plan.max_listeners:
        raise QuotaExceeded(
            f"The {plan.name} plan allows {plan.max_listeners} listeners; you have {use.listeners}.",
            quota="max_listeners",
            limit=plan.max_listeners,
            used=use.listeners,
        )


async def check_image_quota(database: Database, owner_id: str) -> None:
    """Refuse a new image once the owner's stored images reach the plan's storage (or when suspended)."""
    plans = PlanStore(database)
    plan = await _spending_account(plans, owner_id)
    use = await plans.usage(owner_id)
    if use.image_storage_mb >= plan.max_image_storage_mb:
        raise QuotaExceeded(
            f"The {plan.name} plan allows {plan.max_image_storage_mb} MB of images; yours take "
            f"{use.image_storage_mb} MB. Delete some first.",
            quota="max_image_storage_mb",
            limit=plan.max_image_storage_mb,
            used=use.image_storage_mb,
        )
