"""Object storage port (image archives) with its S3 adapter (moto locally, LocalStack or AWS)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shared.config import FunctionSettings
from shared.errors import DependencyError


@dataclass(frozen=True)
class PresignedUpload:
    url: str
    fields: dict[str, str]
    max_bytes: int
    expires_in: int


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int


class ObjectStore(Protocol):
    def presigned_upload(self, key: str, *, max_bytes: int, expires_in: int) -> PresignedUpload:
        """A browser/curl-friendly POST that stores at most ``max_bytes`` at ``key``."""
        ...

    async def stat(self, key: str) -> StoredObject | None:
        """The object's size, or None when nothing is stored at ``key``."""
        ...

    async def download(self, key: str, destination: Path, *, max_bytes: int) -> int:
        """Stream the object to ``destination``; refuses objects over ``max_bytes``; returns bytes."""
        ...

    async def delete(self, key: str) -> None:
        """Remove ``key`` (no error when it is already gone)."""
        ...


class ObjectTooLarge(Exception):
    """The stored object is bigger than the caller allows."""


class S3ObjectStore:
    """ObjectStore over the S3 API. boto3 is blocking, so network calls run in a worker thread."""

    def __init__(self, bucket: str, client: Any) -> None:
        self._bucket = bucket
        self._s3 = client

    def presigned_upload(self, key: str, *, max_bytes: int, expires_in: int) -> PresignedUpload:
        post = self._s3.generate_presigned_post(
            Bucket=self._bucket,
            Key=key,
            Fields={"Content-Type": "application/x-tar"},
            Conditions=[["content-length-range", 1, max_bytes], {"Content-Type": "application/x-tar"}],
            ExpiresIn=expires_in,
        )
        return PresignedUpload(post["url"], dict(post["fields"]), max_bytes, expires_in)

    async def stat(self, key: str) -> StoredObject | None:
        try:
            head = await asyncio.to_thread(self._s3.head_object, Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise DependencyError("Object storage refused the request; try again shortly.") from exc
        except BotoCoreError as exc:
            raise DependencyError("Object storage is unreachable; try again shortly.") from exc
        return StoredObject(key, int(head["ContentLength"]))

    async def download(self, key: str, destination: Path, *, max_bytes: int) -> int:
        def copy() -> int:
            body = self._s3.get_object(Bucket=self._bucket, Key=key)["Body"]
            written = 0
            with destination.open("wb") as out:
                for chunk in body.iter_chunks(chunk_size=1024 * 1024):
                    written += len(chunk)
                    if written > max_bytes:
                        raise ObjectTooLarge(f"{key} is larger than {max_bytes} bytes")
                    out.write(chunk)
            return written

        try:
            return await asyncio.to_thread(copy)
        except (ClientError, BotoCoreError) as exc:
            raise DependencyError("Object storage failed while downloading; the job will retry.") from exc

    async def delete(self, key: str) -> None:
        try:
            await asyncio.to_thread(self._s3.delete_object, Bucket=self._bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise DependencyError("Object storage failed while deleting; try again shortly.") from exc


def aws_client(service: str, settings: FunctionSettings) -> Any:
    """A boto3 client for ``service`` at the configured endpoint (moto, LocalStack or AWS)."""
    return _client(service, settings.aws_endpoint, settings.aws_region)


@lru_cache
def _client(service: str, endpoint: str | None, region: str) -> Any:
    session = boto3.session.Session()
    extra: dict[str, Any] = {}
    if endpoint and session.get_credentials() is None:
        # A local endpoint (moto/LocalStack) accepts any credentials; AWS needs real ones.
        extra = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
    return session.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        config=Config(
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
            s3={"addressing_style": "path"},
        ),
        **extra,
    )


def get_object_store(settings: FunctionSettings) -> S3ObjectStore:
    return S3ObjectStore(settings.images_bucket, aws_client("s3", settings))
