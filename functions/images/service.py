"""Image logic: records, presigned uploads, completion, listing and deletion. No HTTP, no boto3 here."""

from __future__ import annotations

import uuid
from typing import Any

from functions.images.models import Accepted, CreatedImage, Image, ImagePage, Upload
from functions.images.store import ImageStore
from shared.capacity import check_image_capacity, quota_lock
from shared.config import FunctionSettings
from shared.errors import Conflict, NotFound, PayloadTooLarge
from shared.jobs import Job, JobKind, JobQueue, delete_image_job
from shared.pagination import decode_cursor, page_of, parse_id
from shared.storage import ObjectStore


def _image(row: dict[str, Any]) -> Image:
    inspection = row.get("inspection") or {}
    return Image(
        id=str(row["id"]),
        name=row["name"],
        tag=row["tag"],
        status=row["status"],
        reason=row["reason"],
        progress=row["progress"],
        upload_bytes=row["upload_bytes"],
        scan=row["scan"],
        optimization=row["optimization"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        **inspection,
    )


def _object_key(owner_id: str, image_id: str) -> str:
    return f"uploads/{owner_id}/{image_id}.tar"


def _upload(store: ObjectStore, key: str, settings: FunctionSettings) -> Upload:
    presigned = store.presigned_upload(
        key, max_bytes=settings.image_max_upload_bytes, expires_in=settings.image_upload_expires_seconds
    )
    return Upload(
        url=presigned.url, fields=presigned.fields, max_bytes=presigned.max_bytes, expires_in=presigned.expires_in
    )


async def create_image(
    images: ImageStore, objects: ObjectStore, settings: FunctionSettings, owner_id: str, name: str, tag: str
) -> CreatedImage:
    image_id = str(uuid.uuid4())
    async with quota_lock(owner_id):  # the check and the insert together, so concurrent creates cannot pass it
        await check_image_capacity(owner_id)
        row = await images.create(owner_id, name, tag, image_id, _object_key(owner_id, image_id))
    if row is None:
        raise Conflict(f"You already have an image named {name}:{tag}; pick another tag or delete it first.")
    upload = _upload(objects, row["object_key"], settings)
    return CreatedImage(**_image(row).model_dump(), upload=upload)


async def renew_upload(
    images: ImageStore, objects: ObjectStore, settings: FunctionSettings, owner_id: str, image_id: str
) -> CreatedImage:
    row = await _owned(images, owner_id, image_id)
    if row["status"] != "pending_upload":
        raise Conflict(f"Image {image_id} is {row['status']}; only an image awaiting its upload gets a new URL.")
    return CreatedImage(**_image(row).model_dump(), upload=_upload(objects, row["object_key"], settings))


async def _owned(images: ImageStore, owner_id: str, image_id: str) -> dict[str, Any]:
    row = await images.get(owner_id, parse_id(image_id))
    if row is None:
        raise NotFound(f"No image {image_id}.")
    return row


async def get_image(images: ImageStore, owner_id: str, image_id: str) -> Image:
    return _image(await _owned(images, owner_id, image_id))


async def list_images(images: ImageStore, owner_id: str, limit: int, cursor: str | None) -> ImagePage:
    rows = await images.page(owner_id, limit + 1, decode_cursor(cursor) if cursor is not None else None)
    items, next_cursor = page_of(rows, limit, _image)
    return ImagePage(items=items, next_cursor=next_cursor)


async def complete_upload(
    images: ImageStore, objects: ObjectStore, queue: JobQueue, settings: FunctionSettings, owner_id: str, image_id: str
) -> Accepted:
    row = await _owned(images, owner_id, image_id)
    if row["status"] == "processing":
        return Accepted(id=str(row["id"]), status="processing")
    if row["status"] not in ("pending_upload", "uploaded", "failed"):
        raise Conflict(f"Image {image_id} is already {row['status']}; create a new image to upload again.")
    stored = await objects.stat(row["object_key"])
    if stored is None:
        raise Conflict(
            "Nothing was uploaded yet: POST the archive to the upload URL with its fields, then call complete again.",
        )
    if stored.size > settings.image_max_upload_bytes:
        # moto and some S3-compatible stores don't enforce the presigned size condition: this does.
        await objects.delete(row["object_key"])
        raise PayloadTooLarge(
            f"The upload is {stored.size} bytes; the limit is "
            f"{settings.image_max_upload_bytes}. Shrink the image and upload it again."
        )
    updated = await images.mark_uploaded(owner_id, str(row["id"]), stored.size)
    if updated is None:
        latest = await _owned(images, owner_id, image_id)
        return Accepted(id=str(latest["id"]), status=latest["status"])
    await queue.send(Job(JobKind.PROCESS_IMAGE, {"image_id": str(row["id"])}))
    return Accepted(id=str(row["id"]), status="uploaded")


async def delete_image(images: ImageStore, queue: JobQueue, owner_id: str, image_id: str) -> None:
    users = await images.containers_using(owner_id, parse_id(image_id))
    if users:
        raise Conflict(
            f"The image is used by container(s) {', '.join(users)}; delete them first, then delete the image."
        )

    async def clean_up(row: dict[str, Any]) -> None:
        # Storage and every host's copy are cleaned by the workers. Sent before the record's delete commits,
        # so a crash between the two cannot leave the archive behind; the worker acts only once the record
        # is gone (a delete that never commits leaves everything in place).
        await queue.send(delete_image_job(row))

    row = await images.delete(owner_id, parse_id(image_id), before_commit=clean_up)
    if row is None:
        raise NotFound(f"No image {image_id}.")
