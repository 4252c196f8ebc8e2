"""Dependencies of the services routes: settings, the service store and the host job queues."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from functions.services.store import ServiceStore
from shared.config import FunctionSettings, get_function_settings
from shared.db import get_database
from shared.jobs import SqsHostJobQueues


async def _services() -> ServiceStore:
    settings = get_function_settings()
    return ServiceStore(get_database(settings.database_url, settings.database_pool_max))


async def _queue() -> SqsHostJobQueues:
    """A deleted service's replicas are converged by the workers of their hosts."""
    return SqsHostJobQueues(get_function_settings())


Settings = Annotated[FunctionSettings, Depends(get_function_settings)]
Services = Annotated[ServiceStore, Depends(_services)]
Queue = Annotated[SqsHostJobQueues, Depends(_queue)]
