"""Dependencies of the containers routes: settings, the stores, the job queue and the log reader."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends

from functions.containers.store import ContainerStore
from shared.config import FunctionSettings, get_function_settings
from shared.db import get_database
from shared.errors import Conflict, ServiceUnavailable
from shared.host_store import HostStore
from shared.jobs import SqsJobQueue, get_job_queue


async def _containers() -> ContainerStore:
    settings = get_function_settings()
    return ContainerStore(get_database(settings.database_url, settings.database_pool_max))


async def _hosts() -> HostStore:
    settings = get_function_settings()
    return HostStore(get_database(settings.database_url, settings.database_pool_max))


async def _queue() -> SqsJobQueue:
    return get_job_queue(get_function_settings())


class DockerLogReader:
    """Reads logs from the Docker Engine of the machine this function runs on.

    Only right when the container's host is this machine (local and single-host installs); on AWS the
    function cannot reach a host's Docker, and logs will have to come from the host workers instead."""

    async def container_logs(
        self, container_id: str, tail: int | None = None, since: datetime | None = None
    ) -> list[dict[str, Any]]:
        from docker.errors import DockerException

        from shared.container_runtime import DockerRuntime, RuntimeFinal, RuntimeRetryable

        try:
            runtime = DockerRuntime(timeout=10)
        except DockerException as exc:
            raise ServiceUnavailable("The container's host cannot be reached for logs right now.") from exc
        try:
            return await runtime.container_logs(container_id, tail=tail, since=since)
        except RuntimeFinal as exc:
            raise Conflict("The container's logs are not reachable from here.") from exc
        except RuntimeRetryable as exc:
            raise ServiceUnavailable("The container's host cannot be reached for logs right now.") from exc


async def _logs() -> DockerLogReader:
    return DockerLogReader()


Settings = Annotated[FunctionSettings, Depends(get_function_settings)]
Containers = Annotated[ContainerStore, Depends(_containers)]
Hosts = Annotated[HostStore, Depends(_hosts)]
Queue = Annotated[SqsJobQueue, Depends(_queue)]
LogsReader = Annotated[DockerLogReader, Depends(_logs)]
