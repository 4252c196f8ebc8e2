"""Image jobs: turn an uploaded archive into a loaded, tagged, reported image; and clean one up.

Idempotent by construction: a job only acts on an image in ``uploaded`` or ``processing``; loading the
same archive twice yields the same image id, and tagging is a pointer update. A worker killed mid-job
leaves the image ``processing``; the redelivered job claims it again and finishes it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Awaitable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from shared.errors import DependencyError
from shared.observability import get_logger, log_event
from shared.storage import ObjectTooLarge
from worker.container_runtime import image_repository
from worker.context import JobContext
from worker.image_analysis import ArchiveLimits, ArchiveRejected, LoadStream, analyse_archive
from worker.settings import WorkerSettings

logger = get_logger("worker")
T = TypeVar("T")

# One lock per image reference while a fetch of it runs or waits; unused locks vanish with their last reference.
_image_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()


class JobRetry(Exception):
    """Try this job again later (a dependency failed)."""


class JobFailed(Exception):
    """This job can never succeed; record why and drop it."""


def scratch_dir(settings: WorkerSettings) -> Path:
    """This process's scratch space for archives; what a killed worker left there is removed at start."""
    path = settings.worker_work_dir / str(os.getpid())
    path.mkdir(parents=True, exist_ok=True)
    return path


def remove_stale_scratch(settings: WorkerSettings) -> None:
    """Delete archives left by workers that died mid-job (their PID directory, process gone)."""
    if not settings.worker_work_dir.is_dir():
        return
    for entry in settings.worker_work_dir.iterdir():
        if entry.is_dir() and entry.name.isdigit() and not Path(f"/proc/{entry.name}").exists():
            shutil.rmtree(entry, ignore_errors=True)


def _limits(settings: WorkerSettings) -> ArchiveLimits:
    return ArchiveLimits(
        max_archive_bytes=settings.image_max_upload_bytes,
        max_entries=settings.image_max_entries,
        max_unpacked_bytes=settings.image_max_unpacked_bytes,
        max_compression_ratio=settings.image_max_compression_ratio,
    )


async def process_image(context: JobContext, payload: dict[str, Any]) -> None:
    image_id = str(payload.get("image_id") or "")
    image = await context.images.claim(image_id)
    if image is None:
        log_event(logger, "image job skipped: image gone or finished", image_id=image_id)
        return
    started = time.perf_counter()
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=scratch_dir(context.settings), prefix="image-") as scratch:
        archive = Path(scratch) / "archive.tar"
        try:
            await context.objects.download(
                image["object_key"], archive, max_bytes=context.settings.image_max_upload_bytes
            )
        except ObjectTooLarge as exc:
            await _reject(context, image, "the upload is larger than the platform's limit")
            raise JobFailed(str(exc)) from exc
        except DependencyError as exc:
            raise JobRetry(str(exc)) from exc

        timings["download_s"] = round(time.perf_counter() - started, 3)
        # Progress is written while each stage runs, so no stage waits on the database first.
        try:
            analysis = await _while_reporting(
                context.images.progress(image_id, "validating", 30),
                asyncio.to_thread(analyse_archive, archive, _limits(context.settings)),
            )
        except ArchiveRejected as exc:
            await _reject(context, image, exc.reason)
            return

        timings["validate_s"] = round(time.perf_counter() - started - sum(timings.values()), 3)
        repository, tag = image_repository(str(image["owner_id"]), image["name"]), image["tag"]
        loaded_id = await _while_reporting(
            context.images.progress(image_id, "loading", 60), _load_and_tag(context, archive, repository, tag)
        )
        timings["load_s"] = round(time.perf_counter() - started - sum(timings.values()), 3)

    reference = f"{repository}:{tag}"
    finished = await context.images.finish(
        image_id,
        "ready",
        fields={
            "docker_image_id": loaded_id,
            "reference": reference,
            "inspection": analysis.inspection(),
            "scan": analysis.scan_report(),
            "optimization": analysis.optimization_report(),
        },
    )
    if not finished:  # deleted while we worked: leave nothing behind
        await context.runtime.remove_image(reference, expected_id=loaded_id)
    log_event(
        logger,
        "image ready" if finished else "image deleted while processing",
        image_id=image_id,
        size_bytes=analysis.size_bytes,
        findings=len(analysis.findings),
        total_s=round(time.perf_counter() - started, 3),
        **timings,
    )


async def _while_reporting(report: Coroutine[Any, Any, None], work: Awaitable[T]) -> T:
    """``work``'s result, with the progress ``report`` written meanwhile; both are over when this returns."""
    reporting = asyncio.ensure_future(report)
    try:
        result = await work
    except BaseException:
        await asyncio.wait([reporting])
        if not reporting.cancelled():
            reporting.exception()  # the work's own error is the one that counts
        raise
    await reporting
    return result


async def _load_and_tag(context: JobContext, archive: Path, repository: str, tag: str) -> str:
    """Load the validated archive into Docker (its own tags stripped) and tag it; the loaded image id."""
    loaded_id = await context.runtime.load_image(await asyncio.to_thread(LoadStream, archive))
    await context.runtime.tag_image(loaded_id, repository, tag)
    return loaded_id


async def ensure_local_image(context: JobContext, image_row: dict[str, Any]) -> str:
    """A Docker reference for the image on THIS host: the image's own reference, loaded here first from
    its archive in object storage when this host does not have it (a container moved or placed on a host
    that never processed the image).

    ``image_row`` needs ``reference``, ``docker_image_id`` and ``object_key``. The archive was validated
    when it was uploaded, so it is only loaded (its tags stripped, as at upload) and tagged. An archive
    that no longer loads as the recorded image is refused: the stored object changed since it was checked."""
    reference, expected_id = image_row.get("reference"), image_row.get("docker_image_id")
    if not reference:
        raise JobFailed("The image is not ready on any host; upload it again.")
    lock = _image_locks.get(reference)
    if lock is None:
        lock = _image_locks[reference] = asyncio.Lock()
    async with lock:  # two jobs needing the same image here load it once
        present = await context.runtime.image_id(reference)
        if present is not None and (not expected_id or present == expected_id):
            return str(reference)
        object_key = image_row.get("object_key")
        if not object_key:
            raise JobFailed("The image's archive is gone; upload the image again.")
        with tempfile.TemporaryDirectory(dir=scratch_dir(context.settings), prefix="fetch-") as scratch:
            archive = Path(scratch) / "archive.tar"
            try:
                await context.objects.download(object_key, archive, max_bytes=context.settings.image_max_upload_bytes)
            except ObjectTooLarge as exc:
                raise JobFailed("The image's archive is larger than the platform's limit.") from exc
            except DependencyError as exc:
                raise JobRetry(str(exc)) from exc
            try:
                loaded_id = await context.runtime.load_image(await asyncio.to_thread(LoadStream, archive))
            except ArchiveRejected as exc:
                raise JobFailed("The image's archive is damaged; upload the image again.") from exc
        if expected_id and loaded_id != expected_id:
            raise JobFailed("The image's archive no longer matches the uploaded image; upload it again.")
        repository, tag = str(reference).rsplit(":", 1)
        await context.runtime.tag_image(loaded_id, repository, tag)
    log_event(logger, "image fetched onto this host", reference=reference, object_key=object_key)
    return str(reference)


async def _reject(context: JobContext, image: dict[str, Any], reason: str) -> None:
    await context.images.finish(str(image["id"]), "rejected", reason=reason)
    await context.objects.delete(image["object_key"])
    log_event(logger, "image rejected", image_id=str(image["id"]), reason=reason)


async def delete_image(context: JobContext, payload: dict[str, Any]) -> None:
    """Remove a deleted image's archive and this host's copy (other hosts' reconcilers do the same).

    The job is sent just before the record's delete commits: while the record is still there, wait (retry);
    a delete that never committed runs out of tries and removes nothing."""
    if payload.get("image_id") and await context.images.exists(str(payload["image_id"])):
        raise JobRetry("the image's record is still there: its delete has not committed")
    if payload.get("object_key"):
        await context.objects.delete(str(payload["object_key"]))
    if payload.get("reference"):
        await context.runtime.remove_image(str(payload["reference"]), expected_id=payload.get("docker_image_id"))


async def fail_image(context: JobContext, payload: dict[str, Any], reason: str) -> None:
    await context.images.fail(str(payload.get("image_id") or ""), reason)


async def collect_orphan_images(context: JobContext) -> list[str]:
    """Remove this host's copies of images whose record is gone (a lost delete job, another host's
    delete); returns the references removed."""
    references = await context.runtime.platform_image_references()
    removed = []
    for reference in await context.images.orphaned(references):
        if await context.runtime.remove_image(reference):
            removed.append(reference)
    if removed:
        log_event(logger, "removed orphaned images", references=removed)
    return removed
