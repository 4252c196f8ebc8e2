"""The host worker against a real SQS (moto server), PostgreSQL and Docker: delivery, retries, the
dead-letter queue, the removal of orphaned images, and the two queues it polls (its host's own, for
container jobs, and the shared one, for image jobs) sharing its slots and its drain."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from cli.local_stack import LocalStackSettings, ensure_aws_resources
from shared.db import Database, get_database
from shared.host_store import HostStore
from shared.jobs import JOBS_MAX_RECEIVE_COUNT, Job, JobKind, get_host_job_queue, get_job_queue, host_queue_name
from shared.storage import aws_client
from tests.conftest import RUN_ID
from tests.integration.test_rescheduling import create_tenant, place_container, remove_tenant
from tests.support.waiting import wait_until_async
from worker import main as worker_main
from worker.container_runtime import CONTAINER_ID_LABEL
from worker.image_jobs import JobRetry, collect_orphan_images
from worker.main import Worker, build_worker
from worker.settings import WorkerSettings

pytestmark = pytest.mark.docker


@pytest.fixture
async def queues(local_aws: str) -> AsyncIterator[dict[str, Any]]:
    """A job queue of the test's own, redriving to its dead-letter queue after 2 receives."""
    name = f"jobs-{secrets.token_hex(4)}"
    settings = LocalStackSettings(jobs_queue=name, jobs_dead_letter_queue=name + "-dlq")
    urls = ensure_aws_resources(settings, local_aws)
    sqs = aws_client("sqs", WorkerSettings())
    sqs.set_queue_attributes(
        QueueUrl=urls["jobs_queue"],
        Attributes={
            "VisibilityTimeout": "1",
            "RedrivePolicy": json.dumps(
                {
                    "deadLetterTargetArn": sqs.get_queue_attributes(
                        QueueUrl=urls["dead_letter_queue"], AttributeNames=["QueueArn"]
                    )["Attributes"]["QueueArn"],
                    "maxReceiveCount": 2,
                }
            ),
        },
    )
    yield {"name": name, "sqs": sqs, **urls}
    for url in (urls["jobs_queue"], urls["dead_letter_queue"]):
        sqs.delete_queue(QueueUrl=url)


def _worker(queues: dict[str, Any], **overrides: Any) -> Worker:
    settings = WorkerSettings(
        jobs_queue=queues["name"], worker_wait_seconds=1, worker_visibility_seconds=10, **overrides
    )
    return build_worker(settings)


async def _run_until(worker: Worker, check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Run the worker until ``check()`` (called off the event loop) holds, then stop it and let it finish."""
    task = asyncio.create_task(worker.run())
    try:
        await wait_until_async(
            lambda: asyncio.to_thread(check), timeout=timeout, interval=0.2, message=f"timed out waiting for {what}"
        )
    finally:
        worker.stop()
        await asyncio.wait_for(task, 15)


def _queue_depth(sqs: Any, url: str) -> int:
    """Messages in the queue, visible or not (read without receiving any)."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def _messages(sqs: Any, url: str) -> list[str]:
    answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    return [message["Body"] for message in answer.get("Messages", [])]


async def test_poisoned_messages_reach_the_dead_letter_queue(queues: dict[str, Any]) -> None:
    # GIVEN a message that is no job at all and a job of a kind no worker knows
    sqs = queues["sqs"]
    sqs.send_message(QueueUrl=queues["jobs_queue"], MessageBody="{not json")
    sqs.send_message(QueueUrl=queues["jobs_queue"], MessageBody=Job("no.such.kind", {}).encode())

    # WHEN a worker runs long enough to see each of them more than maxReceiveCount times
    await _run_until(
        _worker(queues),
        lambda: _queue_depth(sqs, queues["dead_letter_queue"]) == 2 and _queue_depth(sqs, queues["jobs_queue"]) == 0,
        "both messages to be dead-lettered",
    )

    # THEN neither was deleted as done: both sit in the dead-letter queue, untouched
    dead = _messages(sqs, queues["dead_letter_queue"]) + _messages(sqs, queues["dead_letter_queue"])
    assert "{not json" in dead
    assert any(json.loads(body).get("kind") == "no.such.kind" for body in dead if body.startswith('{"'))
    assert _messages(sqs, queues["jobs_queue"]) == []


async def test_retryable_failures_retry_then_fail_for_good(
    queues: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[str] = []
    failures: list[str] = []

    async def flaky(context: Any, payload: dict[str, Any]) -> None:
        attempts.append(payload["n"])
        raise JobRetry("the dependency is down")

    async def record_failure(context: Any, payload: dict[str, Any], reason: str) -> None:
        failures.append(reason)

    monkeypatch.setitem(worker_main.HANDLERS, "test.flaky", (flaky, record_failure))
    queues["sqs"].send_message(QueueUrl=queues["jobs_queue"], MessageBody=Job("test.flaky", {"n": "1"}).encode())

    # The message redrives after 2 receives, so allow the worker only 2 tries before it gives up itself.
    await _run_until(
        _worker(queues, worker_max_tries=2),
        lambda: bool(failures) and _queue_depth(queues["sqs"], queues["jobs_queue"]) == 0,
        "the job to fail for good and leave its queue",
    )

    assert attempts == ["1", "1"]
    assert len(failures) == 1 and "gave up after 2 attempts" in failures[0]
    assert _messages(queues["sqs"], queues["jobs_queue"]) == []
    assert _messages(queues["sqs"], queues["dead_letter_queue"]) == []  # failed for good, not poisoned


async def test_orphaned_images_are_removed_and_others_left_alone(
    docker_client: Any, queues: dict[str, Any], test_database: str
) -> None:
    import psycopg

    # GIVEN a user of this platform with one live image, and Docker copies of it and of a deleted one
    owner = str(uuid.uuid4())
    stranger = str(uuid.uuid4())  # an owner this platform does not know (another deployment's)
    with psycopg.connect(test_database) as conn:
        conn.execute(
            "INSERT INTO users (id, email, password_hash) VALUES (%s, %s, 'x')", (owner, f"{owner}@example.com")
        )
        conn.execute("INSERT INTO images (owner_id, name, tag, object_key) VALUES (%s, 'live', '1', 'k')", (owner,))
    base = docker_client.images.list()[0] if docker_client.images.list() else None
    if base is None:
        from tests.support.docker_images import build_test_image

        base = build_test_image(docker_client, "web", f"berth-test/web:{secrets.token_hex(3)}")
    live, deleted, foreign = f"berth/{owner}/live:1", f"berth/{owner}/gone:1", f"berth/{stranger}/app:1"
    for reference in (live, deleted, foreign):
        repository, tag = reference.rsplit(":", 1)
        base.tag(repository, tag)
    try:
        # WHEN the worker's housekeeping runs
        worker = _worker(queues)
        removed = await collect_orphan_images(worker.context)

        # THEN only the copy whose record is gone was removed
        assert removed == [deleted]
        tags = {tag for image in docker_client.images.list(name="berth/*/*") for tag in image.tags}
        assert live in tags and foreign in tags and deleted not in tags
    finally:
        for reference in (live, deleted, foreign):
            with contextlib.suppress(docker.errors.ImageNotFound):  # already gone is fine
                docker_client.images.remove(reference)


async def test_an_image_delete_job_acts_only_once_the_record_is_gone(
    queues: dict[str, Any], test_database: str
) -> None:
    """The images function sends the cleanup job just before the record's delete commits (a crash between
    the two then leaves nothing behind): a job whose record is still there, as when that delete never
    committed, removes nothing and gives up; once the record is gone, the archive goes."""
    import psycopg

    # GIVEN an image record and its archive in storage
    owner, image_id = str(uuid.uuid4()), str(uuid.uuid4())
    key = f"uploads/{owner}/{image_id}.tar"
    settings = WorkerSettings()
    s3 = aws_client("s3", settings)
    s3.put_object(Bucket=settings.images_bucket, Key=key, Body=b"archive")
    with psycopg.connect(test_database) as conn:
        conn.execute("INSERT INTO users (id, email, password_hash) VALUES (%s, %s, 'x')", (owner, f"{owner}@x.test"))
        conn.execute(
            "INSERT INTO images (id, owner_id, name, tag, object_key) VALUES (%s, %s, 'app', '1', %s)",
            (image_id, owner, key),
        )
    job = Job(JobKind.DELETE_IMAGE, {"image_id": image_id, "owner_id": owner, "object_key": key})
    sqs = queues["sqs"]
    try:
        # WHEN its delete job arrives while the record is still there (the delete did not commit)
        sqs.send_message(QueueUrl=queues["jobs_queue"], MessageBody=job.encode())
        worker = _worker(queues, worker_max_tries=2)
        await _run_until(
            worker,
            lambda: (
                (
                    worker.metrics.registry.get_sample_value(
                        "berth_worker_jobs_total", {"kind": JobKind.DELETE_IMAGE, "outcome": "failed"}
                    )
                    or 0
                )
                >= 1
            ),
            "the delete job to give up",
        )
        # THEN the archive is untouched
        assert s3.head_object(Bucket=settings.images_bucket, Key=key)["ContentLength"] == len(b"archive")

        # WHEN the record is gone and the job comes (again)
        with psycopg.connect(test_database) as conn:
            conn.execute("DELETE FROM images WHERE id = %s", (image_id,))
        sqs.send_message(QueueUrl=queues["jobs_queue"], MessageBody=job.encode())

        # THEN the archive is removed
        def archive_gone() -> bool:
            listed = s3.list_objects_v2(Bucket=settings.images_bucket, Prefix=key)
            return int(listed.get("KeyCount", 0)) == 0

        await _run_until(_worker(queues), archive_gone, "the archive to be removed")
    finally:
        with psycopg.connect(test_database) as conn:
            conn.execute("DELETE FROM users WHERE id = %s", (owner,))
        s3.delete_object(Bucket=settings.images_bucket, Key=key)


# ------------------------------------------------------------------------ the host queue and the shared one


@pytest.fixture
async def job_queues(local_aws: str) -> AsyncIterator[dict[str, Any]]:
    """A shared job queue and dead-letter queue of the test's own (the usual redrive); every queue named
    after them (the host queues workers create) is removed afterwards."""
    name = f"jobs-{secrets.token_hex(4)}"
    settings = LocalStackSettings(jobs_queue=name, jobs_dead_letter_queue=name + "-dlq")
    urls = ensure_aws_resources(settings, local_aws)
    sqs = aws_client("sqs", WorkerSettings())
    yield {"name": name, "dead_letter": name + "-dlq", "sqs": sqs, **urls}
    for url in sqs.list_queues(QueueNamePrefix=name).get("QueueUrls", []):
        sqs.delete_queue(QueueUrl=url)


def _host_worker(job_queues: dict[str, Any], host_id: str, **overrides: Any) -> Worker:
    settings = WorkerSettings(
        jobs_queue=job_queues["name"],
        jobs_dead_letter_queue=job_queues["dead_letter"],
        host_id=host_id,
        host_heartbeat_seconds=0.5,
        worker_wait_seconds=1,
        worker_visibility_seconds=10,
        cluster_id=f"test-{RUN_ID}",
        **overrides,
    )
    return build_worker(settings)


async def _eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60) -> None:
    await wait_until_async(check, timeout=timeout, interval=0.2, message=f"timed out waiting for {what}")


def _queue_is_empty(sqs: Any, url: str) -> bool:
    return _queue_depth(sqs, url) == 0


@pytest.fixture
async def test_host(database: Database) -> AsyncIterator[str]:
    """A host id of the test's own; its record (and, by cascade, its ports) is removed afterwards."""
    host_id = f"test-worker-{secrets.token_hex(5)}"
    yield host_id
    async with database.transaction() as conn:
        await conn.execute("DELETE FROM containers WHERE host_id = %s", (host_id,))
        await conn.execute("DELETE FROM hosts WHERE id = %s", (host_id,))


@pytest.fixture
async def database() -> Database:
    return get_database(os.environ["BERTH_DATABASE_URL"])


async def test_the_worker_takes_container_jobs_from_its_host_queue_and_image_jobs_from_the_shared_one(
    job_queues: dict[str, Any],
    test_host: str,
    database: Database,
    docker_client: Any,
    findings_archive: Path,
) -> None:
    from tests.support.docker_images import build_test_image

    sqs = job_queues["sqs"]
    store = HostStore(database)
    web = build_test_image(docker_client, "web", f"berth-test/web:{RUN_ID}-worker")
    tenant = await create_tenant(database, docker_client, web)
    worker = _host_worker(job_queues, test_host)
    settings = worker.settings
    findings_key = f"uploads/{tenant.owner_id}/findings.tar"
    task = asyncio.create_task(worker.run())
    try:
        # GIVEN a worker that started on a host of its own
        async def registered() -> bool:
            return await store.get(test_host) is not None

        await _eventually(registered, "the host to register")

        # THEN its host's queue exists, dead-lettering to the shared dead-letter queue
        host_queue_url = sqs.get_queue_url(QueueName=host_queue_name(settings, test_host))["QueueUrl"]
        attributes = sqs.get_queue_attributes(QueueUrl=host_queue_url, AttributeNames=["All"])["Attributes"]
        dead_letter_arn = sqs.get_queue_attributes(
            QueueUrl=job_queues["dead_letter_queue"], AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        assert json.loads(attributes["RedrivePolicy"]) == {
            "deadLetterTargetArn": dead_letter_arn,
            "maxReceiveCount": JOBS_MAX_RECEIVE_COUNT,
        }
        assert attributes["VisibilityTimeout"] == str(settings.worker_visibility_seconds)

        # WHEN a container on that host is to run (its job on the host's queue) and an uploaded image is
        # to be processed (its job on the shared queue)
        container_id = await place_container(database, store, tenant, test_host, status="pending")
        await get_host_job_queue(settings, test_host).send(Job("container.reconcile", {"container_id": container_id}))
        await asyncio.to_thread(
            aws_client("s3", settings).upload_file, str(findings_archive), settings.images_bucket, findings_key
        )
        async with database.transaction() as conn:
            cursor = await conn.execute(
                "INSERT INTO images (owner_id, name, tag, status, object_key) "
                "VALUES (%s, 'findings', '1', 'uploaded', %s) RETURNING id",
                (tenant.owner_id, findings_key),
            )
            image = await cursor.fetchone()
        assert image is not None
        await get_job_queue(settings).send(Job("image.process", {"image_id": str(image["id"])}))

        # THEN the worker does both: the container runs in Docker and the image is ready
        async def both_done() -> bool:
            async with database.transaction() as conn:
                cursor = await conn.execute(
                    "SELECT (SELECT status FROM containers WHERE id = %s) AS container, "
                    "(SELECT status FROM images WHERE id = %s) AS image",
                    (container_id, image["id"]),
                )
                row = await cursor.fetchone()
            assert row is not None and "failed" not in (row["container"], row["image"]), row
            return (row["container"], row["image"]) == ("running", "ready")

        await _eventually(both_done, "the container to run and the image to be ready")
        [running] = docker_client.containers.list(
            ignore_removed=True, filters={"label": f"{CONTAINER_ID_LABEL}={container_id}"}
        )
        assert running.status == "running"
        assert _queue_is_empty(sqs, host_queue_url)
        assert _queue_is_empty(sqs, job_queues["jobs_queue"])
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
        await remove_tenant(database, docker_client, tenant)
        with contextlib.suppress(docker.errors.APIError):
            docker_client.images.remove(f"berth/{tenant.owner_id}/findings:1")
        with contextlib.suppress(docker.errors.APIError):
            docker_client.images.remove(f"berth-test/web:{RUN_ID}-worker")
        aws_client("s3", settings).delete_object(Bucket=settings.images_bucket, Key=findings_key)


async def test_both_queues_share_the_concurrency_slots(
    job_queues: dict[str, Any], test_host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    running: list[str] = []
    most = 0
    done: list[str] = []

    async def counted(context: Any, payload: dict[str, Any]) -> None:
        nonlocal most
        running.append(payload["n"])
        most = max(most, len(running))
        await asyncio.sleep(0.4)
        running.remove(payload["n"])
        done.append(payload["n"])

    monkeypatch.setitem(worker_main.HANDLERS, "test.counted", (counted, None))
    worker = _host_worker(job_queues, test_host, worker_concurrency=2)
    task = asyncio.create_task(worker.run())
    try:
        # GIVEN jobs waiting on both queues, more than the worker may run at once
        await _eventually(lambda: _ready(worker), "the host queue to open")
        host_queue = get_host_job_queue(worker.settings, test_host)
        shared_queue = get_job_queue(worker.settings)
        for n in range(4):
            await host_queue.send(Job("test.counted", {"n": f"host-{n}"}))
            await shared_queue.send(Job("test.counted", {"n": f"shared-{n}"}))

        # WHEN the worker takes them, THEN all are done, never more than two at a time
        async def all_done() -> bool:
            return len(done) == 8

        await _eventually(all_done, "every job to be done")
        assert sorted(done) == sorted([f"host-{n}" for n in range(4)] + [f"shared-{n}" for n in range(4)])
        assert most <= 2
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)


async def test_a_stop_stops_polling_both_queues_and_lets_jobs_in_flight_finish(
    job_queues: dict[str, Any], test_host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = asyncio.Event()
    finished: list[str] = []

    async def slow(context: Any, payload: dict[str, Any]) -> None:
        started.set()
        await asyncio.sleep(1.5)
        finished.append(payload["n"])

    monkeypatch.setitem(worker_main.HANDLERS, "test.slow", (slow, None))
    worker = _host_worker(job_queues, test_host)
    task = asyncio.create_task(worker.run())
    # GIVEN a job running from the host's queue
    await _eventually(lambda: _ready(worker), "the host queue to open")
    host_queue = get_host_job_queue(worker.settings, test_host)
    await host_queue.send(Job("test.slow", {"n": "in-flight"}))
    await asyncio.wait_for(started.wait(), 30)

    # WHEN the worker is told to stop, and more jobs arrive on both queues meanwhile
    worker.stop()
    await host_queue.send(Job("test.slow", {"n": "late-host"}))
    await get_job_queue(worker.settings).send(Job("test.slow", {"n": "late-shared"}))
    await asyncio.wait_for(task, 30)

    # THEN the job in flight finished and was acknowledged; the late ones wait for another worker
    assert finished == ["in-flight"]
    sqs = job_queues["sqs"]
    host_url = sqs.get_queue_url(QueueName=host_queue_name(worker.settings, test_host))["QueueUrl"]
    assert [json.loads(body)["payload"]["n"] for body in _messages(sqs, host_url)] == ["late-host"]
    assert [json.loads(body)["payload"]["n"] for body in _messages(sqs, job_queues["jobs_queue"])] == ["late-shared"]


async def _ready(worker: Worker) -> bool:
    return worker.host_queue is not None
