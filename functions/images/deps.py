"""Dependencies of the images routes: settings, the image store, object storage and the job queue."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from functions.images.store import ImageStore
from shared.config import FunctionSettings, get_function_settings
from shared.db import get_database
from shared.jobs import SqsJobQueue, get_job_queue
from shared.storage import S3ObjectStore, get_object_store


async def _images() -> ImageStore:
    settings = get_function_settings()
    return ImageStore(get_database(settings.database_url, settings.database_pool_max))


async def _objects() -> S3ObjectStore:
    return get_object_store(get_function_settings())


async def _queue() -> SqsJobQueue:
    return get_job_queue(get_function_settings())


Settings = Annotated[FunctionSettings, Depends(get_function_settings)]
Images = Annotated[ImageStore, Depends(_images)]
Objects = Annotated[S3ObjectStore, Depends(_objects)]
Queue = Annotated[SqsJobQueue, Depends(_queue)]
