"""The job queue port (functions -> host workers) with its SQS adapter.

Delivery is at least once: a worker deletes a message only when the job succeeded or failed for good;
anything else comes back after the visibility timeout, and after ``maxReceiveCount`` deliveries SQS moves
it to the dead-letter queue. Every job carries an id and its handler is idempotent. A job also carries the
request that sent it and that request's caller: the worker logs the job's lines under the request id and
keeps them in the caller's request trail (shared.request_trail); the sender logs a ``job sent`` line.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from shared.config import FunctionSettings
from shared.errors import DependencyError
from shared.observability import get_logger, log_event, request_id_var, user_id_var
from shared.storage import aws_client

# A job that fails this many deliveries moves to the dead-letter queue instead of looping forever.
JOBS_MAX_RECEIVE_COUNT = 5
logger = get_logger("jobs")


class JobKind(StrEnum):
    """The jobs the functions send and the host workers run (a job's ``kind`` on the wire)."""

    PROCESS_IMAGE = "image.process"
    DELETE_IMAGE = "image.delete"
    RECONCILE_CONTAINER = "container.reconcile"


def _current_request_id() -> str | None:
    request_id = request_id_var.get()
    return None if request_id == "-" else request_id


def _current_user_id() -> str | None:
    user_id = user_id_var.get()
    return None if user_id == "-" else user_id


@dataclass(frozen=True)
class Job:
    kind: str
    payload: dict[str, Any]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # The request that caused the job (the sender's current one): the worker logs the job's lines under it.
    request_id: str | None = field(default_factory=_current_request_id)
    # Who sent it (the acting user of that request): the job's lines go to their request trail.
    owner_id: str | None = field(default_factory=_current_user_id)

    def encode(self) -> str:
        body: dict[str, Any] = {"id": self.id, "kind": self.kind, "payload": self.payload}
        if self.request_id is not None:
            body["request_id"] = self.request_id
        if self.owner_id is not None:
            body["owner_id"] = self.owner_id
        return json.dumps(body)

    @classmethod
    def decode(cls, body: str) -> Job:
        """The job in a message body; ValueError when the body is not one."""
        data = json.loads(body)
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("kind"), str)
            or not isinstance(data.get("payload"), dict)
        ):
            raise ValueError("message is not a Berth job")
        request_id = data.get("request_id")
        owner_id = data.get("owner_id")
        return cls(
            kind=data["kind"],
            payload=data["payload"],
            id=str(data.get("id") or uuid.uuid4().hex),
            request_id=str(request_id)[:128] if isinstance(request_id, str) and request_id else None,
            owner_id=owner_id[:64] if isinstance(owner_id, str) and owner_id else None,
        )


def delete_image_job(image: Mapping[str, Any]) -> Job:
    """The job that removes a deleted image's archive and host copies, from its removed record."""
    return Job(
        JobKind.DELETE_IMAGE,
        {
            "image_id": str(image["id"]),
            "owner_id": str(image["owner_id"]),
            "object_key": image["object_key"],
            "reference": image["reference"],
            "docker_image_id": image["docker_image_id"],
        },
    )


@dataclass(frozen=True)
class ReceivedJob:
    job: Job | None  # None when the body could not be decoded (a poisoned message)
    receipt: str
    receive_count: int
    raw_body: str


class JobQueue(Protocol):
    async def send(self, job: Job) -> None:
        """Enqueue ``job``."""
        ...

    async def receive(self, max_jobs: int, wait_seconds: int, visibility_seconds: int) -> list[ReceivedJob]:
        """Long-poll for up to ``max_jobs`` jobs, each kept invisible to other receivers for ``visibility_seconds``."""
        ...

    async def delete(self, received: ReceivedJob) -> None:
        """Acknowledge ``received``: it will not be delivered again."""
        ...

    async def extend(self, received: ReceivedJob, seconds: int) -> None:
        """Keep ``received`` invisible to other workers for ``seconds`` more."""
        ...


class SqsJobQueue:
    def __init__(self, client: Any, queue_url: str) -> None:
        self._sqs = client
        self._url = queue_url

    async def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(getattr(self._sqs, method), QueueUrl=self._url, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise DependencyError("The job queue is unavailable; try again shortly.") from exc

    async def send(self, job: Job) -> None:
        await self._call("send_message", MessageBody=job.encode())
        log_event(logger, "job sent", job_id=job.id, kind=job.kind)

    async def receive(self, max_jobs: int, wait_seconds: int, visibility_seconds: int) -> list[ReceivedJob]:
        answer = await self._call(
            "receive_message",
            MaxNumberOfMessages=max(1, min(max_jobs, 10)),
            WaitTimeSeconds=wait_seconds,
            VisibilityTimeout=visibility_seconds,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        received = []
        for message in answer.get("Messages", []):
            body = message.get("Body", "")
            try:
                job: Job | None = Job.decode(body)
            except ValueError:
                job = None
            count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
            received.append(ReceivedJob(job, message["ReceiptHandle"], count, body))
        return received

    async def delete(self, received: ReceivedJob) -> None:
        await self._call("delete_message", ReceiptHandle=received.receipt)

    async def extend(self, received: ReceivedJob, seconds: int) -> None:
        await self._call("change_message_visibility", ReceiptHandle=received.receipt, VisibilityTimeout=seconds)


@lru_cache
def _queue_url(endpoint: str | None, region: str, name: str, settings: FunctionSettings) -> str:
    answer = aws_client("sqs", settings).get_queue_url(QueueName=name)
    return str(answer["QueueUrl"])


def get_job_queue(settings: FunctionSettings, name: str | None = None) -> SqsJobQueue:
    queue = name or settings.jobs_queue
    try:
        url = _queue_url(settings.aws_endpoint, settings.aws_region, queue, settings)
    except (ClientError, BotoCoreError) as exc:
        raise DependencyError(f"The job queue '{queue}' is unavailable; try again shortly.") from exc
    return SqsJobQueue(aws_client("sqs", settings), url)


# ------------------------------------------------------------------------------------------ host queues
# Container jobs go to a queue of their host's own (``<jobs_queue>-host-<host id>``): only that host's
# worker can do them, so nobody else should ever receive them. The worker creates its queue (dead letters
# to the shared dead-letter queue) before it registers its host, so a host the scheduler can see has one.

_QUEUE_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_SQS_NAME_MAX = 80


def host_queue_name(settings: FunctionSettings, host_id: str) -> str:
    """The SQS name of a host's job queue (letters, digits, - and _; at most 80 characters)."""
    safe = _QUEUE_NAME_UNSAFE.sub("-", host_id)
    name = f"{settings.jobs_queue}-host-{safe}"
    if len(name) > _SQS_NAME_MAX or safe != host_id:
        # Distinct host ids must never share a queue: a rewritten or long id gets a digest of the original.
        digest = hashlib.sha256(host_id.encode()).hexdigest()[:12]
        name = f"{settings.jobs_queue}-host-{safe[: _SQS_NAME_MAX - len(settings.jobs_queue) - 20]}-{digest}"
    return name


def get_host_job_queue(settings: FunctionSettings, host_id: str) -> SqsJobQueue:
    """The job queue of one host (it must exist: its worker creates it when it registers)."""
    return get_job_queue(settings, host_queue_name(settings, host_id))


def ensure_host_queue(
    settings: FunctionSettings,
    host_id: str,
    max_receive_count: int = JOBS_MAX_RECEIVE_COUNT,
    visibility_timeout_seconds: int | None = None,
) -> str:
    """Create the host's job queue if missing, dead-lettering to the shared dead-letter queue; its URL.

    An existing queue is brought in line with the same attributes, so a changed setting takes effect at
    the worker's next start."""
    sqs = aws_client("sqs", settings)
    try:
        dead_letter_url = sqs.get_queue_url(QueueName=settings.jobs_dead_letter_queue)["QueueUrl"]
        dead_letter_arn = sqs.get_queue_attributes(QueueUrl=dead_letter_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        attributes = {
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": max_receive_count}),
            "SqsManagedSseEnabled": "true",
        }
        if visibility_timeout_seconds is not None:
            attributes["VisibilityTimeout"] = str(visibility_timeout_seconds)
        name = host_queue_name(settings, host_id)
        try:
            url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") not in ("QueueAlreadyExists", "QueueNameExists"):
                raise
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
            sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    except (ClientError, BotoCoreError) as exc:
        raise DependencyError(f"The job queue of host {host_id!r} cannot be created: {exc}") from exc
    return str(url)


def open_host_job_queue(settings: FunctionSettings, host_id: str, visibility_timeout_seconds: int) -> SqsJobQueue:
    """Create (or update) the host's job queue and return it; blocking, so a worker runs it in a thread."""
    url = ensure_host_queue(settings, host_id, JOBS_MAX_RECEIVE_COUNT, visibility_timeout_seconds)
    return SqsJobQueue(aws_client("sqs", settings), url)


class HostJobQueues(Protocol):
    async def send(self, host_id: str, job: Job) -> None:
        """Enqueue ``job`` on the queue of host ``host_id``."""
        ...


class SqsHostJobQueues:
    """Sends to each host's own SQS queue; queue URLs are looked up once per process."""

    def __init__(self, settings: FunctionSettings) -> None:
        self._settings = settings

    async def send(self, host_id: str, job: Job) -> None:
        # The first lookup of a host's queue is a blocking SQS call: keep it off the event loop.
        queue = await asyncio.to_thread(get_host_job_queue, self._settings, host_id)
        await queue.send(job)
