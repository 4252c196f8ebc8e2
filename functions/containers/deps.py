"""Dependencies of the containers routes: settings, the stores and the job queue."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from functions.containers.store import ContainerStore
from shared.config import FunctionSettings, get_function_settings
from shared.db import get_database
from shared.host_store import HostStore
from shared.jobs import SqsHostJobQueues


async def _containers() -> ContainerStore:
    settings = get_function_settings()
    return ContainerStore(get_database(settings.database_url, settings.database_pool_max))


async def _hosts() -> HostStore:
    settings = get_function_settings()
    return HostStore(get_database(settings.database_url, settings.database_pool_max))


async def _queue() -> SqsHostJobQueues:
    """Container jobs go to the queue of the container's host (its worker created it)."""
    return SqsHostJobQueues(get_function_settings())


Settings = Annotated[FunctionSettings, Depends(get_function_settings)]
Containers = Annotated[ContainerStore, Depends(_containers)]
Hosts = Annotated[HostStore, Depends(_hosts)]
Queue = Annotated[SqsHostJobQueues, Depends(_queue)]
