"""What a caller's plan lets them run: the one check every path that adds containers goes through.

The containers function calls ``check_capacity`` for a single container, and the services function
``check_service_capacity`` when a service is created, scaled or deployed: a service reserves its declared
replicas; the ``max_surge`` replicas a rolling deploy adds for a while count against no quota (as on Heroku
or Fly.io; their time is still metered). Quotas that depend on what the owner already runs belong here too,
so no path can skip them; the plans' quotas themselves live in the ``plans`` table (``shared.billing``).

To be atomic, a check and the write it guards run together inside ``quota_lock(owner_id)``: one transaction
holding the owner's lock, which the stores' queries inside the block join.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from shared.billing import quotas
from shared.billing.quotas import check_container_quota, check_image_quota, check_listener_quota, ensure_not_suspended
from shared.config import get_function_settings
from shared.db import Database, get_database

# The most replicas one service of a plan may declare (a rolling deploy may run max_surge more meanwhile).
PLAN_MAX_REPLICAS = {"free": 10, "pro": 50, "team": 200}
# The largest plan's limit: what the API documents as the bound of ``replicas``.
MAX_PLAN_REPLICAS = max(PLAN_MAX_REPLICAS.values())


def plan_max_replicas(plan: str) -> int:
    return PLAN_MAX_REPLICAS.get(plan, PLAN_MAX_REPLICAS["free"])


async def check_capacity(owner_id: str, plan: str, added_containers: int, memory_mb: int) -> None:
    """Refuse (403 quota_exceeded, with the quota, its limit and the use) ``added_containers`` more containers
    of ``memory_mb`` each for ``owner_id`` beyond what they hold now, by the quotas of the plan in the
    ``plans`` table (``shared.billing.quotas``); 403 account_suspended for a suspended account. ``plan`` (the
    token's) is not trusted: the user's plan is read from the database, so a plan change applies at once."""
    del plan
    await check_container_quota(_database(), owner_id, added_containers, memory_mb)


async def check_service_capacity(owner_id: str, service: str, replicas: int, memory_mb: int) -> None:
    """Refuse (403 quota_exceeded) ``service`` declaring ``replicas`` of ``memory_mb`` each when that grows
    the owner's reservation (the service's own counted as it is now) beyond the plan; 403 account_suspended."""
    await quotas.check_service_quota(_database(), owner_id, service, replicas, memory_mb)


@asynccontextmanager
async def quota_lock(owner_id: str) -> AsyncIterator[None]:
    """Run a quota check and the write it guards as one transaction under the owner's lock (see above)."""
    async with quotas.quota_lock(_database(), owner_id):
        yield


def _database() -> Database:
    settings = get_function_settings()
    return get_database(settings.database_url, settings.database_pool_max)


async def check_may_start(owner_id: str) -> None:
    """403 account_suspended when ``owner_id``'s account is suspended (starting a container spends)."""
    await ensure_not_suspended(_database(), owner_id)


async def check_listener_capacity(owner_id: str) -> None:
    """Refuse one more listener beyond the owner's plan (403 quota_exceeded; account_suspended)."""
    await check_listener_quota(_database(), owner_id)


async def check_image_capacity(owner_id: str) -> None:
    """Refuse a new image once the owner's stored images fill the plan (403 quota_exceeded; account_suspended)."""
    await check_image_quota(_database(), owner_id)
