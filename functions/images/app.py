"""The images function: image records, presigned uploads and the worker's reports (/api/images)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from functions.images import service
from functions.images.deps import Images, Objects, Queue, Settings
from functions.images.models import Accepted, CreatedImage, CreateImage, Image, ImagePage
from shared.http_app import create_app, lambda_handler
from shared.identity import CurrentUser

router = APIRouter(prefix="/api/images", tags=["images"])


@router.post("", status_code=201, response_model=CreatedImage)
async def create_image(
    body: CreateImage, user: CurrentUser, images: Images, objects: Objects, settings: Settings
) -> CreatedImage:
    return await service.create_image(images, objects, settings, user.user_id, body.name, body.tag)


@router.get("", response_model=ImagePage)
async def list_images(
    user: CurrentUser,
    images: Images,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> ImagePage:
    return await service.list_images(images, user.user_id, limit, cursor)


@router.get("/{image_id}", response_model=Image)
async def get_image(image_id: str, user: CurrentUser, images: Images) -> Image:
    return await service.get_image(images, user.user_id, image_id)


@router.post("/{image_id}/upload", status_code=200, response_model=CreatedImage)
async def renew_upload(
    image_id: str, user: CurrentUser, images: Images, objects: Objects, settings: Settings
) -> CreatedImage:
    return await service.renew_upload(images, objects, settings, user.user_id, image_id)


@router.post("/{image_id}/complete", status_code=202, response_model=Accepted)
async def complete_upload(
    image_id: str, user: CurrentUser, images: Images, objects: Objects, queue: Queue, settings: Settings
) -> Accepted:
    return await service.complete_upload(images, objects, queue, settings, user.user_id, image_id)


@router.delete("/{image_id}", status_code=204, response_class=Response)
async def delete_image(image_id: str, user: CurrentUser, images: Images, queue: Queue) -> Response:
    await service.delete_image(images, queue, user.user_id, image_id)
    return Response(status_code=204)


app = create_app("images", [router])
handler = lambda_handler(app)
