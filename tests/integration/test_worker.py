"""The host worker against a real SQS (moto server), PostgreSQL and Docker: delivery, retries, the
dead-letter queue and the removal of orphaned images."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

import docker
import pytest

from shared.jobs import Job
from shared.local_stack import LocalStackSettings, ensure_aws_resources
from shared.storage import aws_client
from worker import main as worker_main
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


async def _run_for(worker: Worker, seconds: float) -> None:
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(seconds)
    worker.stop()
    await asyncio.wait_for(task, 15)


def _messages(sqs: Any, url: str) -> list[str]:
    answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    return [message["Body"] for message in answer.get("Messages", [])]


async def test_poisoned_messages_reach_the_dead_letter_queue(queues: dict[str, Any]) -> None:
    # GIVEN a message that is no job at all and a job of a kind no worker knows
    sqs = queues["sqs"]
    sqs.send_message(QueueUrl=queues["jobs_queue"], MessageBody="{not json")
    sqs.send_message(QueueUrl=queues["jobs_queue"], MessageBody=Job("no.such.kind", {}).encode())

    # WHEN a worker runs long enough to see each of them more than maxReceiveCount times
    await _run_for(_worker(queues), 6)

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
    await _run_for(_worker(queues, worker_max_tries=2), 5)

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
